"""A folder of image files as a Dataset.

Layouts:
- Split folders: if the folder has a sub-folder named train, val or test, `split` picks one:
  "train" -> train/, "val" or "test" -> val/ or test/ (the one named like the split when both exist).
  Otherwise the whole folder is used for every split (then test = train: say so when you evaluate).
- Labelled: if (the split's) folder has sub-folders that hold files, each such sub-folder is a class,
  searched recursively; class names are the sorted sub-folder names, labels 0..C-1. Files lying
  directly in the folder beside class folders are skipped ("outside any class folder"). A class
  whose files are all skipped keeps its name and label; it just has no images.
- Unlabelled: otherwise the files directly in the folder are the images, labels None, classes [].
Hidden files and folders (names starting with ".") are ignored, not reported.

Every other file is tried with Pillow (any format it reads), EXIF orientation applied, converted to
RGB (see moco_ref.data.images for 16-bit, alpha and float), the shorter side scaled to S and the
centre S x S square kept: larger images are scaled down, smaller ones up (as torchvision's Resize
and RandomResizedCrop do; Dataset.scaled_up counts them). A file is skipped, with (path, reason) in
Dataset.skipped, when Pillow cannot read it, it is corrupt, truncated or unreadable, it has more
pixels than Pillow's decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS), or it is degenerate: a
side under MIN_SIDE pixels, or one side more than MAX_ASPECT times the other (its centre square
would hold a sliver of it). Pillow's own warnings about a file are not shown. With `size`, a
seeded random `size` of the listed files is read, chosen before decoding, so skipped files can
leave fewer than `size` images.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from moco_ref.data.dataset import Dataset, split_number, subset_indices
from moco_ref.data.images import resize_center_crop, to_rgb
from moco_ref.errors import DataError

SPLIT_FOLDERS = ("train", "val", "test")
MIN_SIDE = 3  # pixels: a side of 1 or 2 is degenerate
MAX_ASPECT = 20  # the longer side at most 20 times the shorter


def _visible(entries):
    return sorted(e for e in entries if not e.name.startswith("."))


def pick_split_folder(root: Path, split: str) -> Path:
    """The folder that holds `split`: root/train, root/val or root/test, or root itself."""
    split_number(split, str(root))
    present = [name for name in SPLIT_FOLDERS if (root / name).is_dir()]
    if not present:
        return root
    wanted = ["train"] if split == "train" else [split, "val" if split == "test" else "test"]
    for name in wanted:
        if name in present:
            return root / name
    raise DataError(
        f"no {' or '.join(n + '/' for n in wanted)} folder for split '{split}' in {root} "
        f"(found {', '.join(n + '/' for n in present)})"
    )


def _files_under(folder: Path) -> list[Path]:
    """All visible files below folder, recursively, sorted."""
    found = []
    for directory, subdirs, names in os.walk(folder):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        found += [
            Path(directory) / n
            for n in sorted(names)
            if not n.startswith(".") and os.path.isfile(os.path.join(directory, n))
        ]
    return found


def list_files(folder: Path):
    """The candidate image files of a folder and their labels.

    Returns:
        files: list of M paths.
        labels: (M,) int64, or None for an unlabelled folder.
        classes: list of C class names ([] when unlabelled).
        skipped: (path, reason) for files that cannot belong to the dataset.
    """
    try:
        entries = _visible(folder.iterdir())
    except OSError as error:
        raise DataError(f"cannot list {folder}: {error.strerror or error}") from None
    top_files = [e for e in entries if e.is_file()]
    class_folders = [(d, _files_under(d)) for d in entries if d.is_dir()]
    class_folders = [(d, files) for d, files in class_folders if files]
    if not class_folders:
        return top_files, None, [], []

    files, labels = [], []
    for label, (_, class_files) in enumerate(class_folders):
        files += class_files
        labels += [label] * len(class_files)
    classes = [d.name for d, _ in class_folders]
    skipped = [(str(f), "outside any class folder") for f in top_files]
    return files, np.array(labels, dtype=np.int64), classes, skipped


class SkipFile(Exception):
    """A file that cannot be used; the message is the reason recorded in Dataset.skipped."""


def degenerate(width: int, height: int) -> str | None:
    """Why a W x H image cannot give a square crop worth training on, or None when it can."""
    if min(width, height) < MIN_SIDE:
        return f"degenerate ({width}x{height}: a side under {MIN_SIDE} pixels)"
    if max(width, height) > MAX_ASPECT * min(width, height):
        return f"degenerate ({width}x{height}: one side more than {MAX_ASPECT} times the other)"
    return None


def too_many_pixels(message: str) -> str:
    """The skip reason of a file beyond Pillow's decompression-bomb limit, from Pillow's message
    ("Image size (100000000 pixels) exceeds limit of 89478485 pixels, ...")."""
    found = re.search(r"\((\d+) pixels\)", message)
    pixels = f"{int(found.group(1)):,} pixels, " if found else ""
    return f"too many pixels ({pixels}beyond Pillow's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS:,})"


def read_image(path: Path, image_size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode one file to (S, S, 3) uint8, scaled down or up; returns it and the file's (width, height).
    Raises SkipFile(reason) when it must be skipped."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow speaks through SkipFile
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                reason = degenerate(width, height)
                if reason:
                    raise SkipFile(reason)
                if image.format == "JPEG" and image.mode in ("RGB", "L"):
                    image.draft(image.mode, (2 * image_size, 2 * image_size))  # faster decode of big JPEGs
                upright = ImageOps.exif_transpose(image)
                return resize_center_crop(to_rgb(upright), image_size), (width, height)
    except SkipFile:
        raise
    except Image.UnidentifiedImageError:
        raise SkipFile("not an image Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise SkipFile(too_many_pixels(str(error))) from None
    except Exception as error:  # noqa: BLE001 - a broken file can make any Pillow plugin fail
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SkipFile(f"corrupt, truncated or unreadable ({first_line})") from None


def load_image_folder(root: Path, split: str, image_size: int, seed: int, size: int | None) -> Dataset:
    """Read a folder of images (see the module docstring for layouts and rules).

    Returns:
        Dataset with images (N, S, S, 3) uint8, named by the folder path.
    """
    folder = pick_split_folder(root, split)
    files, labels, classes, skipped = list_files(folder)
    if not files and not skipped:
        raise DataError(f"no files in {folder} (the folder is empty)")

    keep = subset_indices(len(files), size, seed, split)
    files = [files[i] for i in keep]
    labels = labels[keep] if labels is not None else None

    images = np.empty((len(files), image_size, image_size, 3), dtype=np.uint8)
    read = np.zeros(len(files), dtype=bool)
    scaled_up = 0
    for i, path in enumerate(files):
        try:
            images[i], (width, height) = read_image(path, image_size)
            read[i] = True
            scaled_up += min(width, height) < image_size
        except SkipFile as reason:
            skipped.append((str(path), str(reason)))

    if not read.any():
        first_path, first_reason = skipped[0]
        raise DataError(
            f"none of the files in {folder} could be read ({len(skipped)} skipped; first: {first_path}: {first_reason})"
        )
    return Dataset(
        images=images[read],
        labels=labels[read] if labels is not None else None,
        classes=classes,
        name=str(root),
        skipped=skipped,
        scaled_up=scaled_up,
    )
