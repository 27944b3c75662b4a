"""Random transforms: each draws its parameters on the host, then applies one batched array op.

A transform is a small frozen dataclass with two halves:

    params = transform.draw(rng, n, height, width)    # host draws for n samples of height×width
    images = transform.apply(images, params)           # one batched op on (n', 3, H, W), n' = len(params)

and ``transform(images, rng)`` is the two in a row.  Images are an (n, 3, H, W) float batch in [0, 1] (NCHW,
on either backend); a transform returns a new batch and never changes its input.  The parameters of a
batch can be cut to some of its samples (``params[rows]``) before they are applied.  They mirror the
torchvision transforms of the same names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moco_ref.augment.blur import batch_radius, random_gaussian_blur
from moco_ref.augment.color import color_jitter, random_grayscale
from moco_ref.augment.geometry import horizontal_flip, resize, resized_crop
from moco_ref.augment.params import (
    BlurParams,
    sample_blur_sigma,
    sample_color_jitter,
    sample_mask,
    sample_resized_crop_boxes,
)


class Transform:
    """The shared half: ``transform(images, rng)`` draws for these images and applies; the output size."""

    def __call__(self, images, rng: np.random.Generator):
        n, _, height, width = images.shape
        return self.apply(images, self.draw(rng, n, height, width))

    def draw(self, rng: np.random.Generator, n: int, height: int, width: int):
        """The random parameters of n images of height×width (each transform's own)."""
        raise NotImplementedError

    def apply(self, images, params):
        """The transformed images, with the parameters :meth:`draw` gave for them."""
        raise NotImplementedError

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) of what :meth:`apply` returns for inputs of (height, width)."""
        return height, width


@dataclass(frozen=True)
class RandomResizedCrop(Transform):
    """A random box of area fraction ~ U[scale] and log-uniform aspect in ``ratio``, resized to size×size."""

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)

    def draw(self, rng: np.random.Generator, n: int, height: int, width: int):
        return sample_resized_crop_boxes(rng, n, height, width, self.scale, self.ratio)

    def apply(self, images, boxes):
        return resized_crop(images, boxes, self.size)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return self.size, self.size


@dataclass(frozen=True)
class Resize(Transform):
    """Deterministic resize to size×size (unchanged when the images already have that size)."""

    size: int

    def draw(self, rng: np.random.Generator, n: int, height: int, width: int):
        return np.zeros(n, dtype=bool)  # nothing random: one placeholder per sample

    def apply(self, images, params):
        return resize(images, self.size)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return self.size, self.size


@dataclass(frozen=True)
class RandomHorizontalFlip(Transform):
    """Mirrors each sample left-right with probability p."""

    p: float = 0.5

    def draw(self, rng: np.random.Generator, n: int, height: int, width: int):
        return sample_mask(rng, n, self.p)

    def apply(self, images, mask):
        return horizontal_flip(images, mask)


@dataclass(frozen=True)
class RandomGrayscale(Transform):
    """Turns each sample grey (3 equal channels) with probability p."""

    p: float = 0.2

    def draw(self, rng: np.random.Generator, n: int, height: int, width: int):
        return sample_mask(rng, n, self.p)

    def apply(self, images, mask):
        return random_grayscale(images, mask)


@dataclass(frozen=True)
class ColorJitter(Transform):
    """torchvision ColorJitter(brightness, contrast, saturation, hue), each sample jittered with probability p.

    p = 1 is the bare ColorJitter (MoCo v1); p = 0.8 is ``RandomApply([ColorJitter(...)], p=0.8)``.
    """

    brightness: float
    contrast: float
    saturation: float
    hue: float
    p: float = 1.0

    def draw(self, rng: np.random.Generator, n: int, height: int, width: int):
        return sample_color_jitter(rng, n, self.brightness, self.contrast, self.saturation, self.hue, self.p)

    def apply(self, images, params):
        return color_jitter(images, params)


@dataclass(frozen=True)
class GaussianBlur(Transform):
    """MoCo v2's blur: σ ~ U[sigma] per sample, applied with probability p."""

    sigma: tuple[float, float] = (0.1, 2.0)
    p: float = 0.5

    def draw(self, rng: np.random.Generator, n: int, height: int, width: int):
        sigma, applied = sample_blur_sigma(rng, n, self.sigma, self.p)
        return BlurParams(sigma, applied, batch_radius(sigma, applied, min(height, width)))

    def apply(self, images, params):
        return random_gaussian_blur(images, params.sigma, params.applied, params.radius)
