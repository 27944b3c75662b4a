"""Tests of moco_ref.augment: the pipelines, and each op against a reference computed another way.

References: torch.nn.functional.interpolate / conv2d (resample, blur), colorsys (HSV), PIL
(grey level, ImageEnhance, GaussianBlur), and plain float64 formulas written out per sample.
Every op test runs on every backend that is available here (CuPy only where a GPU is).
"""

from __future__ import annotations

import colorsys
import itertools
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageEnhance, ImageFilter

from backends import available_backends, get_backend, to_numpy
from moco_ref.augment import (
    CIFAR_MEAN,
    CIFAR_STD,
    PIPELINES,
    denormalize,
    make_pipeline,
    normalize,
)
from moco_ref.augment.blur import (
    gaussian_blur,
    gaussian_kernel_radius,
    gaussian_kernels,
    random_gaussian_blur,
)
from moco_ref.augment.color import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    grayscale,
    hsv_to_rgb,
    luma,
    random_grayscale,
    rgb_to_hsv,
)
from moco_ref.augment.geometry import horizontal_flip, resize, resized_crop
from moco_ref.augment.params import (
    ColorJitterParams,
    CropBoxes,
    central_fallback_box,
    sample_color_jitter,
    sample_resized_crop_boxes,
)

BACKENDS = available_backends()
RANDOM_PIPELINES = ("v1", "v2", "cifar")


def uint8_images(n=8, side=32, seed=0):
    """(N, side, side, 3) uint8 host images."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, side, side, 3), dtype=np.uint8)


def float_batch(backend, n=4, side=16, seed=0):
    """(N, 3, side, side) float32 in [0, 1] on ``backend``, and the same on the host."""
    host = np.random.default_rng(seed).random((n, 3, side, side), dtype=np.float32)
    return get_backend(backend).to_device(host), host


def boxes(top, left, height, width):
    return CropBoxes(*(np.asarray(v, dtype=np.int64) for v in (top, left, height, width)))


# ---------------------------------------------------------------------------------------------
# Pipelines
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", PIPELINES)
@pytest.mark.parametrize("side", [32, 40])
def test_pipeline_output_shape_dtype_and_backend(name, backend, side):
    images = uint8_images(side=side)
    before = images.copy()
    views = make_pipeline(name, 32)(images, np.random.default_rng(0), backend)
    xp = get_backend(backend).xp
    assert isinstance(views, xp.ndarray), f"views are a {type(views)}, not on {backend}"
    assert views.shape == (8, 3, 32, 32)
    assert views.dtype == np.float32
    assert bool(xp.isfinite(views).all())
    np.testing.assert_array_equal(images, before, err_msg="the pipeline changed its input")


@pytest.mark.parametrize("name", PIPELINES)
def test_same_seed_gives_the_same_views(name):
    pipe = make_pipeline(name, 32)
    first = pipe(uint8_images(), np.random.default_rng(123), "numpy")
    second = pipe(uint8_images(), np.random.default_rng(123), "numpy")
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("name", RANDOM_PIPELINES)
def test_two_calls_with_one_rng_give_two_different_views(name):
    pipe, rng, images = make_pipeline(name, 32), np.random.default_rng(5), uint8_images()
    view_1, view_2 = pipe(images, rng, "numpy"), pipe(images, rng, "numpy")
    differing = np.abs(view_1 - view_2).reshape(8, -1).max(axis=1) > 1e-3
    assert differing.all(), f"samples {np.flatnonzero(~differing)} got the same view twice"


def test_test_pipeline_is_normalize_only_at_the_same_size():
    images = uint8_images()
    views = make_pipeline("test", 32)(images, np.random.default_rng(0), "numpy")
    expected = (images.astype(np.float64) / 255.0 - np.array(CIFAR_MEAN)) / np.array(CIFAR_STD)
    np.testing.assert_allclose(views, expected.transpose(0, 3, 1, 2), atol=1e-5)


def test_pipeline_uses_the_given_mean_and_std():
    images = uint8_images()
    views = make_pipeline("test", 32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))(images, np.random.default_rng(0))
    np.testing.assert_allclose(views, (images.transpose(0, 3, 1, 2) / 255.0 - 0.5) / 0.5, atol=1e-5)


@pytest.mark.skipif("cupy" not in BACKENDS, reason="needs CuPy and a GPU")
@pytest.mark.parametrize("name", PIPELINES)
def test_numpy_and_cupy_give_the_same_views_for_one_seed(name):
    pipe = make_pipeline(name, 32)
    on_numpy = pipe(uint8_images(), np.random.default_rng(9), "numpy")
    on_cupy = to_numpy(pipe(uint8_images(), np.random.default_rng(9), "cupy"))
    np.testing.assert_allclose(on_cupy, on_numpy, atol=1e-4)


def test_pipeline_rejects_bad_arguments():
    pipe = make_pipeline("cifar", 32)
    with pytest.raises(ValueError, match="uint8"):
        pipe(uint8_images().astype(np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        pipe(uint8_images()[..., :1], np.random.default_rng(0))
    with pytest.raises(TypeError, match="Generator"):
        pipe(uint8_images(), 0)
    with pytest.raises(ValueError, match="unknown augmentation pipeline"):
        make_pipeline("v3", 32)


# ---------------------------------------------------------------------------------------------
# Random resized crop
# ---------------------------------------------------------------------------------------------


def oracle_torch():
    """PyTorch, the oracle of the resampling and blur tests; those tests skip where it is not installed."""
    return pytest.importorskip("torch")


def torch_resized_crop(image_chw, top, left, height, width, size, antialias=False):
    """One sample, through torch's own bilinear interpolation (half-pixel centres)."""
    torch = oracle_torch()
    box = torch.from_numpy(np.ascontiguousarray(image_chw[:, top : top + height, left : left + width]))
    out = torch.nn.functional.interpolate(
        box[None], size=(size, size), mode="bilinear", align_corners=False, antialias=antialias
    )
    return out[0].numpy()


