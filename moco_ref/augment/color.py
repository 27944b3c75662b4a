"""Colour augmentations with torchvision's tensor semantics, batched with per-sample factors.

Notation: N images of H×W pixels, RGB planes on axis 1 (NCHW), values in [0, 1], float32.

    luma(x)              = 0.299·R + 0.587·G + 0.114·B          (ITU-R 601-2, as PIL's convert("L"))
    blend(a, b, f)       = clamp(f·a + (1 − f)·b, 0, 1)
    brightness(x, f)     = blend(x, 0, f)                       = clamp(f·x, 0, 1)
    contrast(x, f)       = blend(x, mean over H, W of luma(x), f)
    saturation(x, f)     = blend(x, luma(x), f)
    hue(x, δ)            = hsv_to_rgb((H + δ) mod 1, S, V)      with (H, S, V) = rgb_to_hsv(x)

Difference from torchvision: its tensor ``rgb_to_grayscale`` uses 0.2989 for red; we use 0.299 (PIL's
value, and what the official MoCo code computed, since it jitters PIL images); these weights sum to 1,
so a grey pixel keeps its level.  The official code works on uint8 PIL images, rounding after every op, and PIL's
contrast blends with the mean luma rounded to an integer; here everything stays float32.
"""

from __future__ import annotations

import numpy as np

from backends import get_array_module
from moco_ref.augment.params import ColorJitterParams

LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def _per_sample(factor, like):
    """(N,) factors (host or device) -> (N, 1, 1, 1) on the backend and of the dtype of ``like``."""
    xp = get_array_module(like)
    return xp.asarray(factor).astype(like.dtype).reshape(-1, 1, 1, 1)


def _blend(image, other, factor):
    """clamp(f·image + (1 − f)·other, 0, 1) with f of shape (N, 1, 1, 1)."""
    xp = get_array_module(image)
    return xp.clip(factor * image + (1.0 - factor) * other, 0.0, 1.0)


def luma(images):
    """(N, 3, H, W) -> (N, 1, H, W) grey level 0.299·R + 0.587·G + 0.114·B."""
    red, green, blue = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    return LUMA_WEIGHTS[0] * red + LUMA_WEIGHTS[1] * green + LUMA_WEIGHTS[2] * blue


def grayscale(images):
    """(N, 3, H, W) -> (N, 3, H, W): the luma replicated to the three channels."""
    xp = get_array_module(images)
    return xp.repeat(luma(images), 3, axis=1)


def random_grayscale(images, mask: np.ndarray):
    """Turns the samples where ``mask`` (N,) is True to grey (RandomGrayscale with 3 output channels)."""
    xp = get_array_module(images)
    mask = xp.asarray(mask)[:, None, None, None]  # (N, 1, 1, 1)
    return xp.where(mask, grayscale(images), images)


def adjust_brightness(images, factor):
    """clamp(f·x, 0, 1) per sample; ``factor`` (N,) >= 0."""
    xp = get_array_module(images)
    return xp.clip(_per_sample(factor, images) * images, 0.0, 1.0)


def adjust_contrast(images, factor):
    """Blends each sample with the mean of its own grey image; ``factor`` (N,) >= 0."""
    mean = luma(images).mean(axis=(1, 2, 3), keepdims=True)  # (N, 1, 1, 1)
    return _blend(images, mean, _per_sample(factor, images))


def adjust_saturation(images, factor):
    """Blends each sample with its grey image; ``factor`` (N,) >= 0 (0 gives grey, 1 the input)."""
    return _blend(images, luma(images), _per_sample(factor, images))


def rgb_to_hsv(images):
    """(N, 3, H, W) RGB in [0, 1] -> (N, 3, H, W) HSV, each in [0, 1] (hue as a fraction of a turn).

    V = max, S = (max − min)/max (0 when max = 0), hue from the sector of the largest channel
    (red, then green, then blue on ties), 0 for grey pixels — the same convention as torchvision
    and ``colorsys``.
    """
    xp = get_array_module(images)
    red, green, blue = images[:, 0], images[:, 1], images[:, 2]  # (N, H, W) each
    value = xp.maximum(xp.maximum(red, green), blue)
    chroma = value - xp.minimum(xp.minimum(red, green), blue)
    saturation = chroma / xp.where(value > 0, value, 1.0)
    safe_chroma = xp.where(chroma > 0, chroma, 1.0)
    hue_sixths = xp.where(
        value == red,
        (green - blue) / safe_chroma,
        xp.where(value == green, 2.0 + (blue - red) / safe_chroma, 4.0 + (red - green) / safe_chroma),
    )
    hue = xp.where(chroma > 0, (hue_sixths / 6.0) % 1.0, 0.0)
    return xp.stack([hue, saturation, value], axis=1).astype(images.dtype)


def hsv_to_rgb(images):
    """(N, 3, H, W) HSV -> RGB, the inverse of ``rgb_to_hsv``.

    Each channel is V − V·S·clamp(min(k, 4 − k), 0, 1) with k = (m + 6·H) mod 6 and m = 5, 3, 1 for
    R, G, B (the closed form of the six-sector table).
    """
    xp = get_array_module(images)
    hue, saturation, value = images[:, 0], images[:, 1], images[:, 2]  # (N, H, W) each
    channels = []
    for m in (5.0, 3.0, 1.0):
        k = (m + 6.0 * hue) % 6.0
        channels.append(value - value * saturation * xp.clip(xp.minimum(k, 4.0 - k), 0.0, 1.0))
    return xp.stack(channels, axis=1).astype(images.dtype)


def adjust_hue(images, shift):
    """Rotates the hue of each sample by ``shift`` (N,) turns, each in [-0.5, 0.5]."""
    hsv = rgb_to_hsv(images)
    hue = (hsv[:, 0:1] + _per_sample(shift, images)) % 1.0  # (N, 1, H, W)
    return hsv_to_rgb(get_array_module(images).concatenate([hue, hsv[:, 1:]], axis=1))


JITTER_FUNCTIONS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)  # JITTER_OPS order


def color_jitter(images, params: ColorJitterParams):
    """torchvision ColorJitter with a random op order per sample, batched.

    For each of the four positions and each op, the samples that have that op at that position are
    gathered, transformed together and written back (their indices are distinct, so the write is
    the same on NumPy and CuPy).  Every sample thus goes through each op exactly once, in its own
    order, and the work is 4 op applications over the batch, not 16 as a masked blend of every op at
    every position would cost.  Samples with ``applied`` False and ops with ``enabled`` False are
    left out.

    Args:
        images: (N, 3, H, W) float array in [0, 1].
        params: host ``ColorJitterParams`` for the N samples.

    Returns:
        (N, 3, H, W) new array.
    """
    xp = get_array_module(images)
    out = images.copy()
    for position in range(4):
        for op, function in enumerate(JITTER_FUNCTIONS):
            if not params.enabled[op]:
                continue
            chosen = np.flatnonzero(params.applied & (params.order[:, position] == op))  # host indices
            if chosen.size == 0:
                continue
            index = xp.asarray(chosen)
            out[index] = function(out[index], params.factors[chosen, op])
    return out
