"""Datasets: the builtin shapes, the digits, CIFAR-10/100 and folders of images, all as uint8 arrays in host memory.

    from moco_ref.data import load_dataset
    train = load_dataset("builtin")                     # 2000 images of 10 shape classes, 32 x 32
    digits = load_dataset("digits", split="val")        # 397 handwritten digits, 8 x 8 enlarged to 32 x 32
    test = load_dataset("~/data/cifar-10-batches-py", split="test")
    pets = load_dataset("~/photos/pets", image_size=64)  # class = sub-folder

`source` is
- "builtin" (exactly; write ./builtin for a folder of that name): see moco_ref.data.synthetic;
- "digits" (exactly; write ./digits for a folder of that name): scikit-learn's handwritten digits,
  see moco_ref.data.digits;
- a folder that is, or directly contains, cifar-10-batches-py or cifar-100-python: see
  moco_ref.data.cifar;
- any other folder: a folder of images, see moco_ref.data.folder.
Splits: "train", and "test" or "val" (the same held-out split). `size` keeps a seeded random subset
(or, for builtin, sets the number generated). Anything wrong with the input raises DataError with
one line that names the problem and the path (digits without scikit-learn: a UserError that says how
to install it).
"""

from __future__ import annotations

from moco_ref.data.cifar import find_cifar, load_cifar
from moco_ref.data.dataset import SPLITS, Dataset, check_size, split_number
from moco_ref.data.digits import DIGITS, load_digits_dataset
from moco_ref.data.folder import load_image_folder
from moco_ref.data.synthetic import SYNTHETIC_CLASSES, load_builtin, make_synthetic
from moco_ref.errors import DataError
from moco_ref.paths import check_input

__all__ = ["Dataset", "SPLITS", "SYNTHETIC_CLASSES", "check_batchable", "load_dataset", "make_synthetic"]

_ARCHIVE_ENDINGS = (".tar.gz", ".tgz", ".tar", ".zip")
_SOURCES = "give 'builtin', 'digits', a CIFAR folder or a folder of images"  # what --data may be


def load_dataset(
    source: str, split: str = "train", image_size: int = 32, seed: int = 0, size: int | None = None
) -> Dataset:
    """Load one split of a dataset.

    Args:
        source: "builtin", "digits", a CIFAR folder or a folder of images.
        split: "train", "test" or "val".
        image_size: S, the side of the square images returned.
        seed: seeds the builtin generator and the choice of a `size` subset (not the digits' fixed split).
        size: number of images (None: all, or 2000 train / 1000 test for builtin).

    Returns:
        Dataset with images (N, S, S, 3) uint8.
    """
    check_size(size, image_size)
    if source == "builtin":
        return load_builtin(split, image_size, seed, size)
    if source == DIGITS:
        return load_digits_dataset(split, image_size, seed, size)

    if not str(source).strip():
        raise DataError(f"no dataset given; {_SOURCES}")
    root = check_input(source)
    split_number(split, str(root))
    if not root.exists():
        raise DataError(f"no such file or folder: {root} ({_SOURCES})")
    if not root.is_dir():
        if root.name.lower().endswith(_ARCHIVE_ENDINGS):
            raise DataError(f"{root} is an archive; extract it and give the folder")
        raise DataError(f"{root} is a file, not a folder; {_SOURCES}")
    cifar = find_cifar(root)
    if cifar is not None:
        layout, directory = cifar
        return load_cifar(layout, directory, split, image_size, seed, size)
    return load_image_folder(root, split, image_size, seed, size)


def check_batchable(dataset: Dataset, batch_size: int, bn_splits: int, processes: int = 1) -> None:
    """DataError unless training can form full batches that split evenly over the processes and, on
    each, for SplitBatchNorm.

    Training drops the last partial batch, so it needs len(dataset) >= batch_size (the global batch);
    each of the ``processes`` gets batch_size / processes images, and each of its ``bn_splits``
    groups must hold an equal share of those.
    """
    if batch_size < 1:
        raise DataError(f"--batch-size must be at least 1, got {batch_size}")
    if bn_splits < 1:
        raise DataError(f"--bn-splits must be at least 1, got {bn_splits}")
    if batch_size % processes:
        raise DataError(
            f"--batch-size {batch_size} (the global batch) does not split evenly over {processes} "
            f"processes; choose a multiple of {processes}"
        )
    per_process = batch_size // processes
    where = "" if processes == 1 else f" ({per_process} images on each of {processes} processes)"
    if per_process < bn_splits:
        raise DataError(
            f"--batch-size {batch_size}{where} is smaller than --bn-splits {bn_splits}; "
            f"each split needs at least one image"
        )
    if per_process % bn_splits != 0:
        raise DataError(
            f"--batch-size {batch_size}{where} is not a multiple of --bn-splits {bn_splits}; change one of them"
        )
    if len(dataset) < batch_size:
        raise DataError(
            f"{dataset.name} has only {len(dataset)} images, fewer than one batch of {batch_size}; lower --batch-size"
        )
