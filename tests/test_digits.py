"""Tests of `--data digits` (moco_ref.data.digits): scikit-learn's handwritten digits as a dataset.

The fixed split, the labels, the images' shape and scaling, the keyword against a folder named digits,
the one line when scikit-learn is missing, and one tiny training run with an evaluation after it.
"""

from __future__ import annotations

import json
import sys

import helpers
import numpy as np
import pytest

from moco_ref.data import Dataset, load_dataset
from moco_ref.data.digits import TRAIN_SIZE, read_digits, split_indices
from moco_ref.errors import DataError, UserError

pytest.importorskip("sklearn", reason="the digits extra: pip install 'moco-ref[digits]'")

TOTAL = 1797


def hide_sklearn(monkeypatch):
    """`import sklearn` (and every sklearn.*) raises ImportError for the rest of the test."""
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")] + ["sklearn"]:
        monkeypatch.setitem(sys.modules, name, None)


# ----------------------------------------------------------------------------- the split
def test_the_split_is_1400_train_and_397_val_disjoint_and_covering_all():
    train, val = split_indices(TOTAL, "train"), split_indices(TOTAL, "val")
    assert len(train) == TRAIN_SIZE == 1400 and len(val) == 397
    assert np.intersect1d(train, val).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(TOTAL))
    assert np.array_equal(split_indices(TOTAL, "test"), val)  # test and val are one split


def test_the_split_is_the_same_on_every_call_and_for_every_seed():
    first = load_dataset("digits", "val", seed=0)
    again = load_dataset("digits", "val", seed=0)
    other_seed = load_dataset("digits", "val", seed=7)
    for other in (again, other_seed):
        assert np.array_equal(first.images, other.images) and np.array_equal(first.labels, other.labels)


def test_the_splits_hold_the_shipped_images_and_labels_at_the_split_indices():
    raw_images, raw_labels = read_digits()
    assert raw_images.shape == (TOTAL, 8, 8) and raw_images.min() == 0 and raw_images.max() == 16
    for split in ("train", "val"):
        data = load_dataset("digits", split, image_size=8)
        chosen = split_indices(TOTAL, split)
        assert np.array_equal(data.labels, raw_labels[chosen])
        # at S = 8 nothing is resized: the images are exactly round(v / 16 * 255), grey in R, G and B
        expected = np.rint(raw_images[chosen] / 16.0 * 255.0).astype(np.uint8)
        for channel in range(3):
            assert np.array_equal(data.images[..., channel], expected)


def test_labels_are_0_to_9_with_every_class_in_both_splits():
    for split in ("train", "val"):
        data = load_dataset("digits", split)
        assert data.labels.dtype == np.int64 and data.labels.min() == 0 and data.labels.max() == 9
        assert set(data.labels.tolist()) == set(range(10)), f"a class is missing from {split}"
        assert data.classes == [str(d) for d in range(10)] and data.name == "digits"


# ----------------------------------------------------------------------------- the images
def test_images_are_square_uint8_rgb_of_the_image_size():
    for image_size, split, count in ((32, "train", 1400), (16, "test", 397)):
        data = load_dataset("digits", split, image_size=image_size)
        assert isinstance(data, Dataset) and len(data) == count
        assert data.images.shape == (count, image_size, image_size, 3) and data.images.dtype == np.uint8
        assert np.array_equal(data.images[..., 0], data.images[..., 1])  # grey: one value in every channel
        assert np.array_equal(data.images[..., 0], data.images[..., 2])
        assert data.images.min() == 0 and data.images.max() == 255  # ink 0 -> 0, ink 16 -> 255


