"""Pixel scaling and per-channel normalisation (torchvision's ToTensor and Normalize).

to_unit_float(x) = x / 255                  (uint8 -> float32 in [0, 1])
normalize(x)     = (x − mean_c) / std_c     per channel c
denormalize(y)   = y·std_c + mean_c         (its inverse, for looking at views)
"""

from __future__ import annotations

from backends import get_array_module

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # the CIFAR-10 demo's per-channel mean
CIFAR_STD = (0.2023, 0.1994, 0.2010)  # and standard deviation


def to_unit_float(images):
    """uint8 images -> float32 in [0, 1], on the same backend."""
    xp = get_array_module(images)
    return images.astype(xp.float32) / 255.0


def _channel_shape(images, channel_axis: int) -> list[int]:
    shape = [1] * images.ndim
    shape[channel_axis] = images.shape[channel_axis]
    return shape


def normalize(images, mean=CIFAR_MEAN, std=CIFAR_STD, channel_axis: int = 1):
    """(x − mean)/std along ``channel_axis`` (1 for NCHW, -1 for NHWC); keeps the dtype."""
    xp = get_array_module(images)
    shape = _channel_shape(images, channel_axis)
    mean = xp.asarray(mean, dtype=images.dtype).reshape(shape)
    std = xp.asarray(std, dtype=images.dtype).reshape(shape)
    return (images - mean) / std


def denormalize(images, mean=CIFAR_MEAN, std=CIFAR_STD, channel_axis: int = 1):
    """The inverse of ``normalize``: y·std + mean along ``channel_axis``."""
    xp = get_array_module(images)
    shape = _channel_shape(images, channel_axis)
    mean = xp.asarray(mean, dtype=images.dtype).reshape(shape)
    std = xp.asarray(std, dtype=images.dtype).reshape(shape)
    return images * std + mean
