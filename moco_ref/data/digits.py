"""The digits dataset: scikit-learn's 1,797 handwritten digits, 8 x 8 grey images of 10 classes.

What it is: the test set of the UCI "Optical Recognition of Handwritten Digits" data set (E. Alpaydin and
C. Kaynak, 1998), which scikit-learn ships inside its wheel and returns from sklearn.datasets.load_digits:
nothing is downloaded. Each image is a 32 x 32 bitmap of a digit from a form filled in by one of 13
people, counted in non-overlapping 4 x 4 blocks: an 8 x 8 image whose pixels count the ink, 0..16.
Labels 0..9, about 180 of each.

As a Dataset: each 8 x 8 image is scaled to uint8 by round(v / 16 * 255) (0 -> 0, 16 -> 255), resized to
S x S with Pillow (bilinear; 32 x 32 at the default image size, so a smooth enlargement), and the grey value
repeated in the three channels (RGB). Class names "0".."9".

Split: fixed, the same for every run and every --seed: a permutation of the 1,797 images drawn from
default_rng(SPLIT_SEED); its first 1,400 are train, the other 397 test/val ("test" and "val" are one
split), each kept in scikit-learn's order. The split is by image, not by writer: the same 13 hands write
both. `size` keeps a seeded random subset of a split, as for CIFAR.

scikit-learn is an optional extra (pip install 'moco-ref[digits]'); without it, loading raises a UserError.
"""

from __future__ import annotations

import numpy as np

from moco_ref.data.dataset import Dataset, split_number, subset_indices
from moco_ref.data.images import resize_square
from moco_ref.errors import UserError

DIGITS = "digits"  # the --data keyword
SPLIT_SEED = 0  # the seed of the fixed train/val permutation, independent of the run's --seed
TRAIN_SIZE = 1400  # of the 1,797 images; the other 397 are the test/val split
INSTALL = "pip install 'moco-ref[digits]' (or pip install scikit-learn)"


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as they are shipped.

    Returns:
        images: (1797, 8, 8) float64, ink counts 0..16.
        labels: (1797,) int64 in 0..9.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UserError(f"--data {DIGITS} needs scikit-learn, an optional extra: {INSTALL}") from None
    bunch = load_digits()
    return np.asarray(bunch.images, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)


def split_indices(n: int, split: str) -> np.ndarray:
    """The indices of one split of the n images: (1400,) for train, (n - 1400,) for test/val, sorted."""
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    chosen = order[:TRAIN_SIZE] if split_number(split, f"the {DIGITS} dataset") == 0 else order[TRAIN_SIZE:]
    return np.sort(chosen)


def to_uint8_rgb(images: np.ndarray, image_size: int) -> np.ndarray:
    """(N, 8, 8) ink counts 0..16 -> (N, S, S, 3) uint8: round(v / 16 * 255), resized, grey in R, G and B."""
    grey = np.rint(images / 16.0 * 255.0).astype(np.uint8)  # (N, 8, 8)
    rgb = np.repeat(grey[..., None], 3, axis=3)  # (N, 8, 8, 3)
    return resize_square(rgb, image_size)  # (N, S, S, 3)


def load_digits_dataset(split: str, image_size: int, seed: int, size: int | None) -> Dataset:
    """One split of the digits for load_dataset.

    Returns:
        Dataset with images (N, S, S, 3) uint8 (N = 1400 train or 397 test/val, or `size`), labels (N,)
        int64 in 0..9, classes "0".."9", name "digits".
    """
    split_number(split, f"the {DIGITS} dataset")
    images, labels = read_digits()
    chosen = split_indices(len(images), split)
    chosen = chosen[subset_indices(len(chosen), size, seed, split)]
    return Dataset(
        images=to_uint8_rgb(images[chosen], image_size),
        labels=labels[chosen],
        classes=[str(digit) for digit in range(10)],
        name=DIGITS,
    )
