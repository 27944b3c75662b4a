"""CIFAR-10 and CIFAR-100 from the "python version" folders, read with a restricted unpickler.

Layouts (the folder given may be the batch folder itself or the folder that contains it):
- cifar-10-batches-py/: data_batch_1..5 (train), test_batch (test/val), batches.meta
  (b'label_names'); labels from b'labels'.
- cifar-100-python/: train, test, meta (b'fine_label_names'); labels from b'fine_labels'
  (the 100 fine classes; the 20 coarse ones are not used).
Each batch is a Python-2 pickle (protocol 2) of a dict with bytes keys; b'data' is an (N, 3072)
uint8 array, each row the 1024 red, then green, then blue values of a 32 x 32 image, row-major.

Safety: a pickle can run any function while it loads, so these files are never given to plain
pickle.load. The unpickler below resolves only the globals a numpy array needs (_reconstruct,
ndarray, dtype, under both the numpy.core and numpy._core spellings) and _codecs.encode limited to
latin-1 (how Python 3 writes bytes at protocol 2); any other global is refused with a DataError and
nothing is called. What loads is then checked: a dict, uint8 data of shape (N, 3072), integer labels
in range.

Size: CIFAR images are 32 x 32. Another image_size resizes every image with Pillow (bilinear),
which only blurs when enlarging; prefer image_size 32.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moco_ref.data.dataset import Dataset, split_number, subset_indices
from moco_ref.data.images import resize_square
from moco_ref.errors import DataError


@dataclass(frozen=True)
class CifarLayout:
    """The file names and dict keys of one CIFAR variant."""

    name: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    labels_key: bytes
    names_key: bytes


CIFAR10 = CifarLayout(
    "cifar10",
    "cifar-10-batches-py",
    tuple(f"data_batch_{i}" for i in range(1, 6)),
    ("test_batch",),
    "batches.meta",
    b"labels",
    b"label_names",
)
CIFAR100 = CifarLayout(
    "cifar100", "cifar-100-python", ("train",), ("test",), "meta", b"fine_labels", b"fine_label_names"
)


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle asked for a function or class outside the allowed list."""


def _encode_latin1(text, encoding):
    """_codecs.encode as Python 3 uses it to pickle bytes at protocol 2, and nothing more."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise RefusedGlobal("_codecs.encode with anything but a latin-1 string")
    return text.encode("latin-1")


def _allowed_globals() -> dict[tuple[str, str], object]:
    reconstruct = np.zeros(1).__reduce__()[0]  # numpy's _reconstruct, whatever its module path
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): _encode_latin1}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = reconstruct
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the globals a dict of numpy arrays needs."""

    ALLOWED = _allowed_globals()

    def find_class(self, module, name):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None


def restricted_load(path: Path) -> object:
    """Unpickle one CIFAR file safely (bytes keys stay bytes); DataError naming the file if not."""
    try:
        with open(path, "rb") as file:
            return RestrictedUnpickler(file, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"missing {path.name} in {path.parent}; is the CIFAR download complete?") from None
    except RefusedGlobal as refused:
        raise DataError(
            f"refusing to load {path}: it asks for '{refused}', which a CIFAR batch never "
            f"needs (a pickle can run code; this file may be malicious)"
        ) from None
    except Exception as error:  # noqa: BLE001 - a damaged pickle can fail in many ways
        detail = str(error).splitlines()[0] if str(error) else ""
        raise DataError(
            f"{path} is truncated or corrupt ({type(error).__name__}"
            f"{': ' + detail if detail else ''}); download it again"
        ) from None


def _get(batch: dict, key: bytes, path: Path):
    """batch[key], accepting a str key too (files re-pickled by Python 3)."""
    for candidate in (key, key.decode()):
        if candidate in batch:
            return batch[candidate]
    raise DataError(f"{path} is not a CIFAR batch: it has no {key!r} entry")


def read_class_names(path: Path, layout: CifarLayout) -> list[str]:
    """The class names in the meta file: C strings."""
    meta = restricted_load(path)
    if not isinstance(meta, dict):
        raise DataError(f"{path} is not a CIFAR meta file (expected a dict, got {type(meta).__name__})")
    names = _get(meta, layout.names_key, path)
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise DataError(f"{path} is not a CIFAR meta file: {layout.names_key!r} is not a list of names")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


def read_batch(path: Path, layout: CifarLayout, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch file.

    Returns:
        data: (N, 3072) uint8, rows of R, G, B planes.
        labels: (N,) int64 in [0, num_classes).
    """
    batch = restricted_load(path)
    if not isinstance(batch, dict):
        raise DataError(f"{path} is not a CIFAR batch (expected a dict, got {type(batch).__name__})")
    data = _get(batch, b"data", path)
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        shape = getattr(data, "shape", None)
        raise DataError(
            f"{path} is not a CIFAR batch: b'data' should be an (N, 3072) uint8 array, "
            f"got {type(data).__name__} {shape} {getattr(data, 'dtype', '')}".rstrip()
        )
    raw_labels = _get(batch, layout.labels_key, path)
    if not isinstance(raw_labels, (list, np.ndarray)):
        raise DataError(f"{path} is not a CIFAR batch: {layout.labels_key!r} is not a list")
    labels = np.asarray(raw_labels)
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise DataError(
            f"{path} is not a CIFAR batch: {layout.labels_key!r} should be {len(data)} "
            f"integers, got shape {labels.shape} of {labels.dtype}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path} has labels outside 0..{num_classes - 1}")
    return data, labels.astype(np.int64)


def _looks_like(directory: Path, layout: CifarLayout) -> bool:
    files = (layout.meta_file,) + layout.train_files + layout.test_files
    return any((directory / f).is_file() for f in files) and (directory / layout.meta_file).is_file()


def find_cifar(root: Path) -> tuple[CifarLayout, Path] | None:
    """(layout, batch folder) when root is, or directly contains, a CIFAR folder; else None."""
    for layout in (CIFAR10, CIFAR100):
        if root.name == layout.folder or _looks_like(root, layout):
            return layout, root
    found = [(layout, root / layout.folder) for layout in (CIFAR10, CIFAR100) if (root / layout.folder).is_dir()]
    if len(found) > 1:
        raise DataError(f"{root} holds both {CIFAR10.folder} and {CIFAR100.folder}; give the path of the one to use")
    return found[0] if found else None


def load_cifar(
    layout: CifarLayout, directory: Path, split: str, image_size: int, seed: int, size: int | None
) -> Dataset:
    """Read one split of a CIFAR folder.

    Returns:
        Dataset with images (N, S, S, 3) uint8 (N = 50000 train or 10000 test, or `size`),
        labels (N,) int64, the class names of the meta file, name "cifar10" or "cifar100".
    """
    files = layout.train_files if split_number(split, str(directory)) == 0 else layout.test_files
    classes = read_class_names(directory / layout.meta_file, layout)
    parts = [read_batch(directory / name, layout, len(classes)) for name in files]
    data = np.concatenate([d for d, _ in parts])  # (N, 3072)
    labels = np.concatenate([lab for _, lab in parts])  # (N,)
    if len(data) == 0:
        raise DataError(f"the {split} split in {directory} has no images")

    keep = subset_indices(len(data), size, seed, split)
    images = data[keep].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 32, 32, 3)
    images = resize_square(np.ascontiguousarray(images), image_size)
    return Dataset(images=images, labels=labels[keep], classes=classes, name=layout.name)