@pytest.mark.parametrize("backend", BACKENDS)
def test_resized_crop_matches_torch_bilinear_for_every_sample(backend):
    images, host = float_batch(backend, n=5, side=24)
    crop = boxes(top=[0, 3, 10, 0, 5], left=[0, 7, 1, 0, 2], height=[24, 5, 14, 1, 19], width=[24, 9, 11, 1, 12])
    out = to_numpy(resized_crop(images, crop, 16))  # (5, 3, 16, 16): boxes larger and smaller than 16
    assert out.dtype == np.float32
    for n in range(5):
        expected = torch_resized_crop(host[n], crop.top[n], crop.left[n], crop.height[n], crop.width[n], 16)
        np.testing.assert_allclose(out[n], expected, atol=2e-6, err_msg=f"sample {n}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_resized_crop_equals_torch_antialias_when_the_box_is_not_larger_than_the_output(backend):
    images, host = float_batch(backend, n=8, side=32, seed=3)
    crop = sample_resized_crop_boxes(np.random.default_rng(1), 8, 32, 32, scale=(0.08, 1.0))
    out = to_numpy(resized_crop(images, crop, 32))
    for n in range(8):
        expected = torch_resized_crop(
            host[n], crop.top[n], crop.left[n], crop.height[n], crop.width[n], 32, antialias=True
        )
        np.testing.assert_allclose(out[n], expected, atol=2e-6, err_msg=f"sample {n}, box {crop}")


def test_resize_is_identity_at_the_same_size_and_bilinear_otherwise():
    images, host = float_batch("numpy", n=2, side=20)
    assert resize(images, 20) is images
    np.testing.assert_allclose(resize(images, 12)[1], torch_resized_crop(host[1], 0, 0, 20, 20, 12), atol=2e-6)


def loop_crop_box(rng: random.Random, height, width, scale, ratio):
    """torchvision's RandomResizedCrop.get_params written as the plain loop, one sample."""
    area = height * width
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    return central_fallback_box(height, width, ratio)


@pytest.mark.parametrize("scale", [(0.08, 1.0), (0.2, 1.0)])
def test_crop_sampler_has_the_distribution_of_the_loop_algorithm(scale):
    n, side, ratio = 20000, 32, (3 / 4, 4 / 3)
    ours = sample_resized_crop_boxes(np.random.default_rng(0), n, side, side, scale, ratio)
    loop_rng = random.Random(0)
    reference = np.array([loop_crop_box(loop_rng, side, side, scale, ratio) for _ in range(n)])  # (n, 4)
    # Box widths take the values 1..32: the two histograms must be close in total variation.
    ours_hist = np.bincount(ours.width, minlength=side + 1) / n
    reference_hist = np.bincount(reference[:, 3], minlength=side + 1) / n
    total_variation = 0.5 * np.abs(ours_hist - reference_hist).sum()
    assert total_variation < 0.03, f"width histograms differ by {total_variation:.3f} in total variation"
    for name, a, b in [
        ("area fraction", ours.height * ours.width / side**2, reference[:, 2] * reference[:, 3] / side**2),
        ("log aspect", np.log(ours.width / ours.height), np.log(reference[:, 3] / reference[:, 2])),
        ("top", ours.top, reference[:, 0]),
    ]:
        standard_error = math.sqrt((a.var() + b.var()) / n)
        assert abs(a.mean() - b.mean()) < 5 * standard_error, f"{name}: mean {a.mean():.4f} vs {b.mean():.4f}"


@settings(max_examples=150, deadline=None)
@given(
    height=st.integers(1, 300),
    width=st.integers(1, 300),
    scale_low=st.floats(0.01, 1.0),
    scale_width=st.floats(0.0, 1.0),
    ratio_low=st.floats(0.2, 1.0),
    ratio_high=st.floats(1.0, 5.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_crop_boxes_lie_in_the_image_and_within_scale_and_ratio_or_are_the_fallback(
    height, width, scale_low, scale_width, ratio_low, ratio_high, seed
):
    scale = (scale_low, min(1.0, scale_low + scale_width))
    ratio = (ratio_low, ratio_high)
    crop = sample_resized_crop_boxes(np.random.default_rng(seed), 64, height, width, scale, ratio)
    assert (crop.height >= 1).all() and (crop.width >= 1).all()
    assert (crop.top >= 0).all() and (crop.top + crop.height <= height).all()
    assert (crop.left >= 0).all() and (crop.left + crop.width <= width).all()
    # w = round(sqrt(A·s·r)), h = round(sqrt(A·s/r)): each within 0.5 of a product equal to A·s.
    area = height * width
    h, w = crop.height.astype(float), crop.width.astype(float)
    in_bounds = (
        ((w - 0.5) * (h - 0.5) <= area * scale[1] * (1 + 1e-9))
        & ((w + 0.5) * (h + 0.5) >= area * scale[0] * (1 - 1e-9))
        & ((w - 0.5) / (h + 0.5) <= ratio[1] * (1 + 1e-9))
        & ((w + 0.5) / (h - 0.5 + 1e-12) >= ratio[0] * (1 - 1e-9))
    )
    fallback = np.array(central_fallback_box(height, width, ratio))
    is_fallback = (np.stack([crop.top, crop.left, crop.height, crop.width], axis=1) == fallback).all(axis=1)
    bad = np.flatnonzero(~(in_bounds | is_fallback))
    if bad.size:
        k = bad[0]
        box = (crop.top[k], crop.left[k], crop.height[k], crop.width[k])
        pytest.fail(f"box {k} (top, left, h, w) = {box} breaks scale {scale} or ratio {ratio}")


def test_crop_falls_back_to_the_whole_square_image_when_nothing_fits():
    crop = sample_resized_crop_boxes(np.random.default_rng(0), 16, 10, 10, scale=(2.0, 3.0))  # every try too big
    for field, value in zip(("top", "left", "height", "width"), (0, 0, 10, 10)):
        assert (getattr(crop, field) == value).all(), field


# ---------------------------------------------------------------------------------------------
# Flip, grayscale
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_horizontal_flip_mirrors_exactly_the_masked_samples(backend):
    images, host = float_batch(backend, n=4)
    flip = np.array([True, False, True, False])
    out = to_numpy(horizontal_flip(images, flip))
    for n in range(4):
        np.testing.assert_array_equal(out[n], host[n][:, :, ::-1] if flip[n] else host[n], err_msg=f"sample {n}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_grayscale_is_the_601_luma_in_three_equal_channels(backend):
    images, host = float_batch(backend)
    out = to_numpy(grayscale(images))
    expected = 0.299 * host[:, 0].astype(np.float64) + 0.587 * host[:, 1] + 0.114 * host[:, 2]
    assert out.dtype == np.float32 and out.shape == host.shape
    for c in range(3):
        np.testing.assert_allclose(out[:, c], expected, atol=1e-6)


def test_luma_matches_pil_convert_l():
    images = uint8_images(n=2, side=16)
    ours = luma(images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)[:, 0] * 255.0  # (N, H, W)
    pil = np.stack([np.asarray(Image.fromarray(image).convert("L")) for image in images])
    np.testing.assert_allclose(ours, pil, atol=0.51)  # PIL rounds to the nearest integer level


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_grayscale_touches_only_masked_samples(backend):
    images, host = float_batch(backend, n=3)
    out = to_numpy(random_grayscale(images, np.array([False, True, False])))
    np.testing.assert_array_equal(out[[0, 2]], host[[0, 2]])
    np.testing.assert_allclose(out[1], to_numpy(grayscale(images))[1])


# ---------------------------------------------------------------------------------------------
# Brightness, contrast, saturation, hue
# ---------------------------------------------------------------------------------------------


def reference_luma(image):
    """(3, H, W) float64 -> (H, W)."""
    return 0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]


FACTORS = np.array([0.0, 0.6, 1.0, 1.4])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "op, reference",
    [
        (adjust_brightness, lambda x, f: f * x),
        (adjust_contrast, lambda x, f: f * x + (1 - f) * reference_luma(x).mean()),
        (adjust_saturation, lambda x, f: f * x + (1 - f) * reference_luma(x)[None]),
    ],
    ids=["brightness", "contrast", "saturation"],
)
def test_blend_ops_match_the_formula_for_each_sample(backend, op, reference):
    images, host = float_batch(backend, n=4)
    out = to_numpy(op(images, FACTORS))
    assert out.dtype == np.float32
    for n, factor in enumerate(FACTORS):
        expected = np.clip(reference(host[n].astype(np.float64), factor), 0.0, 1.0)
        np.testing.assert_allclose(out[n], expected, atol=2e-6, err_msg=f"sample {n}, factor {factor}")


@pytest.mark.parametrize(
    "op, enhancer, tolerance",
    [
        (adjust_brightness, ImageEnhance.Brightness, 1.01),
        (adjust_contrast, ImageEnhance.Contrast, 2.01),
        (adjust_saturation, ImageEnhance.Color, 2.01),
    ],
    ids=["brightness", "contrast", "saturation"],
)
def test_blend_ops_agree_with_pil_image_enhance_up_to_uint8_rounding(op, enhancer, tolerance):
    images = uint8_images(n=4, side=16, seed=4)
    out = op(images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0, FACTORS) * 255.0
    for n, factor in enumerate(FACTORS):
        pil = np.asarray(enhancer(Image.fromarray(images[n])).enhance(factor)).transpose(2, 0, 1)
        np.testing.assert_allclose(out[n], pil, atol=tolerance, err_msg=f"sample {n}, factor {factor}")


def special_pixels():
    """(1, 3, 4, 4) pixels with ties, greys, black, white, primaries and random colours."""
    fixed = [
        (0, 0, 0),
        (1, 1, 1),
        (0.5, 0.5, 0.5),
        (1, 0, 0),
        (0, 1, 0),
        (0, 0, 1),
        (1, 1, 0),
        (0, 1, 1),
        (1, 0, 1),
        (0.8, 0.8, 0.2),
        (0.2, 0.8, 0.8),
        (0.8, 0.2, 0.8),
    ]
    rest = np.random.default_rng(2).random((4, 3)).tolist()
    return np.array(fixed + rest, dtype=np.float32).T.reshape(1, 3, 4, 4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rgb_to_hsv_matches_colorsys_and_round_trips(backend):
    host = np.concatenate([special_pixels(), np.random.default_rng(1).random((2, 3, 4, 4), dtype=np.float32)])
    images = get_backend(backend).to_device(host)
    hsv = to_numpy(rgb_to_hsv(images))
    for n, i, j in np.ndindex(host.shape[0], 4, 4):
        expected = colorsys.rgb_to_hsv(*host[n, :, i, j].astype(float))
        np.testing.assert_allclose(hsv[n, :, i, j], expected, atol=1e-6, err_msg=f"pixel {host[n, :, i, j]}")
    np.testing.assert_allclose(to_numpy(hsv_to_rgb(rgb_to_hsv(images))), host, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_adjust_hue_matches_a_per_pixel_colorsys_shift(backend):
    host = np.concatenate([special_pixels()] * 5)  # (5, 3, 4, 4)
    shifts = np.array([-0.5, -0.1, 0.0, 0.25, 0.5])
    out = to_numpy(adjust_hue(get_backend(backend).to_device(host), shifts))
    assert out.dtype == np.float32
    for n, i, j in np.ndindex(5, 4, 4):
        hue, saturation, value = colorsys.rgb_to_hsv(*host[n, :, i, j].astype(float))
        expected = colorsys.hsv_to_rgb((hue + shifts[n]) % 1.0, saturation, value)
        np.testing.assert_allclose(out[n, :, i, j], expected, atol=2e-6, err_msg=f"sample {n}, pixel {i},{j}")


# ---------------------------------------------------------------------------------------------
# Colour jitter: parameters and the per-sample random order
# ---------------------------------------------------------------------------------------------


def test_jitter_factors_and_orders_are_drawn_as_torchvision_does():
    params = sample_color_jitter(np.random.default_rng(0), 4000, 0.4, 0.3, 0.2, 0.1, p=0.8)
    low, high = np.array([0.6, 0.7, 0.8, -0.1]), np.array([1.4, 1.3, 1.2, 0.1])
    assert ((params.factors >= low) & (params.factors <= high)).all()
    np.testing.assert_allclose(params.factors.mean(axis=0), (low + high) / 2, atol=0.01)
    assert (np.sort(params.order, axis=1) == np.arange(4)).all(), "a row of order is not a permutation of 0..3"
    distinct_orders = {tuple(row) for row in params.order}
    assert len(distinct_orders) == 24, f"only {len(distinct_orders)} of the 24 orders were drawn"
    assert abs(params.applied.mean() - 0.8) < 0.03
    assert sample_color_jitter(np.random.default_rng(0), 4, 0.4, 0.4, 0.4, 0.0).enabled.tolist() == [
        True,
        True,
        True,
        False,
    ]


def sequential_jitter(image, factors, order):
    """One sample (1, 3, H, W): the four ops one after the other in the sample's own order."""
    ops = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
    for op in order:
        image = ops[op](image, factors[op : op + 1])
    return image


@pytest.mark.parametrize("backend", BACKENDS)
def test_color_jitter_applies_each_samples_own_order(backend):
    order = np.array(list(itertools.permutations(range(4))))  # (24, 4): all orders, one per sample
    n = len(order)
    single, _ = float_batch("numpy", n=1, seed=6)
    host = np.repeat(single, n, axis=0)  # the same image n times
    factors = np.tile([1.3, 0.6, 1.4, 0.2], (n, 1))  # the same factors for every sample
    params = ColorJitterParams(factors=factors, order=order, applied=np.ones(n, bool), enabled=np.ones(4, bool))
    out = to_numpy(color_jitter(get_backend(backend).to_device(host), params))
    for k in range(n):
        expected = sequential_jitter(single, factors[k], order[k])[0]
        np.testing.assert_allclose(out[k], expected, atol=1e-6, err_msg=f"sample {k}, order {order[k]}")
    # The order matters for these factors, so samples that share image and factors still differ.
    distinct = {np.round(out[k], 4).tobytes() for k in range(n)}
    assert len(distinct) > n // 2, f"only {len(distinct)} different results from {n} different orders"


@pytest.mark.parametrize("backend", BACKENDS)
def test_color_jitter_leaves_unapplied_samples_and_disabled_ops_alone(backend):
    images, host = float_batch(backend, n=3)
    factors = np.tile([1.3, 0.6, 1.4, 0.2], (3, 1))
    order = np.tile(np.arange(4), (3, 1))
    applied = np.array([True, False, True])
    params = ColorJitterParams(factors=factors, order=order, applied=applied, enabled=np.array([1, 1, 1, 0], bool))
    out = to_numpy(color_jitter(images, params))
    np.testing.assert_array_equal(out[1], host[1])
    no_hue = adjust_saturation(adjust_contrast(adjust_brightness(host[:1], [1.3]), [0.6]), [1.4])
    np.testing.assert_allclose(out[0], no_hue[0], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Gaussian blur
# ---------------------------------------------------------------------------------------------


def test_gaussian_kernels_are_normalised_symmetric_gaussians():
    sigma = np.array([0.1, 0.5, 1.0, 2.0])
    radius = gaussian_kernel_radius(sigma.max(), 32)
    assert radius == 6
    kernels = gaussian_kernels(sigma, radius)
    assert kernels.shape == (4, 13) and kernels.dtype == np.float32
    np.testing.assert_allclose(kernels.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(kernels, kernels[:, ::-1])
    offsets = np.arange(-6, 7)
    expected = np.exp(-(offsets**2) / (2 * sigma[:, None] ** 2))
    np.testing.assert_allclose(kernels, expected / expected.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-8)
    assert gaussian_kernel_radius(2.0, 4) == 3, "the radius must not exceed side - 1"


@pytest.mark.parametrize("backend", BACKENDS)
def test_blur_preserves_a_constant_image(backend):
    images = get_backend(backend).to_device(np.full((3, 3, 8, 8), 0.37, dtype=np.float32))
    out = to_numpy(gaussian_blur(images, gaussian_kernels(np.array([0.3, 1.0, 2.0]), 6)))
    np.testing.assert_allclose(out, 0.37, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_blur_matches_a_torch_conv2d_with_reflect_padding_per_sample(backend):
    images, host = float_batch(backend, n=3, side=12)
    sigma = np.array([0.3, 1.1, 2.0])
    radius = gaussian_kernel_radius(sigma.max(), 12)
    out = to_numpy(gaussian_blur(images, gaussian_kernels(sigma, radius)))
    assert out.dtype == np.float32
    offsets = np.arange(-radius, radius + 1)
    torch = oracle_torch()
    for n in range(3):
        g = np.exp(-(offsets**2) / (2 * sigma[n] ** 2))
        g /= g.sum()
        kernel = torch.from_numpy(np.outer(g, g)).expand(3, 1, -1, -1)  # (3, 1, K, K), one per channel
        sample = torch.from_numpy(host[n : n + 1].astype(np.float64))  # (1, 3, H, W)
        padded = torch.nn.functional.pad(sample, [radius] * 4, mode="reflect")
        expected = torch.nn.functional.conv2d(padded, kernel, groups=3)[0].numpy()
        np.testing.assert_allclose(out[n], expected, atol=2e-6, err_msg=f"sample {n}, sigma {sigma[n]}")


def test_blur_is_close_to_pil_gaussian_blur_away_from_the_edges():
    images = uint8_images(n=3, side=48, seed=8)
    sigma = np.array([0.5, 1.0, 2.0])
    planar = images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    ours = gaussian_blur(planar, gaussian_kernels(sigma, 8)) * 255.0
    for n in range(3):
        pil = np.asarray(Image.fromarray(images[n]).filter(ImageFilter.GaussianBlur(radius=float(sigma[n]))))
        error = np.abs(ours[n].transpose(1, 2, 0) - pil)[8:-8, 8:-8]  # PIL repeats edge pixels: skip the border
        assert error.max() < 5.0 and error.mean() < 1.5, f"σ {sigma[n]}: max {error.max()}, mean {error.mean()}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_blur_changes_only_the_chosen_samples(backend):
    images, host = float_batch(backend, n=4, side=5)  # a small image: the radius is capped at 4
    applied = np.array([True, False, False, True])
    out = to_numpy(random_gaussian_blur(images, np.array([2.0, 2.0, 0.5, 0.5]), applied))
    np.testing.assert_array_equal(out[[1, 2]], host[[1, 2]])
    assert np.abs(out[[0, 3]] - host[[0, 3]]).max() > 0.01
    np.testing.assert_array_equal(to_numpy(random_gaussian_blur(images, np.ones(4), np.zeros(4, bool))), host)


# ---------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_normalize_is_the_channel_formula_and_denormalize_inverts_it(backend):
    images, host = float_batch(backend)
    normalised = normalize(images)
    assert to_numpy(normalised).dtype == np.float32
    expected = (host - np.array(CIFAR_MEAN)[:, None, None]) / np.array(CIFAR_STD)[:, None, None]
    np.testing.assert_allclose(to_numpy(normalised), expected, atol=1e-5)
    np.testing.assert_allclose(to_numpy(denormalize(normalised)), host, atol=1e-6)
    channel_last = np.ascontiguousarray(host.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(normalize(channel_last, channel_axis=-1), expected.transpose(0, 2, 3, 1), atol=1e-5)
