"""The builtin dataset: ten classes of shapes, drawn with Pillow, where only the shape tells the class.

Each image is one light shape on a darker, blotchy background, in shades of grey. Everything but the
shape is random and independent of the class: the two grey levels, size, position, rotation, the
background's low-frequency blotches and the per-pixel noise (which also lies over the shape).

Why grey: MoCo learns by telling each image apart from the others, and colour is the first cue it
grabs (a shortcut the colour jitter only slowly takes away): with coloured shapes the default run
barely moves the kNN accuracy off chance, with grey ones it learns the shapes (docs/results.md has the
figures). A representation that separates the classes here has learned shape.

The shape is drawn as a mask at `factor` times the final size (factor 4 at S = 32, at least 2) and
box-downsampled with Pillow, which gives anti-aliased edges; the grey levels are blended at the final size.

Reproducible: the same (n, image_size, seed, split) gives the same arrays (with the same Pillow
version, whose polygon rasteriser draws the edges), because all randomness comes from one numpy
Generator, default_rng([seed, split number]), with train = 0 and
test/val = 1. Labels are balanced (label i % 10 for image i) and then shuffled.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from moco_ref.data.dataset import SPLITS, Dataset, check_size, split_number

SYNTHETIC_CLASSES = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "crescent", "hexagon", "arrow")

DEFAULT_SIZES = {"train": 2000, "test": 1000, "val": 1000}


def _regular_polygon(corners: int, radius: float, start_degrees: float = 90.0) -> np.ndarray:
    """(corners, 2) vertices on a circle of the given radius."""
    angles = np.radians(start_degrees + 360.0 * np.arange(corners) / corners)
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(points: int = 5, outer: float = 1.0, inner: float = 0.42) -> np.ndarray:
    """(2 * points, 2) vertices alternating between the outer and inner radius."""
    radii = np.tile([outer, inner], points)
    angles = np.radians(90.0 + 180.0 * np.arange(2 * points) / points)
    return radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)


# Outlines in unit coordinates (the shape fits in the unit disc), rotated and scaled when drawn.
_POLYGONS = {
    "square": np.array([[-0.72, -0.72], [0.72, -0.72], [0.72, 0.72], [-0.72, 0.72]]),
    "triangle": _regular_polygon(3, 1.0),
    "star": _star(),
    "cross": np.array(
        [
            [0.3, 1],
            [0.3, 0.3],
            [1, 0.3],
            [1, -0.3],
            [0.3, -0.3],
            [0.3, -1],
            [-0.3, -1],
            [-0.3, -0.3],
            [-1, -0.3],
            [-1, 0.3],
            [-0.3, 0.3],
            [-0.3, 1],
        ]
    ),
    "diamond": np.array([[0.0, 1.0], [0.5, 0.0], [0.0, -1.0], [-0.5, 0.0]]),
    "hexagon": _regular_polygon(6, 0.9),
    "arrow": np.array([[-1.0, -0.2], [0.1, -0.2], [0.1, -0.6], [1.0, 0.0], [0.1, 0.6], [0.1, 0.2], [-1.0, 0.2]]),
}


def _disc(draw: ImageDraw.ImageDraw, centre: np.ndarray, radius: float, fill: int) -> None:
    x, y = centre
    draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill)


def draw_mask(label: int, rng: np.random.Generator, draw_size: int) -> Image.Image:
    """Draw the shape of class `label` at a random size, position and rotation.

    Args:
        label: index into SYNTHETIC_CLASSES.
        rng: consumes exactly 4 draws (radius, centre x, centre y, angle).
        draw_size: D, the side of the mask in pixels.

    Returns:
        mode "L" image of (D, D): 255 inside the shape, 0 outside.
    """
    radius = rng.uniform(0.25, 0.42) * draw_size
    centre = rng.uniform(radius, draw_size - radius, size=2)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])

    mask = Image.new("L", (draw_size, draw_size), 0)
    draw = ImageDraw.Draw(mask)
    name = SYNTHETIC_CLASSES[label]
    if name in _POLYGONS:
        points = centre + radius * _POLYGONS[name] @ rotation.T  # (V, 2)
        draw.polygon([tuple(p) for p in points], fill=255)
    elif name == "circle":
        _disc(draw, centre, 0.85 * radius, 255)
    elif name == "ring":
        _disc(draw, centre, 0.9 * radius, 255)
        _disc(draw, centre, 0.5 * radius, 0)
    elif name == "crescent":
        _disc(draw, centre, 0.9 * radius, 255)
        bite = centre + 0.5 * radius * rotation[:, 0]  # the bite's centre, shifted along the angle
        _disc(draw, bite, 0.8 * radius, 0)
    return mask


def _upsample_matrix(coarse: int, fine: int) -> np.ndarray:
    """(fine, coarse) linear-interpolation weights: fine = M @ coarse, per axis."""
    position = np.linspace(0, coarse - 1, fine)
    low = np.minimum(np.floor(position).astype(int), coarse - 2)
    weight = position - low
    matrix = np.zeros((fine, coarse))
    matrix[np.arange(fine), low] = 1 - weight
    matrix[np.arange(fine), low + 1] = weight
    return matrix


def _draw_image(
    label: int, rng: np.random.Generator, image_size: int, factor: int, blotch_matrix: np.ndarray
) -> np.ndarray:
    """One (S, S, 3) uint8 image of class `label`: the same grey image in all three channels."""
    size = image_size
    background_level = rng.uniform(0.0, 90.0)
    shape_level = rng.uniform(160.0, 255.0)
    coarse = rng.normal(0.0, 15.0, size=(blotch_matrix.shape[1],) * 2)  # (4, 4)
    background = background_level + blotch_matrix @ coarse @ blotch_matrix.T  # (S, S), bilinear blotches

    mask = draw_mask(label, rng, size * factor).reduce(factor)
    alpha = np.asarray(mask, dtype=np.float64) / 255.0  # (S, S)

    image = background * (1.0 - alpha) + shape_level * alpha
    image += rng.normal(0.0, 8.0, size=image.shape)  # texture over shape and background alike
    grey = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def make_synthetic(n: int, image_size: int = 32, seed: int = 0, split: str = "train") -> Dataset:
    """Generate n images of the ten shape classes.

    Args:
        n: number of images; labels are i % 10, then shuffled, so classes are balanced.
        image_size: S, the side of each image in pixels.
        seed, split: the generator is default_rng([seed, 0 for train or 1 for test/val]).

    Returns:
        Dataset with images (n, S, S, 3) uint8, labels (n,) int64, classes SYNTHETIC_CLASSES,
        name "builtin".
    """
    check_size(n, image_size)
    rng = np.random.default_rng([seed, split_number(split, "the builtin dataset")])
    labels = np.arange(n, dtype=np.int64) % len(SYNTHETIC_CLASSES)
    rng.shuffle(labels)

    factor = max(2, math.ceil(128 / image_size))
    blotch_matrix = _upsample_matrix(4, image_size)  # (S, 4)

    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    for i in range(n):
        images[i] = _draw_image(int(labels[i]), rng, image_size, factor, blotch_matrix)
    return Dataset(images=images, labels=labels, classes=list(SYNTHETIC_CLASSES), name="builtin")


def load_builtin(split: str, image_size: int, seed: int, size: int | None) -> Dataset:
    """The builtin dataset for load_dataset: 2000 train or 1000 test/val images unless size is given."""
    split_number(split, "the builtin dataset")
    check_size(size, image_size)
    return make_synthetic(size or DEFAULT_SIZES[split], image_size, seed, split)


assert set(DEFAULT_SIZES) == set(SPLITS)
