"""The augmentation recipes of MoCo v1, MoCo v2 and the CIFAR-10 demo, as batched pipelines.

    pipe = make_pipeline("cifar", 32)
    view_1 = pipe(images, rng, "numpy")      # (N, H, W, 3) uint8 -> (N, 3, 32, 32) float32
    view_2 = pipe(images, rng, "numpy")      # the same rng again: an independent second view

    draws = pipe.draw(rng, N, H, W)          # the same in two halves: every random parameter of N images,
    view = pipe.apply(images[rows], draws[rows], "numpy")   # then some of those images with theirs

Recipes (torchvision names; see the package docstring for every difference from torchvision):

    v1     RandomResizedCrop(scale 0.2–1) → RandomGrayscale(0.2) → ColorJitter(0.4, 0.4, 0.4, 0.4)
           → RandomHorizontalFlip → Normalize
    v2     RandomResizedCrop(scale 0.2–1) → ColorJitter(0.4, 0.4, 0.4, 0.1) w.p. 0.8 → RandomGrayscale(0.2)
           → GaussianBlur(σ ~ U[0.1, 2]) w.p. 0.5 → RandomHorizontalFlip → Normalize
    cifar  RandomResizedCrop(scale 0.08–1) → RandomHorizontalFlip → ColorJitter(0.4, 0.4, 0.4, 0.1) w.p. 0.8
           → RandomGrayscale(0.2) → Normalize
    test   Resize (only if the size differs) → Normalize

Inside, the batch is NCHW float32 in [0, 1]: the uint8 upload is transposed once, at the start.  (Planar
NCHW rather than NHWC because NumPy runs channel-last float ops with an innermost axis of length 3
many times slower.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backends import Backend, get_backend
from moco_ref.augment.normalize import CIFAR_MEAN, CIFAR_STD, normalize, to_unit_float
from moco_ref.augment.transforms import (
    ColorJitter,
    GaussianBlur,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    Transform,
)

PIPELINES = ("v1", "v2", "cifar", "test")


@dataclass(frozen=True)
class Pipeline:
    """A named sequence of random transforms followed by normalisation.

    Attributes:
        name: the recipe, one of ``PIPELINES``.
        image_size: side S of the output views.
        transforms: the transforms (each a draw and an apply), applied in order.
        mean, std: per-channel normalisation constants.
    """

    name: str
    image_size: int
    transforms: tuple[Transform, ...]
    mean: tuple[float, float, float] = CIFAR_MEAN
    std: tuple[float, float, float] = CIFAR_STD

    def __call__(self, images: np.ndarray, rng: np.random.Generator, backend: str | Backend = "numpy"):
        """Augments a batch once: draws its parameters, then applies them.

        Args:
            images: (n, H, W, 3) uint8 host array.
            rng: the host generator every random parameter is drawn from.
            backend: a ``Backend`` or its name; the views are returned on it.

        Returns:
            (n, 3, S, S) float32 array on ``backend``, normalised.
        """
        _check_images(images)
        n, height, width, _ = images.shape
        return self.apply(images, self.draw(rng, n, height, width), backend)

    def draw(self, rng: np.random.Generator, n: int, height: int, width: int) -> Draws:
        """Every random parameter of the pipeline for n images of height×width, drawn in the order the
        transforms run (so draw then apply is exactly one call)."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        params = []
        for transform in self.transforms:
            params.append(transform.draw(rng, n, height, width))
            height, width = transform.output_size(height, width)
        return Draws(tuple(params))

    def apply(self, images: np.ndarray, draws: Draws, backend: str | Backend = "numpy"):
        """The views of ``images`` (n, H, W, 3) uint8 with the parameters ``draws`` of those same n images."""
        _check_images(images)
        backend = get_backend(backend)
        xp = backend.xp
        uploaded = backend.to_device(images)  # (N, H, W, 3) uint8
        views = to_unit_float(xp.ascontiguousarray(uploaded.transpose(0, 3, 1, 2)))  # (N, 3, H, W)
        for transform, params in zip(self.transforms, draws.params):
            views = transform.apply(views, params)
        return normalize(views, self.mean, self.std)  # (N, 3, S, S)


@dataclass(frozen=True)
class Draws:
    """The parameters a pipeline drew for a batch, one entry per transform; ``draws[rows]`` are those of
    some of its samples (what one process of a data-parallel run applies to its share)."""

    params: tuple

    def __getitem__(self, rows) -> Draws:
        return Draws(tuple(p[rows] for p in self.params))


def _check_images(images) -> None:
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"images must be an (N, H, W, 3) uint8 array, got shape {images.shape} and dtype {images.dtype}"
        )


def make_pipeline(
    name: str,
    image_size: int,
    mean: tuple[float, float, float] = CIFAR_MEAN,
    std: tuple[float, float, float] = CIFAR_STD,
) -> Pipeline:
    """Builds the recipe ``name`` (one of ``PIPELINES``) for views of image_size×image_size."""
    transforms: tuple[Transform, ...]
    if name == "v1":
        transforms = (
            RandomResizedCrop(image_size, scale=(0.2, 1.0)),
            RandomGrayscale(p=0.2),
            ColorJitter(0.4, 0.4, 0.4, 0.4),
            RandomHorizontalFlip(),
        )
    elif name == "v2":
        transforms = (
            RandomResizedCrop(image_size, scale=(0.2, 1.0)),
            ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
            RandomGrayscale(p=0.2),
            GaussianBlur(sigma=(0.1, 2.0), p=0.5),
            RandomHorizontalFlip(),
        )
    elif name == "cifar":
        transforms = (
            RandomResizedCrop(image_size, scale=(0.08, 1.0)),
            RandomHorizontalFlip(),
            ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
            RandomGrayscale(p=0.2),
        )
    elif name == "test":
        transforms = (Resize(image_size),)
    else:
        raise ValueError(f"unknown augmentation pipeline {name!r}; choose one of {', '.join(PIPELINES)}")
    return Pipeline(
        name=name,
        image_size=image_size,
        transforms=transforms,
        mean=(mean[0], mean[1], mean[2]),
        std=(std[0], std[1], std[2]),
    )
