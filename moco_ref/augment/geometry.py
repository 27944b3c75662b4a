"""Geometric augmentations: the resized crop (one batched bilinear resample) and the horizontal flip.

Notation: N images, C channels, H×W input pixels (NCHW), S×S output pixels.

The resample is torchvision's ``resized_crop`` on tensors: cut the integer box, then bilinear
interpolation with half-pixel centres (``align_corners=False``).  Output pixel d of a box of length L
samples the box at

    s = max((d + 0.5)·L/S − 0.5, 0),   i0 = floor(s),   i1 = min(i0 + 1, L − 1),   λ = s − i0

and blends ``(1 − λ)·box[i0] + λ·box[i1]`` (rows first, then columns).  Difference from torchvision:
no antialiasing.  torchvision's default ``antialias=True`` widens the triangle filter when a box is
*larger* than the output (downscaling); when the box is no larger than the output the two agree to
float rounding, which is always the case for CIFAR crops (box <= 32 = output).
"""

from __future__ import annotations

import numpy as np

from backends import get_array_module
from moco_ref.augment.params import CropBoxes


def _source_taps(start: np.ndarray, length: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Host-side sampling grid along one axis for every box.

    Args:
        start, length: (N,) int box offset and length along the axis.
        size: output length S.

    Returns:
        (index0, index1, weight): (N, S) int64 absolute pixel indices of the two taps and (N, S) float32 λ.
    """
    source = (np.arange(size) + 0.5) * (length[:, None] / size) - 0.5  # (N, S), half-pixel centres
    source = np.maximum(source, 0.0)
    offset0 = np.floor(source).astype(np.int64)  # <= L - 1 since s < L - 0.5
    offset1 = np.minimum(offset0 + 1, length[:, None] - 1)
    weight = (source - offset0).astype(np.float32)
    return start[:, None] + offset0, start[:, None] + offset1, weight


def _gather_rows(images, rows):
    """(N, C, H, W) images, (N, S) row indices -> (N, C, S, W): row rows[n, s] of every plane of sample n.

    One ``take`` of whole rows from the (N·C·H, W) view, which is fast on both backends.
    """
    xp = get_array_module(images)
    n, channels, height, width = images.shape
    first_row = (xp.arange(n)[:, None] * channels + xp.arange(channels)[None, :]) * height  # (N, C)
    index = first_row[:, :, None] + rows[:, None, :]  # (N, C, S)
    return xp.take(images.reshape(n * channels * height, width), index, axis=0)  # (N, C, S, W)


def _resample_rows(images, index0, index1, weight):
    """Linear interpolation along H: (1 − λ)·row[i0] + λ·row[i1], per sample; -> (N, C, S, W)."""
    upper = _gather_rows(images, index0)  # (N, C, S, W)
    lower = _gather_rows(images, index1)  # (N, C, S, W)
    return upper + weight[:, None, :, None] * (lower - upper)


def resized_crop(images, boxes: CropBoxes, size: int):
    """Cuts one box per sample and resamples it bilinearly to size×size, all samples at once.

    Args:
        images: (N, C, H, W) float array.
        boxes: host ``CropBoxes``, each inside its image.
        size: output side S.

    Returns:
        (N, C, S, S) array on the backend and of the dtype of ``images``.
    """
    xp = get_array_module(images)
    row0, row1, row_weight = (xp.asarray(a) for a in _source_taps(boxes.top, boxes.height, size))
    col0, col1, col_weight = (xp.asarray(a) for a in _source_taps(boxes.left, boxes.width, size))
    rows = _resample_rows(images, row0, row1, row_weight.astype(images.dtype))  # (N, C, S, W)
    columns = xp.ascontiguousarray(rows.transpose(0, 1, 3, 2))  # (N, C, W, S)
    out = _resample_rows(columns, col0, col1, col_weight.astype(images.dtype))  # (N, C, S_x, S_y)
    return xp.ascontiguousarray(out.transpose(0, 1, 3, 2))  # (N, C, S, S)


def resize(images, size: int):
    """Resizes whole images to size×size with the same bilinear resample (no antialiasing).

    A square image of side ``size`` is returned unchanged.  A non-square image is first cut to its
    central square (so this is Resize(size) → CenterCrop(size) up to where the grid points fall).
    """
    n, _, height, width = images.shape
    if height == width == size:
        return images
    side = min(height, width)
    boxes = CropBoxes(
        top=np.full(n, (height - side) // 2, dtype=np.int64),
        left=np.full(n, (width - side) // 2, dtype=np.int64),
        height=np.full(n, side, dtype=np.int64),
        width=np.full(n, side, dtype=np.int64),
    )
    return resized_crop(images, boxes, size)


def horizontal_flip(images, flip: np.ndarray):
    """Mirrors left-right the samples where ``flip`` is True.

    Args:
        images: (N, C, H, W) array.
        flip: (N,) bool host mask.

    Returns:
        (N, C, H, W) new array.
    """
    xp = get_array_module(images)
    flip = xp.asarray(flip)[:, None, None, None]  # (N, 1, 1, 1)
    return xp.where(flip, images[..., ::-1], images)
