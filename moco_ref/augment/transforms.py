"""Random transforms: each draws its parameters on the host, then applies one batched array op.

A transform is a small frozen dataclass called as ``transform(images, rng, share)`` on an (n, 3, H, W)
float batch in [0, 1] (NCHW, on either backend) with a ``numpy.random.Generator``; it returns a new
batch and never changes its input.  ``share`` says which rows of the whole batch (N = n·share.size
images) ``images`` are: the parameters are drawn for all N and this share's rows applied.  They mirror the torchvision transforms of the same names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moco_ref.augment.blur import batch_radius, random_gaussian_blur
from moco_ref.augment.color import color_jitter, random_grayscale
from moco_ref.augment.geometry import horizontal_flip, resize, resized_crop
from moco_ref.augment.params import (
    WHOLE,
    Share,
    sample_blur_sigma,
    sample_color_jitter,
    sample_mask,
    sample_resized_crop_boxes,
)


@dataclass(frozen=True)
class RandomResizedCrop:
    """A random box of area fraction ~ U[scale] and log-uniform aspect in ``ratio``, resized to size×size."""

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)

    def __call__(self, images, rng: np.random.Generator, share: Share = WHOLE):
        n, _, height, width = images.shape
        boxes = sample_resized_crop_boxes(rng, n * share.size, height, width, self.scale, self.ratio)
        return resized_crop(images, boxes.rows(share), self.size)


@dataclass(frozen=True)
class Resize:
    """Deterministic resize to size×size (unchanged when the images already have that size)."""

    size: int

    def __call__(self, images, rng: np.random.Generator, share: Share = WHOLE):
        return resize(images, self.size)


@dataclass(frozen=True)
class RandomHorizontalFlip:
    """Mirrors each sample left-right with probability p."""

    p: float = 0.5

    def __call__(self, images, rng: np.random.Generator, share: Share = WHOLE):
        return horizontal_flip(images, share.rows(sample_mask(rng, images.shape[0] * share.size, self.p)))


@dataclass(frozen=True)
class RandomGrayscale:
    """Turns each sample grey (3 equal channels) with probability p."""

    p: float = 0.2

    def __call__(self, images, rng: np.random.Generator, share: Share = WHOLE):
        return random_grayscale(images, share.rows(sample_mask(rng, images.shape[0] * share.size, self.p)))


@dataclass(frozen=True)
class ColorJitter:
    """torchvision ColorJitter(brightness, contrast, saturation, hue), each sample jittered with probability p.

    p = 1 is the bare ColorJitter (MoCo v1); p = 0.8 is ``RandomApply([ColorJitter(...)], p=0.8)``.
    """

    brightness: float
    contrast: float
    saturation: float
    hue: float
    p: float = 1.0

    def __call__(self, images, rng: np.random.Generator, share: Share = WHOLE):
        params = sample_color_jitter(
            rng, images.shape[0] * share.size, self.brightness, self.contrast, self.saturation, self.hue, self.p
        )
        return color_jitter(images, params.rows(share))


@dataclass(frozen=True)
class GaussianBlur:
    """MoCo v2's blur: σ ~ U[sigma] per sample, applied with probability p."""

    sigma: tuple[float, float] = (0.1, 2.0)
    p: float = 0.5

    def __call__(self, images, rng: np.random.Generator, share: Share = WHOLE):
        sigma, applied = sample_blur_sigma(rng, images.shape[0] * share.size, self.sigma, self.p)
        radius = batch_radius(sigma, applied, min(images.shape[2], images.shape[3]))   # of the whole batch
        return random_gaussian_blur(images, share.rows(sigma), share.rows(applied), radius)
