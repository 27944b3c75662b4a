"""Host-side random draws for the augmentations.

Every random number an augmentation uses is drawn here, on the host, from one
``numpy.random.Generator``; the array functions in ``geometry``, ``color`` and
``blur`` only receive the results (moving them to the device themselves).  So
a seed fixes the augmentation on NumPy and CuPy alike.

The distributions are torchvision's; the random streams are not (NumPy draws,
not torch's global generator), so the same seed gives the same *kind* of
augmentation as torchvision, never the same numbers.

Every draw gives the parameters of a whole batch, and each kind of parameters is indexed by samples
(``params[rows]``), so that a process of a data-parallel run takes its rows of the draw of the whole
batch (moco_ref/shuffle.py's ``local_share``) and augments exactly as one process would.

Notation: N images of H×W pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CROP_TRIES = 10  # torchvision's RandomResizedCrop.get_params tries 10 boxes before the central fallback
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")  # column order of ColorJitterParams.factors


@dataclass(frozen=True)
class CropBoxes:
    """One integer box per sample: rows ``top .. top+height-1``, columns ``left .. left+width-1``.

    Attributes:
        top, left, height, width: (N,) int64 host arrays.
    """

    top: np.ndarray
    left: np.ndarray
    height: np.ndarray
    width: np.ndarray

    def __getitem__(self, rows) -> CropBoxes:
        """The boxes of some samples (an index or slice of the batch)."""
        return CropBoxes(self.top[rows], self.left[rows], self.height[rows], self.width[rows])


@dataclass(frozen=True)
class ColorJitterParams:
    """Per-sample colour jitter parameters.

    Attributes:
        factors: (N, 4) float64; column k is the factor of ``JITTER_OPS[k]`` (a hue shift for "hue").
        order: (N, 4) int64; ``order[n, position]`` is the op applied to sample n at that position,
            a random permutation of 0..3 per sample (torchvision's ``fn_idx = torch.randperm(4)``).
        applied: (N,) bool; samples that get no jitter at all (``RandomApply(..., p)`` said no).
        enabled: (4,) bool; ops whose strength is not 0 (torchvision skips those, e.g. ``hue=0``).
    """

    factors: np.ndarray
    order: np.ndarray
    applied: np.ndarray
    enabled: np.ndarray

    def __getitem__(self, rows) -> ColorJitterParams:
        """The parameters of some samples (an index or slice of the batch)."""
        return ColorJitterParams(self.factors[rows], self.order[rows], self.applied[rows], self.enabled)


@dataclass(frozen=True)
class BlurParams:
    """Per-sample Gaussian blur: σ (N,) float64, applied (N,) bool, and the one kernel radius of the whole
    batch (from its largest σ), which a subset of the samples keeps: it blurs as the whole batch does."""

    sigma: np.ndarray
    applied: np.ndarray
    radius: int

    def __getitem__(self, rows) -> BlurParams:
        return BlurParams(self.sigma[rows], self.applied[rows], self.radius)


def sample_mask(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    """(N,) bool, each True with probability p (torchvision's ``torch.rand(1) < p``)."""
    return rng.random(n) < p


def central_fallback_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """torchvision's fallback when no try fits: the largest central box whose aspect is within ``ratio``.

    Returns:
        (top, left, box_height, box_width); the whole image when its own aspect is within ``ratio``.
    """
    image_ratio = width / height
    if image_ratio < min(ratio):
        box_width = width
        box_height = int(round(box_width / min(ratio)))
    elif image_ratio > max(ratio):
        box_height = height
        box_width = int(round(box_height * max(ratio)))
    else:
        box_height, box_width = height, width
    return (height - box_height) // 2, (width - box_width) // 2, box_height, box_width


def sample_resized_crop_boxes(
    rng: np.random.Generator,
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
) -> CropBoxes:
    """Draws one RandomResizedCrop box per sample, with torchvision's ``get_params`` algorithm.

    Per sample: up to 10 tries of area ``A·s``, s ~ U[scale], and aspect r = exp(u), u ~ U[log ratio];
    ``w = round(sqrt(A·s·r))``, ``h = round(sqrt(A·s/r))``; the first try with ``0 < w <= W`` and
    ``0 < h <= H`` is placed uniformly (top ~ U{0..H-h}, left ~ U{0..W-w}); if none fits, the central
    fallback box.  All 10 tries are drawn for every sample at once (vectorised), which gives the same
    distribution as torchvision's loop that stops at the first fit.
    """
    area = height * width
    log_ratio_low, log_ratio_high = math.log(ratio[0]), math.log(ratio[1])
    target_area = area * rng.uniform(scale[0], scale[1], size=(n, CROP_TRIES))  # (N, tries)
    aspect = np.exp(rng.uniform(log_ratio_low, log_ratio_high, size=(n, CROP_TRIES)))  # (N, tries)
    # np.round rounds halves to even, as Python's round() in torchvision does.
    try_width = np.round(np.sqrt(target_area * aspect)).astype(np.int64)
    try_height = np.round(np.sqrt(target_area / aspect)).astype(np.int64)
    fits = (try_width > 0) & (try_width <= width) & (try_height > 0) & (try_height <= height)
    first_fit = np.argmax(fits, axis=1)  # (N,) index of the first fitting try (0 when none fits)
    found = fits.any(axis=1)  # (N,)

    samples = np.arange(n)
    fallback_top, fallback_left, fallback_height, fallback_width = central_fallback_box(height, width, ratio)
    box_height = np.where(found, try_height[samples, first_fit], fallback_height)
    box_width = np.where(found, try_width[samples, first_fit], fallback_width)
    top = np.where(found, rng.integers(0, height - box_height + 1), fallback_top)
    left = np.where(found, rng.integers(0, width - box_width + 1), fallback_left)
    return CropBoxes(
        top=top.astype(np.int64),
        left=left.astype(np.int64),
        height=box_height.astype(np.int64),
        width=box_width.astype(np.int64),
    )


def sample_color_jitter(
    rng: np.random.Generator,
    n: int,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    p: float = 1.0,
) -> ColorJitterParams:
    """Draws torchvision ColorJitter parameters for each sample, wrapped in ``RandomApply(p)``.

    brightness, contrast, saturation factors ~ U[max(0, 1-b), 1+b]; hue shift ~ U[-h, h] (h <= 0.5);
    a random order of the four ops per sample; ``applied`` ~ Bernoulli(p).
    """
    if not 0.0 <= hue <= 0.5:
        raise ValueError(f"hue must be in [0, 0.5], got {hue}")
    strengths = (brightness, contrast, saturation)
    if min(strengths) < 0:
        raise ValueError(f"brightness, contrast and saturation must be >= 0, got {strengths}")
    low = [max(0.0, 1.0 - s) for s in strengths] + [-hue]
    high = [1.0 + s for s in strengths] + [hue]
    factors = rng.uniform(low, high, size=(n, 4))  # (N, 4)
    order = rng.permuted(np.tile(np.arange(4), (n, 1)), axis=1)  # (N, 4), each row a permutation
    applied = sample_mask(rng, n, p)
    enabled = np.array([brightness > 0, contrast > 0, saturation > 0, hue > 0])
    return ColorJitterParams(factors=factors, order=order, applied=applied, enabled=enabled)


def sample_blur_sigma(
    rng: np.random.Generator, n: int, sigma: tuple[float, float] = (0.1, 2.0), p: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Draws the MoCo v2 blur: σ ~ U[sigma] per sample, applied with probability p.

    Returns:
        (sigma (N,) float64, applied (N,) bool).
    """
    return rng.uniform(sigma[0], sigma[1], size=n), sample_mask(rng, n, p)