def test_the_enlarged_corners_and_a_blank_left_column_keep_their_scaled_values():
    # Enlarging 8 -> 32 (4x), the outer two output pixels of each side read only the outermost input pixel.
    raw_images, _ = read_digits()
    raw = raw_images[split_indices(TOTAL, "train")]  # (1400, 8, 8)
    images = load_dataset("digits", "train", image_size=32).images[..., 0]  # (1400, 32, 32)
    for corner, (row, column) in (("top left", (0, 0)), ("bottom right", (-1, -1))):
        scaled = np.rint(raw[:, row, column] / 16.0 * 255.0)  # (1400,): ink 0..16 -> 0..255
        block = images[:, :2, :2] if row == 0 else images[:, -2:, -2:]  # (1400, 2, 2)
        assert np.array_equal(block, np.broadcast_to(scaled[:, None, None], block.shape)), corner
    assert set(np.unique(images[:, -1, -1])) > {0, 255}  # the bottom-right corner holds ink in some images
    blank_left = ~raw[:, :, 0].any(axis=1)  # no ink in the first column
    assert blank_left.sum() > 1000
    assert (images[blank_left][:, :, :2] == 0).all()  # stays black, 2 pixels wide
    assert images[blank_left].max() == 255  # the digits themselves are still there


def test_size_keeps_a_seeded_subset_of_the_split():
    whole = load_dataset("digits", "train", image_size=8)
    part = load_dataset("digits", "train", image_size=8, seed=3, size=100)
    assert len(part) == 100
    assert np.array_equal(part.images, load_dataset("digits", "train", image_size=8, seed=3, size=100).images)
    rows = {row.tobytes() for row in whole.images}
    assert all(row.tobytes() in rows for row in part.images)  # drawn from the train split
    other = load_dataset("digits", "train", image_size=8, seed=4, size=100)
    assert not np.array_equal(part.images, other.images)


def test_an_unknown_split_is_one_line():
    with pytest.raises(DataError, match="unknown split 'dev' for the digits dataset"):
        load_dataset("digits", "dev")


# ----------------------------------------------------------------------------- the keyword and a folder
def test_the_keyword_wins_over_a_folder_named_digits_and_dot_slash_means_the_folder(tmp_path, monkeypatch):
    helpers.write_image_folder(tmp_path / "digits", train_per_class=3, val_per_class=1, size=12)
    monkeypatch.chdir(tmp_path)
    keyword = load_dataset("digits", image_size=16)
    assert len(keyword) == 1400 and keyword.classes == [str(d) for d in range(10)]
    for folder_path in ("./digits", str(tmp_path / "digits")):
        folder = load_dataset(folder_path, image_size=16)
        assert len(folder) == 6 and folder.classes == ["green", "red"]


# ----------------------------------------------------------------------------- without scikit-learn
def test_without_scikit_learn_loading_is_a_user_error_naming_the_install(monkeypatch):
    hide_sklearn(monkeypatch)
    with pytest.raises(UserError) as info:
        load_dataset("digits")
    message = str(info.value)
    assert "\n" not in message and "scikit-learn" in message
    assert "pip install 'moco-ref[digits]'" in message and "pip install scikit-learn" in message


def test_without_scikit_learn_train_is_one_line_and_exit_2(monkeypatch, tmp_path, capsys):
    hide_sklearn(monkeypatch)
    code, out, err = helpers.run_cli(["train", "--data", "digits", "--out", tmp_path / "run"], capsys)
    helpers.error_line(code, err, "--data digits needs scikit-learn", "pip install scikit-learn")
    assert "Traceback" not in err and out == ""


# ----------------------------------------------------------------------------- end to end
TINY = ["--image-size", "16", "--arch", "resnet10", "--width", "2", "--moco-k", "200", "--moco-dim", "16"]


def test_train_one_epoch_on_digits_then_eval_knn(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["train", "--data", "digits", "--epochs", "1", "-b", "100", "--bn-splits", "2", *TINY, "--out", run_dir]
    code, _, err = helpers.run_cli(args, capsys)
    assert code == 0, err
    assert "on digits (1400 images)" in err
    assert json.loads((run_dir / "config.json").read_text())["data"] == "digits"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in records if r.get("kind") == "final"]
    assert final and 0 <= final[-1]["knn_top1"] <= 100

    code, out, err = helpers.run_cli(["eval", "knn", "--checkpoint", run_dir, "-k", "20"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["test_images"] == 397 and 0 <= result["top1"] <= 100
