"""Gaussian blur with a σ per sample (MoCo v2's ``GaussianBlur(sigma=[0.1, 2.0])``).

Notation: N images of H×W pixels, C channels (NCHW); R the kernel radius, K = 2R + 1 taps.

    g_n[t] = exp(−t² / (2σ_n²)) / Σ_t' exp(−t'² / (2σ_n²)),   t = −R .. R

applied separably (columns of every row, then rows of every column) on a reflect-padded image
(``numpy.pad(mode="reflect")``, the edge pixel not repeated, as torchvision's GaussianBlur pads).
One radius serves the whole batch: R = ceil(3·max σ), at most min(H, W) − 1 (reflect padding cannot
reach further), so each kernel is a Gaussian truncated at >= 3σ and renormalised to sum to 1.

What this matches: the official MoCo v2 code calls PIL's ``ImageFilter.GaussianBlur(radius=σ)``, whose
``radius`` *is* the standard deviation; we use that σ directly.  Differences: PIL approximates the
Gaussian with three extended box blurs on uint8 and extends the image by repeating its edge pixels;
torchvision's GaussianBlur takes a fixed kernel size instead of one chosen from σ.
"""

from __future__ import annotations

import math

import numpy as np

from backends import get_array_module

TRUNCATE = 3.0  # kernel half-width in units of the largest σ of the batch


def gaussian_kernel_radius(sigma_max: float, image_side: int) -> int:
    """R = ceil(3·σ_max), at least 1 and at most ``image_side − 1``."""
    return max(1, min(math.ceil(TRUNCATE * sigma_max), image_side - 1))


def gaussian_kernels(sigma: np.ndarray, radius: int) -> np.ndarray:
    """(N,) σ on the host -> (N, 2R+1) float32 host kernels, each summing to 1.

    Computed on the host in float64, so that both backends blur with the very same weights.
    """
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)  # (K,)
    weights = np.exp(-0.5 * (offsets[None, :] / np.asarray(sigma, dtype=np.float64)[:, None]) ** 2)  # (N, K)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def _blur_axis(images, kernels, axis: int):
    """Convolves every sample along ``axis`` (2 = down the columns, 3 = along the rows) with its own kernel."""
    xp = get_array_module(images)
    taps = kernels.shape[1]
    radius = (taps - 1) // 2
    length = images.shape[axis]
    padding = [(0, 0)] * images.ndim
    padding[axis] = (radius, radius)
    padded = xp.pad(images, padding, mode="reflect")  # length + 2R along axis
    out = xp.zeros_like(images)
    for t in range(taps):  # a loop over kernel offsets, each one strided slice of the batch
        window = [slice(None)] * images.ndim
        window[axis] = slice(t, t + length)
        out = out + kernels[:, t, None, None, None] * padded[tuple(window)]
    return out


def gaussian_blur(images, kernels):
    """Blurs sample n with the separable kernel ``kernels[n]``.

    Args:
        images: (N, C, H, W) float array.
        kernels: (N, K) kernels (host or device), K = 2R + 1 odd with R < min(H, W).

    Returns:
        (N, C, H, W) new array, same dtype.
    """
    xp = get_array_module(images)
    _, _, height, width = images.shape
    taps = kernels.shape[1]
    if taps % 2 == 0 or (taps - 1) // 2 >= min(height, width):
        raise ValueError(f"kernels of {taps} taps do not fit images of {height}×{width} (odd, radius < side)")
    kernels = xp.asarray(kernels).astype(images.dtype)  # (N, K)
    return _blur_axis(_blur_axis(images, kernels, axis=3), kernels, axis=2)


def batch_radius(sigma: np.ndarray, applied: np.ndarray, image_side: int) -> int:
    """The batch's one kernel radius, from the largest σ among the samples blurred (1 if none is)."""
    return gaussian_kernel_radius(float(sigma[applied].max()) if applied.any() else 0.0, image_side)


def random_gaussian_blur(images, sigma: np.ndarray, applied: np.ndarray, radius: int | None = None):
    """Blurs the samples where ``applied`` is True, sample n with σ = ``sigma[n]`` (host arrays).

    ``radius``: the kernels' radius, by default :func:`batch_radius` of these samples (the parameters of
    some samples of a batch keep the whole batch's radius: they blur as the whole batch does).
    """
    xp = get_array_module(images)
    chosen = np.flatnonzero(applied)
    if chosen.size == 0:
        return images
    if radius is None:
        radius = batch_radius(sigma, applied, min(images.shape[2], images.shape[3]))
    index = xp.asarray(chosen)
    out = images.copy()
    out[index] = gaussian_blur(images[index], gaussian_kernels(sigma[chosen], radius))
    return out
