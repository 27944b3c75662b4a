"""The in-memory dataset every loader returns, and the small helpers the loaders share.

Notation: N images, each S x S pixels with 3 channels (RGB), stored as uint8 in host memory;
C classes.

Splits: "train" is the training split; "test" and "val" are two names for the same held-out split
(CIFAR's test batch, an image folder's val/ or test/ sub-folder, the builtin set's second seed, the
digits' fixed 397).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from moco_ref.errors import DataError

# split name -> the number mixed into the seed (and the held-out splits share one number)
SPLITS = {"train": 0, "test": 1, "val": 1}


@dataclass
class Dataset:
    """A labelled or unlabelled set of square RGB images, held in host memory.

    Attributes:
        images: (N, S, S, 3) uint8, RGB.
        labels: (N,) int64 in [0, C), or None when the data has no labels.
        classes: the C class names, index = label ([] when unlabelled).
        name: where the data came from: "builtin", "digits", "cifar10", "cifar100" or the folder path.
        skipped: (file path, reason) for every file that was skipped while loading.
        scaled_up: how many of the images were smaller than S x S in their file and were scaled up.
    """

    images: np.ndarray
    labels: np.ndarray | None
    classes: list[str]
    name: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    scaled_up: int = 0

    def __post_init__(self):
        # Programming errors, not user errors: a loader must never build a malformed Dataset.
        images = self.images
        if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[3] != 3:
            raise ValueError(f"images must be (N, S, S, 3), got {images.shape}")
        if images.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {images.dtype}")
        if self.labels is not None:
            if self.labels.shape != (len(images),) or self.labels.dtype != np.int64:
                raise ValueError(f"labels must be ({len(images)},) int64, got {self.labels.shape} {self.labels.dtype}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> int:
        """S, the side of every image in pixels."""
        return self.images.shape[1]

    def load_notes(self, shown: int = 10) -> list[str]:
        """What loading has to tell the user: the files skipped (the first ``shown`` by name, then how many)
        and how many images were scaled up to S x S."""
        notes = [f"warning: skipped {path}: {reason}" for path, reason in self.skipped[:shown]]
        if self.skipped:
            more = len(self.skipped) - shown
            notes.append(
                f"warning: skipped {len(self.skipped)} file(s) in {self.name}"
                + (f" ({more} not listed)" if more > 0 else "")
            )
        if self.scaled_up:
            notes.append(
                f"note: scaled up {self.scaled_up} image(s) of {self.name} smaller than "
                f"{self.image_size}x{self.image_size} (--image-size {self.image_size})"
            )
        return notes


def split_number(split: str, where: str) -> int:
    """The seed number of a split name (0 train, 1 test/val); DataError for an unknown name."""
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}' for {where}; use train, test or val")
    return SPLITS[split]


def check_size(size: int | None, image_size: int) -> None:
    """DataError unless size (None or >= 1) and image_size (>= 1) are usable."""
    if size is not None and size < 1:
        raise DataError(f"dataset size must be at least 1, got {size}")
    if image_size < 1:
        raise DataError(f"image size must be at least 1 pixel, got {image_size}")


def subset_indices(n: int, size: int | None, seed: int, split: str) -> np.ndarray:
    """Indices of the images to keep, in their original order.

    All n when size is None or size >= n; otherwise a random `size` of them, drawn from
    default_rng([seed, split number, 2]) so the choice is reproducible.

    Returns:
        (M,) int64, sorted.
    """
    if size is None or size >= n:
        return np.arange(n)
    rng = np.random.default_rng([seed, SPLITS[split], 2])
    return np.sort(rng.choice(n, size=size, replace=False))
