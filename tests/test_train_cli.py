"""End-to-end tests of the ``moco-ref`` command line: train, gradcheck, eval knn, and every user error.

Training runs on a tiny folder of images written into a temporary folder (2 classes, 12 training and
4 validation images each, 20 x 20 pixels, cropped to 16), resnet10 of width 2, batch 8 in 2 BatchNorm
splits, K = 20: a run takes well under a second.  The CLI is called in-process through
``moco_ref.cli.main.main`` (exit code from SystemExit, output from capsys) and, at least once, as a real
``python -m moco_ref.cli.main`` subprocess.

Every error a user can cause must end in exit code 2 and one line on stderr naming the problem,
never a traceback.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import helpers
import numpy as np
import pytest

from moco_ref.run.checkpoint import load_checkpoint

# Tiny settings: every run of this file uses them (plus --data and --out).
TINY = [
    "--image-size",
    "16",
    "--arch",
    "resnet10",
    "--width",
    "2",
    "-b",
    "8",
    "--moco-k",
    "20",
    "--moco-dim",
    "16",
    "--bn-splits",
    "2",
    "--log-every",
    "1",
]


def write_image_folder(root: Path, train_per_class: int = 12, val_per_class: int = 4, size: int = 20) -> Path:
    """root/train/{red,green}/*.png and root/val/{red,green}/*.png: noisy images, one dominant colour per class."""
    return helpers.write_image_folder(root, train_per_class, val_per_class, size, seed=0)


def subprocess_env() -> dict:
    """The environment for CLI subprocesses: this interpreter's, with one BLAS thread.

    One thread keeps tiny runs fast when the test machine is busy (several BLAS threads spinning on two
    cores made width-2 convolutions ten times slower); it does not change what is tested.
    """
    return {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """Runs ``moco-ref ARGS`` in-process; returns (exit code, stdout, stderr)."""
    return helpers.run_cli(args, capsys)


error_line = helpers.error_line


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data):
    """One complete 2-epoch run, started as a real subprocess: (run dir, completed process)."""
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "moco_ref.cli.main",
            "train",
            "--data",
            str(data),
            *TINY,
            "--epochs",
            "2",
            "--knn-every",
            "1",
            "--seed",
            "3",
            "--out",
            str(run_dir),
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    return run_dir, process


# ------------------------------------------------------------------------ a good run


def test_subprocess_run_exits_0_and_prints_the_summary(finished_run):
    run_dir, process = finished_run
    assert process.returncode == 0, process.stderr
    assert "Traceback" not in process.stderr
    lines = process.stdout.strip().splitlines()
    assert len(lines) == 1, process.stdout  # progress goes to stderr, the summary to stdout
    summary = lines[0]
    assert summary.startswith("done: 2 epoch(s), 6 steps, loss ")
    assert "kNN top-1 " in summary and "(untrained encoder: " in summary
    assert summary.endswith(f"saved in {run_dir}")
    assert "training MoCo resnet10 width 2" in process.stderr
    assert "3 steps" in process.stderr  # 24 images // batch 8
    # not a terminal: one plain line every --log-every (1) step, with the times, the metrics, img/s and data share
    shown = [line for line in process.stderr.splitlines() if line.startswith("epoch 1/2 ")]
    assert [line.split(" [")[0] for line in shown] == ["epoch 1/2 1/3", "epoch 1/2 2/3", "epoch 1/2 3/3"]
    assert re.match(
        r"^epoch 1/2 3/3 \[\d\d:\d\d<00:00\], run left \d\d:\d\d, loss \d+\.\d{3} \(chance 3\.045\), "
        r"acc \d+\.\d% \(chance 4\.8%\), lr 0\.0300, \d+ img/s, data \d+ %$",
        shown[-1],
    ), shown[-1]
    # the epoch's line: the loss beside ln(K+1) = ln 21, the instance accuracy beside 1/(K+1)
    epoch_lines = [line for line in process.stderr.splitlines() if line.startswith("epoch 1: ")]
    assert len(epoch_lines) == 1 and re.match(
        r"^epoch 1: loss \d+\.\d{4} \(chance 3\.0445\) acc \d+\.\d% "
        r"\(chance 4\.8%\) kNN top-1 ",
        epoch_lines[0],
    ), epoch_lines


def test_run_directory_holds_config_metrics_and_checkpoint(finished_run):
    run_dir, _ = finished_run
    names = ["checkpoint_last.npz", "config.json", "metrics.jsonl"]
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock", *names]  # .lock: free once the run ended
    holder = json.loads((run_dir / ".lock").read_text())
    assert set(holder) == {"pid", "host", "since"}


def test_config_json_records_the_flags_and_the_defaults(finished_run, data):
    run_dir, _ = finished_run
    config = json.loads((run_dir / "config.json").read_text())
    assert config["data"] == str(data)
    expected = {
        "image_size": 16,
        "arch": "resnet10",
        "width": 2,
        "batch_size": 8,
        "K": 20,
        "dim": 16,
        "bn_splits": 2,
        "epochs": 2,
        "knn_every": 1,
        "seed": 3,
        "log_every": 1,
        # defaults that were not given
        "lr": 0.03,
        "m": 0.99,
        "T": 0.2,
        "weight_decay": 5e-4,
        "cos": True,
        "backend": "numpy",
        "dtype": "float32",
        "aug": "cifar",
        "mlp": False,
        "symmetric": False,
    }
    assert {k: config[k] for k in expected} == expected


def test_metrics_jsonl_has_step_knn_epoch_and_final_records(finished_run):
    run_dir, _ = finished_run
    records = read_metrics(run_dir)
    kinds = [r["kind"] for r in records]
    assert kinds == ["knn", "instruments"] + ["step"] * 3 + ["epoch", "instruments"] + ["step"] * 3 + [
        "epoch",
        "instruments",
        "final",
    ]

    untrained = records[0]
    assert untrained["untrained"] is True and untrained["global_step"] == 0
    assert 0.0 <= untrained["knn_top1"] <= 100.0

    steps = [r for r in records if r["kind"] == "step"]
    assert [r["global_step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    for r in steps:
        assert np.isfinite(r["loss"]) and r["loss"] > 0
        assert 0.0 <= r["acc1"] <= 100.0
        assert r["images_per_s"] > 0
        assert 0 <= r["data_share"] <= 1  # of the interval's wall time, in batch and views
        assert r["m"] == 0.99  # the fixed --moco-m (no --moco-m-cos)
    # cosine schedule, set once per epoch: lr·½(1 + cos(π·epoch/epochs))
    assert [r["lr"] for r in steps] == pytest.approx([0.03] * 3 + [0.015] * 3)  # default --lr 0.03

    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [(r["epoch"], r["global_step"], r["complete"]) for r in epochs] == [(0, 3, True), (1, 6, True)]
    assert all(0.0 <= r["knn_top1"] <= 100.0 for r in epochs)  # --knn-every 1
    assert epochs[1]["loss"] == pytest.approx(np.mean([r["loss"] for r in steps[3:]]))

    measured = [r for r in records if r["kind"] == "instruments"]
    assert [(r["epoch"], r["global_step"]) for r in measured] == [(0, 0), (1, 3), (2, 6)]
    assert measured[0]["key_drift"] is None and all(np.isfinite(r["key_drift"]) for r in measured[1:])
    assert all(
        np.isfinite(r[name])
        for r in measured
        for name in ("alignment", "uniformity", "feature_std", "logit_pos", "logit_neg")
    )

    final = records[-1]
    assert final["epoch"] == 2 and final["global_step"] == 6
    assert final["knn_top1"] == epochs[-1]["knn_top1"]
    assert final["knn_top1_untrained"] == untrained["knn_top1"]


def test_the_checkpoint_records_where_the_run_ended(finished_run):
    run_dir, _ = finished_run
    arrays, meta = load_checkpoint(run_dir / "checkpoint_last.npz")
    assert (meta["epoch"], meta["step_in_epoch"], meta["global_step"]) == (2, 0, 6)
    assert meta["arch"] == "resnet10" and meta["config"]["width"] == 2
    assert arrays["queue"].shape == (16, 20)  # (D, K)
    assert int(arrays["queue_ptr"][0]) == (6 * 8) % 20  # 8: the ring buffer wrapped twice
    assert any(k.startswith("encoder_q.") for k in arrays) and any(k.startswith("encoder_k.") for k in arrays)
    assert any(k.startswith("optimizer.") for k in arrays)


def test_python_dash_m_help_and_version():
    process = subprocess.run(
        [sys.executable, "-m", "moco_ref.cli.main", "train", "--help"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
    )
    assert process.returncode == 0, process.stderr
    assert "Usage: moco-ref train" in process.stdout and "--moco-k" in process.stdout
    for args in (["--help"], ["--version"]):
        code_out = subprocess.run(
            [sys.executable, "-m", "moco_ref.cli.main", *args],
            capture_output=True,
            text=True,
            env=subprocess_env(),
            timeout=60,
        )
        assert code_out.returncode == 0, code_out.stderr
    assert importlib.metadata.version("moco-ref") in code_out.stdout


def test_the_console_script_is_installed():
    script = shutil.which("moco-ref")
    if script is None:
        pytest.skip("the moco-ref console script is not on PATH (package not pip-installed)")
    process = subprocess.run(
        [script, "train", "--resume", "/nonexistent/run"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
    )
    assert process.returncode == 2
    assert process.stderr.strip() == (
        "moco-ref: error: no checkpoint at /nonexistent/run: no run at /nonexistent/run; "
        "give a run directory of moco-ref train or a checkpoint file"
    )


def test_in_process_run_with_max_steps_stops_mid_epoch(capsys, tmp_path, data):
    code, out, err = run_cli(
        capsys,
        "train",
        "--data",
        data,
        *TINY,
        "--epochs",
        "2",
        "--max-steps",
        "2",
        "--knn-every",
        "0",
        "--out",
        tmp_path / "r",
    )
    assert code == 0, err
    assert out.startswith("done: 0 epoch(s), 2 steps")
    assert "kNN" not in out  # the monitor is off
    records = read_metrics(tmp_path / "r")
    assert [r["kind"] for r in records] == ["step", "step", "epoch", "final"]
    assert records[2]["complete"] is False
    _, meta = load_checkpoint(tmp_path / "r" / "checkpoint_last.npz")
    assert (meta["epoch"], meta["step_in_epoch"], meta["global_step"]) == (0, 2, 2)


def test_builtin_data_is_the_default(capsys, tmp_path):
    code, out, err = run_cli(
        capsys,
        "train",
        "--width",
        "2",
        "-b",
        "8",
        "--bn-splits",
        "2",
        "--moco-k",
        "16",
        "--moco-dim",
        "8",
        "--image-size",
        "16",
        "--max-steps",
        "1",
        "--knn-every",
        "0",
        "--out",
        tmp_path / "r",
    )
    assert code == 0, err
    assert "on builtin (2000 images)" in err and "250 steps" in err
    assert json.loads((tmp_path / "r" / "config.json").read_text())["data"] == "builtin"


def test_save_every_keeps_numbered_checkpoints(capsys, tmp_path, data):
    code, _, err = run_cli(
        capsys,
        "train",
        "--data",
        data,
        *TINY,
        "--epochs",
        "2",
        "--knn-every",
        "0",
        "--save-every",
        "1",
        "--out",
        tmp_path / "r",
    )
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "r").glob("*.npz"))
    assert names == ["checkpoint_0001.npz", "checkpoint_0002.npz", "checkpoint_last.npz"]
    assert load_checkpoint(tmp_path / "r" / "checkpoint_0001.npz")[1]["global_step"] == 3


def test_resume_continues_to_more_epochs(capsys, tmp_path, data):
    run_dir = tmp_path / "r"
    assert (
        run_cli(capsys, "train", "--data", data, *TINY, "--epochs", "1", "--knn-every", "0", "--out", run_dir)[0] == 0
    )
    code, out, err = run_cli(capsys, "train", "--resume", run_dir, "--epochs", "2")
    assert code == 0, err
    assert f"resuming {run_dir / 'checkpoint_last.npz'} at epoch 2, step 3" in err
    assert out.startswith("done: 2 epoch(s), 6 steps")
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 2
    steps = [r["global_step"] for r in read_metrics(run_dir) if r["kind"] == "step"]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_a_fresh_run_does_not_mix_in_records_of_an_earlier_failed_start(capsys, tmp_path, data):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    stale = {"kind": "knn", "epoch": 0, "global_step": 0, "knn_top1": -1.0, "untrained": True}
    (run_dir / "metrics.jsonl").write_text(json.dumps(stale) + "\n")  # no checkpoint: not a run yet
    (run_dir / ".lock").write_text("")  # the first file of every run: the start that failed made it
    code, _, err = run_cli(
        capsys, "train", "--data", data, *TINY, "--epochs", "1", "--knn-every", "1", "--out", run_dir
    )
    assert code == 0, err
    records = read_metrics(run_dir)
    assert [r["kind"] for r in records].count("knn") == 1
    assert records[-1]["knn_top1_untrained"] == records[0]["knn_top1"] >= 0


# ------------------------------------------------------------------------ gradcheck, eval


def test_gradcheck_passes_and_prints_its_table(capsys):
    code, out, err = run_cli(capsys, "gradcheck")
    assert code == 0, out + err
    lines = out.strip().splitlines()
    assert lines[0].split() == ["check", "max", "rel.", "error", "tolerance", "result"]
    rows = lines[1:-1]
    assert rows and all(row.split()[-1] == "pass" for row in rows)
    assert lines[-1] == f"{len(rows)} passed, 0 failed"


def test_eval_knn_prints_json_with_top1(capsys, finished_run):
    run_dir, _ = finished_run
    code, out, err = run_cli(capsys, "eval", "knn", "--checkpoint", run_dir, "-k", "5")
    assert code == 0, err
    result = json.loads(out)
    assert result["k"] == 5 and result["bank_images"] == 24 and result["test_images"] == 8
    assert 0.0 <= result["top1"] <= 100.0
    assert result["correct"] == round(result["top1"] * 8 / 100)


def test_eval_knn_with_k_200_matches_the_training_monitor(capsys, finished_run):
    run_dir, _ = finished_run
    code, out, err = run_cli(capsys, "eval", "knn", "--checkpoint", run_dir / "checkpoint_last.npz")
    assert code == 0, err
    assert json.loads(out)["top1"] == read_metrics(run_dir)[-1]["knn_top1"]


def test_eval_knn_of_a_missing_checkpoint(capsys, tmp_path):
    error_line(*run_cli(capsys, "eval", "knn", "--checkpoint", tmp_path / "none.npz")[::2], "no checkpoint at")


# ---------------------------------------------------------------------------- bad input


def train_error(capsys, data, *args) -> tuple[int, str]:
    code, out, err = run_cli(capsys, "train", "--data", data, *TINY, "--epochs", "1", "--knn-every", "0", *args)
    assert out == "", out
    return code, err


def test_missing_data_path(capsys, tmp_path):
    code, err = train_error(capsys, tmp_path / "nowhere", "--out", tmp_path / "r")
    error_line(code, err, "no such file or folder", str(tmp_path / "nowhere"))
    assert not (tmp_path / "r").exists()


def test_empty_folder(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code, err = train_error(capsys, tmp_path / "empty", "--out", tmp_path / "r")
    error_line(code, err, "empty", str(tmp_path / "empty"))


def test_folder_of_only_non_image_files(capsys, tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("hello")
    (folder / "table.csv").write_text("a,b\n1,2\n")
    code, err = train_error(capsys, folder, "--out", tmp_path / "r")
    error_line(code, err, "none of the files", "2 skipped", "not an image")


def test_a_corrupt_image_is_skipped_with_a_warning_and_training_runs(capsys, tmp_path, data):
    folder = tmp_path / "images"
    shutil.copytree(data, folder)
    good = (folder / "train" / "red" / "000.png").read_bytes()
    broken = folder / "train" / "red" / "broken.png"
    broken.write_bytes(good[: len(good) // 3])  # a truncated PNG
    code, out, err = run_cli(
        capsys, "train", "--data", folder, *TINY, "--epochs", "1", "--knn-every", "0", "--out", tmp_path / "r"
    )
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert any(str(broken) in line for line in warnings), err
    assert any("skipped 1 file(s)" in line for line in warnings), err
    assert "(24 images)" in err and out.startswith("done: 1 epoch(s), 3 steps")


def test_images_smaller_than_the_image_size_are_scaled_up_and_counted(capsys, tmp_path, data):
    code, out, err = run_cli(
        capsys,
        "train",
        "--data",
        data,
        *TINY,
        "--image-size",
        "32",
        "--epochs",
        "1",
        "--knn-every",
        "0",
        "--out",
        tmp_path / "r",
    )  # the images are 20 x 20
    assert code == 0, err
    assert f"note: scaled up 24 image(s) of {data} smaller than 32x32" in err and "(24 images)" in err


def test_fewer_images_than_one_batch(capsys, tmp_path, data):
    code, err = train_error(capsys, data, "-b", "32", "--out", tmp_path / "r")
    error_line(code, err, "24 images", "fewer than one batch of 32", "--batch-size")


@pytest.mark.parametrize(
    "batch, splits, phrase",
    [
        ("6", "4", "--batch-size 6 is not a multiple of --bn-splits 4"),
        ("2", "4", "--batch-size 2 is smaller than --bn-splits 4"),
    ],
)
def test_batch_that_the_bn_splits_cannot_divide(capsys, tmp_path, data, batch, splits, phrase):
    code, err = train_error(capsys, data, "-b", batch, "--bn-splits", splits, "--out", tmp_path / "r")
    error_line(code, err, phrase)


@pytest.mark.parametrize(
    "flag, value, phrase",
    [
        ("--lr", "-1", "Invalid value for '--lr'"),
        ("--arch", "resnet99", "Invalid value for '--arch'"),
        ("--schedule", "120,abc", "Invalid value for '--schedule'"),
        ("--moco-m", "1.5", "Invalid value for '--moco-m'"),
        ("--epochs", "zero", "Invalid value for '--epochs'"),
    ],
)
def test_bad_flag_value_is_a_usage_error(capsys, tmp_path, data, flag, value, phrase):
    code, err = train_error(capsys, data, flag, value, "--out", tmp_path / "r")
    assert code == 2 and "Traceback" not in err
    assert f"Error: {phrase}" in err
    assert not (tmp_path / "r").exists()


def test_unknown_flag_is_a_usage_error(capsys):
    code, _, err = run_cli(capsys, "train", "--no-such-flag")
    assert code == 2 and "No such option" in err and "--no-such-flag" in err


def test_cupy_backend_without_cupy(capsys, tmp_path, data):
    helpers.skip_if_cupy_installed()
    code, err = train_error(capsys, data, "--backend", "cupy", "--out", tmp_path / "r")
    error_line(code, err, "CuPy", "pip install 'moco-ref[gpu]'")


def test_resume_of_a_missing_path(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path / "gone")
    error_line(code, err, "no checkpoint at", str(tmp_path / "gone"))


def test_resume_of_a_folder_without_a_checkpoint(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path)
    error_line(code, err, "no checkpoint at", str(tmp_path / "checkpoint_last.npz"))


@pytest.mark.parametrize("content", [b"garbage\n", b"", b"PK\x03\x04truncated"], ids=["text", "empty", "zip-head"])
def test_resume_of_a_garbage_file(capsys, tmp_path, content):
    (tmp_path / "checkpoint_last.npz").write_bytes(content)
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path / "checkpoint_last.npz")
    line = error_line(code, err, str(tmp_path / "checkpoint_last.npz"), "not a moco-ref checkpoint")
    assert "allow_pickle" not in line  # no advice to load an unknown file unsafely


def snapshot(run_dir: Path) -> dict:
    """Every file of a run directory: name -> (bytes, modification time)."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(run_dir.iterdir())}


def test_resume_lists_each_flag_it_cannot_change_with_both_values(capsys, tmp_path, finished_run):
    run_dir = tmp_path / "copy"
    shutil.copytree(finished_run[0], run_dir)
    before = snapshot(run_dir)
    code, out, err = run_cli(
        capsys,
        "train",
        "--resume",
        run_dir,
        "--arch",
        "resnet18",
        "--width",
        "4",
        "--moco-k",
        "20",
        "--mlp",
        "--epochs",
        "3",
    )
    line = error_line(
        code,
        err,
        "--resume cannot change ",
        "--arch (the run's: resnet10, given: resnet18)",
        "--width (the run's: 2, given: 4)",
        "--mlp (the run's: off, given: on)",
        "only --epochs, --backend, --knn-every, --log-every, --max-steps, --save-every, --tensorboard may change",
    )
    assert "--moco-k" not in line and "--epochs (" not in line  # the same K, and a resumable flag
    assert snapshot(run_dir) == before


def test_resume_accepts_resumable_flags_and_the_run_s_own_values(capsys, tmp_path, finished_run):
    run_dir = tmp_path / "copy"
    shutil.copytree(finished_run[0], run_dir)
    code, out, err = run_cli(
        capsys,
        "train",
        "--resume",
        run_dir,
        "--arch",
        "resnet10",
        "--moco-k",
        "20",
        "--epochs",
        "3",
        "--knn-every",
        "0",
        "--log-every",
        "2",
    )
    assert code == 0, err
    assert out.startswith("done: 3 epoch(s), 9 steps")
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["epochs"], config["knn_every"], config["log_every"]) == (3, 0, 2)


@pytest.mark.parametrize(
    "flags", [[], ["--epochs", "1"], ["--max-steps", "4"]], ids=["finished", "past-epochs", "past-max-steps"]
)
def test_resume_of_a_run_already_there_says_there_is_nothing_to_do(capsys, tmp_path, finished_run, flags):
    """A run at epoch 2 (6 steps) resumed to --epochs 2 or 1, or to --max-steps 4: one line, exit 0, no file touched."""
    run_dir = tmp_path / "copy"
    shutil.copytree(finished_run[0], run_dir)
    before = snapshot(run_dir)
    code, out, err = run_cli(capsys, "train", "--resume", run_dir, *flags)
    assert code == 0 and err == "", err
    assert out.startswith(f"nothing to do: {run_dir / 'checkpoint_last.npz'} has trained "), out
    assert "nothing was changed" in out and len(out.strip().splitlines()) == 1
    assert ("--max-steps is 4" in out) if "--max-steps" in flags else ("2 epoch(s) (6 steps)" in out)
    assert snapshot(run_dir) == before


def test_resume_refuses_a_preset(capsys, tmp_path, finished_run):
    code, _, err = run_cli(capsys, "train", "--resume", finished_run[0], "--preset", "cifar-demo")
    error_line(code, err, "--preset cannot be given with --resume", "only --epochs")


def test_a_new_run_into_a_folder_holding_a_run_is_refused(capsys, tmp_path, finished_run, data):
    run_dir = tmp_path / "copy"
    shutil.copytree(finished_run[0], run_dir)
    checkpoint = run_dir / "checkpoint_last.npz"
    before, mtime = digest(checkpoint), checkpoint.stat().st_mtime_ns
    metrics = (run_dir / "metrics.jsonl").read_text()
    code, err = train_error(capsys, data, "--out", run_dir)
    error_line(code, err, f"{run_dir} already holds a run", f"--resume {run_dir}")
    assert digest(checkpoint) == before and checkpoint.stat().st_mtime_ns == mtime
    assert (run_dir / "metrics.jsonl").read_text() == metrics


def test_user_errors_from_a_subprocess_are_one_line(tmp_path):
    """The console entry point itself (not only main()) turns a user error into one line and exit 2."""
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "moco_ref.cli.main",
            "train",
            "--data",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
    )
    assert process.returncode == 2 and process.stdout == ""
    assert process.stderr.strip().splitlines() == [
        f"moco-ref: error: no such file or folder: {tmp_path / 'nowhere'} (give 'builtin', 'digits', a CIFAR folder "
        f"or a folder of images)"
    ]
