"""Tests of moco_ref.data: the builtin shapes, CIFAR folders, image folders and their errors.

Every fixture is written into tmp_path with Pillow or pickle; nothing is downloaded.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import struct

import numpy as np
import pytest
from PIL import Image

from moco_ref.data import (
    SYNTHETIC_CLASSES,
    Dataset,
    check_batchable,
    load_dataset,
    make_synthetic,
)
from moco_ref.errors import DataError, UserError


def raises_data_error(call, *phrases) -> str:
    """Run call(), expect a one-line DataError containing every phrase; return the message."""
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, f"message spans lines: {message!r}"
    for phrase in phrases:
        assert phrase in message, f"{phrase!r} not in {message!r}"
    return message


# ----------------------------------------------------------------------------- builtin


def test_builtin_shapes_dtypes_and_names():
    data = make_synthetic(40, image_size=32, seed=1)
    assert isinstance(data, Dataset)
    assert data.images.shape == (40, 32, 32, 3) and data.images.dtype == np.uint8
    assert data.labels.shape == (40,) and data.labels.dtype == np.int64
    assert data.classes == list(SYNTHETIC_CLASSES) and len(set(SYNTHETIC_CLASSES)) == 10
    assert data.name == "builtin" and data.skipped == [] and len(data) == 40


def test_builtin_labels_are_balanced_then_shuffled():
    labels = make_synthetic(53, seed=0).labels
    assert np.bincount(labels, minlength=10).tolist() == [6, 6, 6] + [5] * 7
    assert not np.array_equal(labels, np.arange(53) % 10)


def test_builtin_is_deterministic_per_seed_and_split():
    first = load_dataset("builtin", split="train", seed=5, size=30)
    again = load_dataset("builtin", split="train", seed=5, size=30)
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.labels, again.labels)

    test = load_dataset("builtin", split="test", seed=5, size=30)
    other_seed = load_dataset("builtin", split="train", seed=6, size=30)
    assert not np.array_equal(first.images, test.images)
    assert not np.array_equal(first.images, other_seed.images)
    val = load_dataset("builtin", split="val", seed=5, size=30)  # val is another name for test
    np.testing.assert_array_equal(val.images, test.images)


def test_builtin_default_sizes_and_image_size():
    assert len(load_dataset("builtin")) == 2000
    assert len(load_dataset("builtin", split="test")) == 1000
    assert load_dataset("builtin", image_size=20, size=10).images.shape == (10, 20, 20, 3)


def test_builtin_images_are_grey_vary_and_use_the_full_range():
    images = make_synthetic(50, seed=2).images
    assert np.array_equal(images[..., 0], images[..., 1]) and np.array_equal(images[..., 1], images[..., 2])
    assert len(np.unique(images.reshape(50, -1), axis=0)) == 50  # no two images alike
    images = images.astype(np.float64)
    assert images.std(axis=(1, 2, 3)).min() > 10  # no flat images: shape and texture are visible
    assert images.min() < 20 and images.max() > 235


def test_builtin_mean_colour_does_not_predict_the_class():
    train = make_synthetic(1000, seed=3, split="train")
    test = make_synthetic(1000, seed=3, split="test")
    colour_train = train.images.reshape(1000, -1, 3).mean(axis=1)  # (N, 3)
    colour_test = test.images.reshape(1000, -1, 3).mean(axis=1)
    centroids = np.stack([colour_train[train.labels == c].mean(axis=0) for c in range(10)])
    distances = ((colour_test[:, None, :] - centroids[None]) ** 2).sum(axis=-1)  # (N, 10)
    accuracy = (distances.argmin(axis=1) == test.labels).mean()
    assert accuracy < 0.16, f"nearest-mean-colour accuracy {accuracy:.3f} is above chance (0.10)"


# ----------------------------------------------------------------------------- CIFAR fixtures

CIFAR10_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def _cifar_rows(n: int, first_label: int) -> tuple[np.ndarray, list[int]]:
    """n rows of (3072,) uint8: R plane = 10 + n * first_label + i (unique per batch), G = 20,
    B = 30, and R(row 0, col 1) = 200."""
    data = np.zeros((n, 3, 32, 32), dtype=np.uint8)
    data[:, 0] = (10 + n * first_label + np.arange(n))[:, None, None]
    data[:, 1], data[:, 2] = 20, 30
    data[:, 0, 0, 1] = 200
    labels = [(first_label + i) % 10 for i in range(n)]
    return data.reshape(n, 3072), labels


def _dump(path, obj) -> None:
    with open(path, "wb") as file:
        pickle.dump(obj, file, protocol=2)


# Python 2 wrote the real files: protocol 2, byte strings as SHORT_BINSTRING/BINSTRING (no
# _codecs.encode), arrays through numpy.core.multiarray._reconstruct. Python 3 cannot write that,
# so these helpers emit the opcodes by hand (see pickletools for their meaning).
def _py2_string(raw: bytes) -> bytes:
    if len(raw) < 256:
        return b"U" + bytes([len(raw)]) + raw
    return b"T" + struct.pack("<i", len(raw)) + raw


def _py2_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)
    return b"J" + struct.pack("<i", value)


def _py2_uint8_array(array: np.ndarray) -> bytes:
    dtype = (
        b"cnumpy\ndtype\n"
        + _py2_string(b"u1")
        + _py2_int(0)
        + _py2_int(1)
        + b"\x87R"
        + b"("
        + _py2_int(3)
        + _py2_string(b"|")
        + b"NNN"
        + _py2_int(-1)
        + _py2_int(-1)
        + _py2_int(0)
        + b"tb"
    )
    shape = b"(" + b"".join(_py2_int(side) for side in array.shape) + b"t"
    return (
        b"cnumpy.core.multiarray\n_reconstruct\n"
        + b"cnumpy\nndarray\n"
        + _py2_int(0)
        + b"\x85"
        + _py2_string(b"b")
        + b"\x87R"
        + b"("
        + _py2_int(1)
        + shape
        + dtype
        + b"\x89"
        + _py2_string(array.tobytes())
        + b"tb"
    )


def _dump_python2(path, entries: dict) -> None:
    body = b""
    for key, value in entries.items():
        if isinstance(value, np.ndarray):
            encoded = _py2_uint8_array(value)
        elif isinstance(value, list):
            items = [_py2_int(v) if isinstance(v, int) else _py2_string(v) for v in value]
            encoded = b"](" + b"".join(items) + b"e"
        elif isinstance(value, int):
            encoded = _py2_int(value)
        else:
            encoded = _py2_string(value)
        body += _py2_string(key) + encoded
    path.write_bytes(b"\x80\x02}(" + body + b"u.")


def write_cifar10(root, n: int = 4, python2: bool = False):
    """A cifar-10-batches-py folder under root, n images per batch; returns the batch folder."""
    dump = _dump_python2 if python2 else _dump
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for index, name in enumerate(names):
        data, labels = _cifar_rows(n, first_label=index)
        dump(
            folder / name,
            {
                b"batch_label": name.encode(),
                b"labels": labels,
                b"data": data,
                b"filenames": [f"img_{i}.png".encode() for i in range(n)],
            },
        )
    dump(folder / "batches.meta", {b"num_cases_per_batch": n, b"label_names": CIFAR10_NAMES, b"num_vis": 3072})
    return folder


def write_cifar100(root, n: int = 6):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name in ("train", "test"):
        data, _ = _cifar_rows(n, 0)
        _dump(
            folder / name,
            {
                b"filenames": [b"x.png"] * n,
                b"batch_label": b"b",
                b"fine_labels": [99 - i for i in range(n)],
                b"coarse_labels": [0] * n,
                b"data": data,
            },
        )
    _dump(
        folder / "meta",
        {b"fine_label_names": [f"class{i}".encode() for i in range(100)], b"coarse_label_names": [b"c"] * 20},
    )
    return folder


# ----------------------------------------------------------------------------- CIFAR


def test_cifar10_pixel_layout_labels_and_classes(tmp_path):
    write_cifar10(tmp_path, n=4)
    train = load_dataset(str(tmp_path), split="train")
    assert train.name == "cifar10" and len(train) == 20
    assert train.images.shape == (20, 32, 32, 3) and train.images.dtype == np.uint8
    assert train.classes[0] == "airplane" and len(train.classes) == 10
    # (N, 3072) -> (N, 3, 32, 32) -> (N, 32, 32, 3): planes become channels, rows stay rows
    assert train.images[0, 0, 1].tolist() == [200, 20, 30]
    assert train.images[0, 1, 0].tolist() == [10, 20, 30]
    assert train.images[3, 5, 5].tolist() == [13, 20, 30]
    assert train.labels.tolist()[:8] == [0, 1, 2, 3, 1, 2, 3, 4]  # batch 1, then batch 2

    test = load_dataset(str(tmp_path), split="test")
    assert len(test) == 4 and test.labels.tolist() == [5, 6, 7, 8]
    np.testing.assert_array_equal(load_dataset(str(tmp_path), split="val").images, test.images)


def test_cifar_folder_can_be_given_directly(tmp_path):
    folder = write_cifar10(tmp_path)
    assert len(load_dataset(str(folder), split="test")) == 4


def test_cifar_accepts_the_numpy_core_spelling_of_old_files(tmp_path):
    folder = write_cifar10(tmp_path)
    for path in folder.iterdir():
        raw = path.read_bytes()
        path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert b"numpy.core.multiarray\n_reconstruct" in (folder / "test_batch").read_bytes()
    assert load_dataset(str(folder), split="test").images[0, 0, 1].tolist() == [200, 20, 30]


def test_cifar_reads_files_written_the_way_python2_wrote_them(tmp_path):
    folder = write_cifar10(tmp_path, n=3, python2=True)
    raw = (folder / "test_batch").read_bytes()
    opcodes = {op.name for op, _, _ in pickletools.genops(raw)}
    assert "SHORT_BINSTRING" in opcodes and b"_codecs" not in raw  # truly the old format
    test = load_dataset(str(folder), split="test")
    assert test.images[0, 0, 1].tolist() == [200, 20, 30] and test.labels.tolist() == [5, 6, 7]
    assert test.classes[9] == "truck" and len(load_dataset(str(folder))) == 15


def test_cifar100_uses_fine_labels_and_names(tmp_path):
    write_cifar100(tmp_path)
    data = load_dataset(str(tmp_path), split="test")
    assert data.name == "cifar100" and len(data.classes) == 100
    assert data.labels.tolist() == [99, 98, 97, 96, 95, 94] and data.classes[99] == "class99"


def test_cifar_size_and_image_size(tmp_path):
    write_cifar10(tmp_path, n=4)
    full = load_dataset(str(tmp_path))
    part = load_dataset(str(tmp_path), size=7, seed=1)
    again = load_dataset(str(tmp_path), size=7, seed=1)
    assert len(part) == 7
    np.testing.assert_array_equal(part.images, again.images)
    rows = [np.flatnonzero((full.images == image).all(axis=(1, 2, 3)))[0] for image in part.images]
    np.testing.assert_array_equal(part.labels, full.labels[rows])

    small = load_dataset(str(tmp_path), split="test", image_size=16)
    assert small.images.shape == (4, 16, 16, 3)
    assert small.images[0, 8, 8].tolist() == [30, 20, 30]  # a flat plane stays flat


class _OpenFile:
    """Unpickling this calls open(marker, "w"): it creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _RunShell:
    """Unpickling this calls os.system("touch marker")."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload", [_OpenFile, _RunShell])
@pytest.mark.parametrize("victim", ["data_batch_1", "batches.meta"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, payload, victim):
    folder = write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    _dump(folder / victim, {b"data": payload(marker), b"labels": [0], b"label_names": []})
    raises_data_error(lambda: load_dataset(str(folder)), "refusing to load", str(folder / victim), "malicious")
    assert not marker.exists()


def test_truncated_cifar_batch(tmp_path):
    folder = write_cifar10(tmp_path)
    raw = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(raw[: len(raw) // 2])
    raises_data_error(
        lambda: load_dataset(str(folder), split="test"), "truncated or corrupt", str(folder / "test_batch")
    )


def test_cifar_batch_with_wrong_contents(tmp_path):
    folder = write_cifar10(tmp_path)
    _dump(folder / "test_batch", {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    raises_data_error(lambda: load_dataset(str(folder), split="test"), "(N, 3072) uint8", str(folder / "test_batch"))
    data, _ = _cifar_rows(2, 0)
    _dump(folder / "test_batch", {b"data": data, b"labels": [0, 10]})
    raises_data_error(lambda: load_dataset(str(folder), split="test"), "labels outside 0..9")
    _dump(folder / "test_batch", [1, 2, 3])
    raises_data_error(lambda: load_dataset(str(folder), split="test"), "expected a dict")


def test_cifar_missing_batch(tmp_path):
    folder = write_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    raises_data_error(lambda: load_dataset(str(tmp_path)), "missing data_batch_3", str(folder))


# ----------------------------------------------------------------------------- image folders


def _save(image: Image.Image, path, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)


def test_every_image_mode_becomes_the_right_rgb(tmp_path):
    colours = tmp_path / "colours"
    palette = Image.new("P", (32, 32), 1)
    palette.putpalette([0, 0, 0, 12, 34, 56] + [0, 0, 0] * 254)
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red in CMYK
    _save(Image.new("RGB", (32, 32), (200, 100, 50)), colours / "a_rgb.png")
    _save(Image.new("RGB", (32, 32), (200, 100, 50)), colours / "b_rgb.jpg", quality=95)
    _save(palette, colours / "c_palette.png")
    _save(Image.new("L", (32, 32), 77), colours / "d_grey.png")
    _save(cmyk, colours / "e_cmyk.tif")
    _save(Image.new("1", (32, 32), 1), colours / "f_bilevel.png")
    _save(Image.new("RGB", (40, 40), (1, 2, 3)), tmp_path / "other" / "x.bmp")

    data = load_dataset(str(tmp_path), image_size=16)
    assert data.classes == ["colours", "other"] and data.labels.tolist() == [0] * 6 + [1]
    assert data.skipped == []
    expected = [(200, 100, 50), (200, 100, 50), (12, 34, 56), (77, 77, 77), (255, 0, 0), (255, 255, 255), (1, 2, 3)]
    tolerance = [1, 6, 1, 1, 1, 1, 1]  # JPEG is lossy
    for image, colour, tol in zip(data.images, expected, tolerance):
        np.testing.assert_allclose(image[8, 8], colour, atol=tol)


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[:, :16] = (0, 255, 0, 0)  # transparent green: must not show through
    rgba[:, 16:] = (255, 0, 0, 255)  # opaque red
    _save(Image.fromarray(rgba, mode="RGBA"), tmp_path / "a.png")
    image = load_dataset(str(tmp_path)).images[0]
    assert image[10, 2].tolist() == [255, 255, 255]
    assert image[10, 29].tolist() == [255, 0, 0]


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    values = np.zeros((32, 32), np.uint16)
    values[:, :10] = 32896  # 128 * 257
    values[:, 10:22] = 65535
    values[:, 22:] = 1028  # 4 * 257
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    _save(image, tmp_path / "deep.png")
    loaded = load_dataset(str(tmp_path)).images[0]
    assert loaded[5, 3].tolist() == [128, 128, 128]
    assert loaded[5, 16].tolist() == [255, 255, 255]
    assert loaded[5, 28].tolist() == [4, 4, 4]


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (32, 32), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 16, 16))  # red top-left quadrant as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    _save(image, tmp_path / "rotated.jpg", exif=exif, quality=95)
    loaded = load_dataset(str(tmp_path)).images[0].astype(int)
    assert loaded[4, 27, 0] > 200 and loaded[4, 27, 2] < 50  # displayed: red top-right
    assert loaded[4, 4, 0] < 50 and loaded[4, 4, 2] > 200  # top-left is blue
    assert loaded[27, 27, 0] < 50


def test_shorter_side_resized_then_centre_cropped(tmp_path):
    wide = np.zeros((32, 64, 3), np.uint8)
    wide[:, :16] = (0, 255, 0)
    wide[:, 16:48] = (255, 0, 0)
    wide[:, 48:] = (0, 0, 255)
    _save(Image.fromarray(wide), tmp_path / "wide.png")
    loaded = load_dataset(str(tmp_path), image_size=16).images[0].astype(int)
    assert loaded.shape == (16, 16, 3)
    assert (loaded[:, 1:-1, 0] > 240).all() and (loaded[:, 1:-1, 1:] < 15).all()


def test_skipped_files_are_reported_and_hidden_files_ignored(tmp_path):
    folder = tmp_path / "pets"
    _save(Image.new("RGB", (40, 40), (9, 9, 9)), folder / "cat" / "good.png")
    _save(Image.new("RGB", (40, 40), (9, 9, 9)), folder / "dog" / "nested" / "good.png")
    _save(Image.new("RGB", (2, 12), (9, 9, 9)), folder / "dog" / "tiny.png")
    (folder / "dog" / "notes.txt").write_text("not an image")
    _save(Image.new("RGB", (40, 40), (9, 9, 9)), folder / "cat" / "broken.jpg")
    whole = (folder / "cat" / "broken.jpg").read_bytes()
    (folder / "cat" / "broken.jpg").write_bytes(whole[: len(whole) // 2])
    _save(Image.new("RGB", (40, 40)), folder / "cat" / ".hidden.png")
    _save(Image.new("RGB", (40, 40)), folder / ".cache" / "x.png")
    _save(Image.new("RGB", (40, 40)), folder / "loose.png")

    data = load_dataset(str(folder))
    assert data.classes == ["cat", "dog"] and data.labels.tolist() == [0, 1]
    reasons = {os.path.relpath(path, folder): reason for path, reason in data.skipped}
    assert set(reasons) == {"loose.png", "cat/broken.jpg", "dog/tiny.png", "dog/notes.txt"}
    assert reasons["loose.png"] == "outside any class folder"
    assert reasons["dog/tiny.png"] == "degenerate (2x12: a side under 3 pixels)"
    assert reasons["dog/notes.txt"] == "not an image Pillow can read"
    assert reasons["cat/broken.jpg"].startswith("corrupt, truncated or unreadable")
    assert data.name == str(folder)


def test_unlabelled_folder(tmp_path):
    for i in range(3):
        _save(Image.new("RGB", (32, 32), (i, i, i)), tmp_path / f"{i}.png")
    (tmp_path / "empty_sub").mkdir()
    data = load_dataset(str(tmp_path))
    assert data.labels is None and data.classes == [] and len(data) == 3
    assert data.images[:, 0, 0, 0].tolist() == [0, 1, 2]


def test_split_folders_pick_the_split(tmp_path):
    for split, count in (("train", 3), ("val", 2)):
        for cls in ("a", "b"):
            for i in range(count):
                _save(Image.new("RGB", (32, 32)), tmp_path / split / cls / f"{i}.png")
    assert len(load_dataset(str(tmp_path), split="train")) == 6
    assert len(load_dataset(str(tmp_path), split="val")) == 4
    assert len(load_dataset(str(tmp_path), split="test")) == 4  # test falls back to val/


def test_folder_without_split_folders_serves_every_split(tmp_path):
    _save(Image.new("RGB", (32, 32)), tmp_path / "a" / "0.png")
    train = load_dataset(str(tmp_path), split="train")
    test = load_dataset(str(tmp_path), split="test")
    np.testing.assert_array_equal(train.images, test.images)


def test_folder_size_subset_is_seeded(tmp_path):
    for i in range(10):
        _save(Image.new("RGB", (32, 32), (i, 0, 0)), tmp_path / f"{i}.png")
    first = load_dataset(str(tmp_path), size=4, seed=3).images[:, 0, 0, 0].tolist()
    again = load_dataset(str(tmp_path), size=4, seed=3).images[:, 0, 0, 0].tolist()
    assert first == again and len(first) == 4 and first == sorted(first)
    assert load_dataset(str(tmp_path), size=50).images.shape[0] == 10


# ----------------------------------------------------------------------------- errors


def test_missing_path(tmp_path):
    missing = tmp_path / "nowhere"
    raises_data_error(lambda: load_dataset(str(missing)), "no such file or folder", str(missing))
    raises_data_error(lambda: load_dataset(""), "no dataset given")


def test_path_that_is_a_file(tmp_path):
    text = tmp_path / "list.txt"
    text.write_text("x")
    raises_data_error(lambda: load_dataset(str(text)), "is a file, not a folder", str(text))
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(b"\x1f\x8b")
    raises_data_error(lambda: load_dataset(str(archive)), "is an archive; extract it")


def test_empty_folder(tmp_path):
    (tmp_path / ".DS_Store").write_text("hidden")
    raises_data_error(lambda: load_dataset(str(tmp_path)), "folder is empty", str(tmp_path))


def test_folder_where_nothing_can_be_read(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    _save(Image.new("RGB", (2, 8)), tmp_path / "sliver.png")
    raises_data_error(lambda: load_dataset(str(tmp_path)), "none of the files", "(2 skipped", str(tmp_path))


def test_missing_split_folder(tmp_path):
    _save(Image.new("RGB", (32, 32)), tmp_path / "train" / "a" / "0.png")
    raises_data_error(lambda: load_dataset(str(tmp_path), split="test"), "no test/ or val/ folder", str(tmp_path))


def test_unknown_split_everywhere(tmp_path):
    write_cifar10(tmp_path / "cifar")
    _save(Image.new("RGB", (32, 32)), tmp_path / "images" / "0.png")
    for source in ("builtin", str(tmp_path / "cifar"), str(tmp_path / "images")):
        raises_data_error(lambda: load_dataset(source, split="dev"), "unknown split 'dev'", "use train, test or val")


def test_bad_sizes():
    raises_data_error(lambda: load_dataset("builtin", size=0), "at least 1")
    raises_data_error(lambda: load_dataset("builtin", image_size=0), "at least 1 pixel")


def test_data_error_is_a_user_error():
    assert issubclass(DataError, UserError)


# ----------------------------------------------------------------------------- check_batchable


def test_check_batchable_accepts_a_good_setup():
    check_batchable(make_synthetic(16), batch_size=16, bn_splits=8)
    check_batchable(make_synthetic(20), batch_size=12, bn_splits=1)


@pytest.mark.parametrize(
    "n, batch_size, bn_splits, phrases",
    [
        (10, 16, 8, ("only 10 images, fewer than one batch of 16", "lower --batch-size")),
        (40, 12, 8, ("--batch-size 12 is not a multiple of --bn-splits 8",)),
        (40, 4, 8, ("--batch-size 4 is smaller than --bn-splits 8",)),
        (40, 0, 1, ("--batch-size must be at least 1",)),
        (40, 8, 0, ("--bn-splits must be at least 1",)),
    ],
)
def test_check_batchable_errors(n, batch_size, bn_splits, phrases):
    data = make_synthetic(n)
    raises_data_error(lambda: check_batchable(data, batch_size, bn_splits), *phrases)
