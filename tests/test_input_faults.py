"""Inputs a user brings that are not plain: a batch too small for BatchNorm's statistics, other libraries'
thread-count variables, images beyond Pillow's pixel limit, images smaller than --image-size and degenerate
ones.  Each ends in the project's own line (an error with exit 2, or a warning and the run goes on), never a
traceback, never a third-party warning.

Command-line faults that concern what happens before NumPy or Numba loads run as ``python -m moco_ref``
subprocesses (their environment is the fault) on a tiny folder of images: resnet10 width 2, 8×8 crops,
batch 8, three steps.  Python's own warnings stay on (no PYTHONWARNINGS=ignore), so that a library's
warning would show.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import helpers
import numpy as np
import pytest
from PIL import Image

from moco_ref.data import load_dataset
from moco_ref.errors import UserError
from moco_ref.models import build_encoder
from moco_ref.run.batchnorm_values import check_batchnorm_values
from moco_ref.run.config import TrainConfig
from moco_ref.run.runtime import MOST_THREADS_PER_CORE, clean_thread_counts

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--image-size",
    "8",
    "--width",
    "2",
    "-b",
    "8",
    "--moco-k",
    "16",
    "--moco-dim",
    "8",
    "--bn-splits",
    "2",
    "--epochs",
    "1",
    "--knn-every",
    "0",
]
THIRD_PARTY_WORDS = ("Traceback", "Warning:", "warnings.warn", "site-packages")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return helpers.write_image_folder(tmp_path_factory.mktemp("faults") / "images", size=20)


def run_module(args, **environment) -> tuple[int, str, str]:
    """``python -m moco_ref ARGS`` with this environment plus ``environment`` and one BLAS thread unless given;
    (exit code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS",) and not k.endswith("_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {"OPENBLAS_NUM_THREADS": "1", **env, **environment}
    done = subprocess.run(
        [sys.executable, "-m", "moco_ref", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def assert_no_third_party_text(err: str) -> None:
    for word in THIRD_PARTY_WORDS:
        assert word not in err, f"{word!r} on stderr:\n{err}"


# ------------------------------------------------------------------ item 4: BatchNorm's statistics
def test_a_batchnorm_that_would_see_one_value_per_channel_is_refused_before_the_first_step(capsys, tmp_path, data):
    """8×8 crops leave layer4 a 1×1 output; 8 images in 8 BatchNorm groups give it one value per channel."""
    run = tmp_path / "run"
    code, _out, err = helpers.run_cli(["train", "--data", data, *TINY, "--bn-splits", "8", "--out", run], capsys)
    line = helpers.error_line(
        code,
        err,
        "BatchNorm layer4.0.bn1",
        "1 value per channel",
        "--batch-size 8",
        "--bn-splits 8",
        "--image-size 9 or more",
        "Expected more than 1 value per channel",
    )
    assert not run.exists(), line  # refused before anything is written


def test_the_refused_configuration_is_the_one_whose_output_no_longer_depends_on_its_input():
    """With one image per group and a 1×1 output, every layer4 BatchNorm outputs β: two different batches give
    the same features.  Two images per group, or a 2×2 output, and the features differ."""
    rng = np.random.default_rng(0)

    def spread(splits, size):
        encoder = build_encoder("resnet10", dim=4, width=2, bn_splits=splits, dtype="float64")
        a = encoder.forward(rng.standard_normal((4, 3, size, size)), training=True).out
        b = encoder.forward(rng.standard_normal((4, 3, size, size)), training=True).out
        return float(np.abs(a - b).max())

    assert spread(4, 8) < 1e-12
    assert spread(2, 8) > 1e-3 and spread(4, 9) > 1e-3
    for splits, size, refused in ((4, 8, True), (2, 8, False), (4, 9, False)):
        config = TrainConfig(batch_size=4, bn_splits=splits, image_size=size, width=2)
        if refused:
            with pytest.raises(UserError, match="layer4.0.bn1"):
                check_batchnorm_values(config)
        else:
            check_batchnorm_values(config)


def test_data_parallel_counts_the_images_each_process_normalises():
    """-b 16 over 2 processes in 8 groups: one image per group on each process, refused; on one process, two."""
    config = TrainConfig(batch_size=16, bn_splits=8, image_size=8, width=2)
    check_batchnorm_values(config, processes=1)
    with pytest.raises(UserError, match=r"--batch-size 16 / 2 processes / --bn-splits 8"):
        check_batchnorm_values(config, processes=2)


# ------------------------------------------------------------------ item 5: other libraries' variables
@pytest.mark.parametrize("value", ["abc", "0", "-3", "", "1.5", "4,2", "+2"])
def test_a_thread_count_that_is_not_a_count_is_removed_with_one_line(value):
    env = {"NUMBA_NUM_THREADS": value, "MKL_NUM_THREADS": "2"}
    lines = clean_thread_counts(env, cores=2)
    assert env == {"MKL_NUM_THREADS": "2"}
    assert len(lines) == 1 and f"NUMBA_NUM_THREADS={value!r}" in lines[0] and "ignored" in lines[0], lines


def test_an_absurd_thread_count_is_lowered_to_a_few_threads_a_core():
    most = MOST_THREADS_PER_CORE * 2
    env = {"NUMBA_NUM_THREADS": "100000", "OMP_NUM_THREADS": "4,100000", "OPENBLAS_NUM_THREADS": str(most)}
    lines = clean_thread_counts(env, cores=2)
    assert env == {"NUMBA_NUM_THREADS": str(most), "OMP_NUM_THREADS": f"4,{most}", "OPENBLAS_NUM_THREADS": str(most)}
    assert len(lines) == 2 and all("lowered to" in line for line in lines), lines
    assert "NUMBA_NUM_THREADS=100000" in lines[0] and "2 cores" in lines[0]


@pytest.mark.parametrize(
    "variable, value, phrase",
    [
        ("NUMBA_NUM_THREADS", "abc", "ignored"),
        ("NUMBA_NUM_THREADS", "0", "ignored"),
        ("NUMBA_NUM_THREADS", "", "ignored"),
        ("NUMBA_NUM_THREADS", "100000", "lowered to"),
        ("OMP_NUM_THREADS", "-3", "ignored"),
        ("OPENBLAS_NUM_THREADS", "1.5", "ignored"),
        ("MKL_NUM_THREADS", "0", "ignored"),
    ],
)
def test_train_with_a_bad_thread_count_says_so_in_one_line_and_trains(tmp_path, data, variable, value, phrase):
    code, out, err = run_module(["train", "--data", data, *TINY, "--out", tmp_path / "run"], **{variable: value})
    assert code == 0 and out.startswith("done: 1 epoch(s), 3 steps"), err
    assert_no_third_party_text(err)
    said = [line for line in err.splitlines() if variable in line]
    assert len(said) == 1 and said[0].startswith(f"moco-ref: warning: {variable}=") and phrase in said[0], err


def test_a_threading_layer_numba_cannot_start_is_one_error_line(tmp_path, data):
    code, _out, err = run_module(
        ["train", "--data", data, *TINY, "--out", tmp_path / "run"], NUMBA_THREADING_LAYER="bogus"
    )
    assert code == 2, err
    assert_no_third_party_text(err)
    lines = err.strip().splitlines()
    assert len(lines) <= 3 and lines[-1].startswith("moco-ref: error: Numba's threading layer 'bogus'"), err
    assert "MOCO_REF_NUMBA=0" in lines[-1] and not (tmp_path / "run" / "checkpoint_last.npz").exists()


# ------------------------------------------------------------------ item 5: Pillow's decompression bombs
def test_images_beyond_pillows_pixel_limit_are_skipped_with_the_loaders_line(tmp_path):
    """A 10000×10000 image passes Pillow's limit (warning), a 20000×10000 one twice it (error): both skipped,
    each named, and no warning of Pillow's escapes."""
    folder = tmp_path / "photos"
    helpers.write_image_folder(folder, train_per_class=2, val_per_class=1, size=12)
    big, bigger = folder / "train" / "red" / "big.png", folder / "train" / "green" / "bigger.png"
    Image.new("1", (10_000, 10_000)).save(big)  # 1 bit a pixel: a small file
    Image.new("1", (20_000, 10_000)).save(bigger)
    assert 10_000 * 10_000 > Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_dataset(str(folder), image_size=8)
    assert not caught, [str(w.message) for w in caught]
    assert len(loaded) == 4
    reasons = dict(loaded.skipped)
    assert reasons[str(big)].startswith("too many pixels (100,000,000 pixels, beyond Pillow's")
    assert reasons[str(bigger)].startswith("too many pixels (200,000,000 pixels")
    assert any(str(big) in note for note in loaded.load_notes())


def test_train_on_a_folder_with_a_decompression_bomb_names_the_file_and_trains(tmp_path, data):
    folder = tmp_path / "images"
    helpers.write_image_folder(folder, size=20)
    bomb = folder / "train" / "red" / "bomb.png"
    Image.new("P", (10_000, 10_000)).save(bomb)
    code, out, err = run_module(["train", "--data", folder, *TINY, "--out", tmp_path / "run"])
    assert code == 0 and out.startswith("done: 1 epoch(s), 3 steps"), err
    assert_no_third_party_text(err)
    assert f"warning: skipped {bomb}: too many pixels" in err and "DecompressionBomb" not in err


# ------------------------------------------------------------------ item 6: any image size
def test_a_folder_of_28_pixel_images_trains_at_the_default_image_size(capsys, tmp_path):
    folder = helpers.write_image_folder(tmp_path / "mnist-like", size=28)
    assert TrainConfig().image_size == 32
    code, out, err = helpers.run_cli(
        [
            "train",
            "--data",
            folder,
            "--width",
            "2",
            "-b",
            "8",
            "--moco-k",
            "16",
            "--moco-dim",
            "8",
            "--epochs",
            "1",
            "--knn-every",
            "0",
            "--out",
            tmp_path / "run",
        ],
        capsys,
    )
    assert code == 0 and out.startswith("done: 1 epoch(s), 3 steps"), err
    assert f"note: scaled up 24 image(s) of {folder} smaller than 32x32 (--image-size 32)" in err.splitlines()
    assert "skipped" not in err


def test_a_small_image_is_scaled_up_to_the_image_size_as_torchvision_resizes():
    """A 4×4 image of one colour per quadrant becomes 16×16 with the quadrants where they were."""
    from moco_ref.data.images import resize_center_crop

    small = np.zeros((4, 4, 3), np.uint8)
    small[:2, :2], small[:2, 2:], small[2:, :2], small[2:, 2:] = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)
    big = resize_center_crop(Image.fromarray(small), 16).astype(int)
    assert big.shape == (16, 16, 3)
    assert (big[:6, :6] == (255, 0, 0)).all() and (big[10:, 10:] == (255, 255, 0)).all()


@pytest.mark.parametrize(
    "size, reason",
    [
        ((1, 40), "degenerate (1x40: a side under 3 pixels)"),
        ((2, 2), "degenerate (2x2: a side under 3 pixels)"),
        ((400, 10), "degenerate (400x10: one side more than 20 times the other)"),
    ],
)
def test_degenerate_images_are_skipped_with_a_line_naming_each(tmp_path, size, reason):
    folder = tmp_path / "photos"
    helpers.write_image_folder(folder, train_per_class=2, val_per_class=1, size=12)
    odd = folder / "train" / "red" / "odd.png"
    Image.new("RGB", size, (9, 9, 9)).save(odd)
    loaded = load_dataset(str(folder), image_size=8)
    assert loaded.skipped == [(str(odd), reason)] and len(loaded) == 4
    assert f"warning: skipped {odd}: {reason}" in loaded.load_notes()


def test_the_smallest_and_the_longest_images_still_accepted_are_scaled_and_kept(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (3, 3), (9, 9, 9)).save(folder / "three.png")
    Image.new("RGB", (200, 10), (9, 9, 9)).save(folder / "long.png")
    loaded = load_dataset(str(folder), image_size=16)
    assert len(loaded) == 2 and loaded.skipped == [] and loaded.scaled_up == 2


def test_a_folder_of_only_degenerate_images_is_one_error_line(capsys, tmp_path):
    folder = tmp_path / "lines"
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (1, 30 + i)).save(folder / cls / f"{i}.png")
    code, _out, err = helpers.run_cli(["train", "--data", folder, *TINY, "--out", tmp_path / "run"], capsys)
    helpers.error_line(code, err, "none of the files", "8 skipped", "degenerate (1x30: a side under 3 pixels)")
