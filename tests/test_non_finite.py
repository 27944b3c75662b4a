"""Non-finite numbers, as a user meets them: NaN and ±inf given to a float flag, a checkpoint that holds them
(in either encoder, the queue, a BatchNorm statistic, an optimiser buffer, its configuration), and a run that
diverges.  Each ends in one line and a non-zero exit; a refused checkpoint leaves its run directory byte for
byte as it was; a diverged run names the step where the value first became non-finite, prints no NumPy
warning, and keeps its last finite checkpoint, metrics.jsonl and config.json.

In-process runs use a tiny folder of images (32 training images, batch 8: 4 steps an epoch); the two
subprocess runs (stderr as a user sees it, without PYTHONWARNINGS) use the built-in data with tiny settings.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import helpers
import numpy as np
import pytest
from helpers import error_line, run_cli

from moco_ref.moco import MoCo
from moco_ref.run.checkpoint import load_checkpoint, save_checkpoint
from moco_ref.run.config import OPTIONS, TrainConfig
from moco_ref.run.finite import finite_flags, first_non_finite

STEPS_PER_EPOCH = 4
TINY = [
    "--image-size",
    "16",
    "--width",
    "2",
    "-b",
    "8",
    "--moco-k",
    "24",
    "--moco-dim",
    "8",
    "--bn-splits",
    "2",
    "--seed",
    "7",
    "--knn-every",
    "0",
]
BUILTIN = [
    "--width",
    "2",
    "-b",
    "32",
    "--moco-k",
    "64",
    "--moco-dim",
    "8",
    "--image-size",
    "8",
    "--knn-every",
    "0",
    "--epochs",
    "1",
]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # warnings left on, as a user has them
ENV.pop("PYTHONWARNINGS", None)


# ----------------------------------------------------------------------------- helpers
def digest(folder: Path) -> dict:
    """{relative path: sha256} of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def poison(checkpoint: Path, name: str, value: float) -> None:
    """Rewrites ``checkpoint`` with one element of array ``name`` = value (or the configuration's ``config.X``,
    or the metadata's ``meta.X``)."""
    arrays, meta = load_checkpoint(checkpoint)
    if name.startswith("config."):
        meta["config"][name[len("config.") :]] = value
    elif name.startswith("meta."):
        meta[name[len("meta.") :]] = value
    else:
        arrays[name] = arrays[name].copy()
        arrays[name].flat[0] = value
    save_checkpoint(checkpoint, arrays, meta)


def copy_of(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


def break_step(monkeypatch, at_call: int, how: str) -> None:
    """From the at_call-th MoCo.step on, the step reports a NaN loss ("loss") or leaves inf in the first
    running_var of encoder_q ("weights")."""
    real_step, calls = MoCo.step, []

    def step(self, x_q, x_k, **schedule):
        out = real_step(self, x_q, x_k, **schedule)
        calls.append(1)
        if len(calls) >= at_call:
            if how == "loss":
                out = {**out, "loss": np.float32(np.nan)}
            else:
                self.encoder_q.buffers[first_running_var(self)][...] = np.inf
        return out

    monkeypatch.setattr(MoCo, "step", step)


def first_running_var(model) -> str:
    return min(n for n in model.encoder_q.buffers if n.endswith("running_var"))


def stop_line(code: int, err: str, *phrases) -> str:
    """Asserts what a user must see when a run stops (its start line may come first): exit 2, at most three
    lines, no traceback, no warning, the last line "moco-ref: error: ..." with every phrase; that line."""
    assert code == 2, f"exit {code}\n{err}"
    lines = err.strip().splitlines()
    assert len(lines) <= 3 and "Traceback" not in err and "Warning" not in err, err
    assert lines[-1].startswith("moco-ref: error: ") and all(p in lines[-1] for p in phrases), err
    return lines[-1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return helpers.write_image_folder(tmp_path_factory.mktemp("images"), 16, 4, 20, seed=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data) -> Path:
    """A run of one epoch, finished (its final record written)."""
    from moco_ref.cli.main import main

    run_dir = tmp_path_factory.mktemp("trained") / "run"
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--data", str(data), *TINY, "--epochs", "1", "--log-every", "1", "--out", str(run_dir)])
    assert exit_.value.code in (0, None)
    return run_dir


# ----------------------------------------------------------------------------- the one decision
def test_first_non_finite_names_the_first_float_array_in_order_and_skips_integers():
    arrays = {"counter": np.array([7]), "a": np.ones(3), "b": np.array([1.0, np.inf]), "c": np.array([np.nan])}
    assert first_non_finite(arrays) == "b"
    assert first_non_finite({"a": np.ones(2), "labels": np.array([-1, 3])}) is None
    assert finite_flags(arrays).tolist() == [True, False, False]


# ----------------------------------------------------------------------------- flags
FLOAT_FLAGS = [declared.flag for name, declared in OPTIONS.items() if isinstance(getattr(TrainConfig(), name), float)]
EVAL_FLAGS = [("knn", "-t"), ("linear", "--lr"), ("linear", "--momentum"), ("linear", "--wd")]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("flag", FLOAT_FLAGS)
def test_every_float_flag_of_train_refuses_nan_and_inf(flag, value, capsys, tmp_path):
    code, _, err = run_cli(["train", *BUILTIN, "--max-steps", "2", flag, value, "--out", tmp_path / "run"], capsys)
    assert code == 2 and "Traceback" not in err, err
    assert f"Invalid value for '{flag}'" in err and ("not a finite number" in err or "not in the range" in err), err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("command, flag", EVAL_FLAGS)
def test_every_float_flag_of_eval_refuses_nan_and_inf(command, flag, value, capsys, trained):
    code, out, err = run_cli(["eval", command, "--checkpoint", trained, flag, value], capsys)
    assert code == 2 and "Traceback" not in err and out == "", err
    assert f"Invalid value for '{flag}'" in err and ("not a finite number" in err or "not in the range" in err), err


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_ablate_values_refuse_nan_and_inf(value, capsys, tmp_path):
    code, _, err = run_cli(["ablate", "momentum", "--values", f"0.9,{value}", "--out", tmp_path / "a"], capsys)
    error_line(code, err, f"--values: {value} is not a possible --moco-m", "finite")
    assert not (tmp_path / "a").exists()


# ----------------------------------------------------------------------------- checkpoints
READERS = {
    "resume": lambda run, tmp: ["train", "--resume", run, "--epochs", "2"],
    "eval knn": lambda run, tmp: ["eval", "knn", "--checkpoint", run],
    "eval linear": lambda run, tmp: ["eval", "linear", "--checkpoint", run, "--epochs", "1"],
    "export": lambda run, tmp: ["export", "--checkpoint", run / "checkpoint_last.npz", "--out", tmp / "encoder.npz"],
    "show neighbours": lambda run, tmp: ["show", "neighbours", run, "--out", tmp / "n.png"],
    "show embedding": lambda run, tmp: ["show", "embedding", run, "--out", tmp / "e.png"],
}


@pytest.mark.parametrize("reader", READERS)
def test_every_reader_refuses_a_nan_checkpoint_naming_the_array_and_touches_nothing(reader, trained, tmp_path, capsys):
    run = copy_of(trained, tmp_path)
    poison(run / "checkpoint_last.npz", "encoder_q.conv1.weight", np.nan)
    before = digest(run)
    code, out, err = run_cli(READERS[reader](run, tmp_path), capsys)
    error_line(code, err, "checkpoint_last.npz cannot be used", "encoder_q.conv1.weight", "NaN or infinite")
    assert digest(run) == before and out == ""
    assert not any(tmp_path.glob("*.npz")) and not any(tmp_path.glob("*.png"))


@pytest.mark.parametrize(
    "name, value",
    [
        ("encoder_k.conv1.weight", np.nan),
        ("queue", np.nan),
        ("encoder_q.bn1.running_var", np.inf),
        ("encoder_k.layer1.0.bn1.running_mean", -np.inf),
        ("optimizer.momentum_buffer.fc.weight", np.nan),
    ],
)
def test_a_resume_refuses_non_finite_state_anywhere_and_touches_nothing(name, value, trained, tmp_path, capsys):
    run = copy_of(trained, tmp_path)
    poison(run / "checkpoint_last.npz", name, value)
    before = digest(run)
    code, _, err = run_cli(["train", "--resume", run, "--epochs", "2"], capsys)
    error_line(code, err, f"its array {name} holds NaN or infinite values", "nothing was changed")
    assert digest(run) == before


@pytest.mark.parametrize("setting, flag", [("T", "--moco-t"), ("lr", "--lr"), ("m", "--moco-m")])
def test_a_resume_refuses_a_non_finite_setting_of_the_checkpoint(setting, flag, trained, tmp_path, capsys):
    run = copy_of(trained, tmp_path)
    poison(run / "checkpoint_last.npz", f"config.{setting}", np.nan)
    before = digest(run)
    code, _, err = run_cli(["train", "--resume", run, "--epochs", "2"], capsys)
    error_line(code, err, f"cannot be resumed: its configuration's {flag} is nan, which must be a finite number")
    assert digest(run) == before


@pytest.mark.parametrize("reader", ["resume", "eval knn", "export"])
def test_a_nan_in_the_metadata_is_refused_by_name(reader, trained, tmp_path, capsys):
    run = copy_of(trained, tmp_path)
    poison(run / "checkpoint_last.npz", "meta.knn_top1_untrained", np.nan)
    before = digest(run)
    code, _, err = run_cli(READERS[reader](run, tmp_path), capsys)
    error_line(code, err, "its metadata's __meta__.knn_top1_untrained is NaN or infinite", "nothing was changed")
    assert digest(run) == before


def test_the_ablation_read_back_refuses_a_nan_checkpoint_and_touches_nothing(data, tmp_path, capsys):
    args = [
        "ablate",
        "momentum",
        "--values",
        "0.9",
        "--data",
        data,
        *TINY,
        "--epochs",
        "1",
        "--probe-epochs",
        "1",
        "--out",
        tmp_path / "a",
    ]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    poison(tmp_path / "a" / "m-0.9" / "checkpoint_last.npz", "encoder_q.fc.weight", np.nan)
    before = digest(tmp_path / "a")
    code, _, err = run_cli(args, capsys)
    stop_line(code, err, "its array encoder_q.fc.weight holds NaN", "nothing was changed")
    assert digest(tmp_path / "a") == before


# ----------------------------------------------------------------------------- divergence
def test_a_nan_loss_between_two_reads_is_named_at_its_own_step(data, tmp_path, capsys, monkeypatch):
    break_step(monkeypatch, at_call=3, how="loss")
    code, _, err = run_cli(
        ["train", "--data", data, *TINY, "--epochs", "1", "--log-every", "4", "--out", tmp_path / "run"], capsys
    )
    stop_line(code, err, "the loss became nan at step 3 (epoch 1)", "before any checkpoint was written")


def test_a_resumed_run_that_diverges_names_the_step_and_keeps_checkpoint_metrics_and_config(
    trained, tmp_path, capsys, monkeypatch
):
    """Inf in a BatchNorm statistic at step 6, read at step 8: the line names step 6 and the array; the run
    directory is as the finished first epoch left it (its final record too), the lock's holder record aside."""
    run = copy_of(trained, tmp_path)
    before = digest(run)
    break_step(monkeypatch, at_call=2, how="weights")  # the 2nd step after the resume: step 6
    code, _, err = run_cli(["train", "--resume", run, "--epochs", "2", "--log-every", "4"], capsys)
    line = stop_line(code, err, f"last good checkpoint is kept in {run} (step {STEPS_PER_EPOCH})")
    assert re.search(r"encoder_q\.\S+\.running_var became inf or nan at step 6 \(epoch 2\)", line), line
    after = digest(run)
    for name in ("checkpoint_last.npz", "metrics.jsonl", "config.json"):
        assert after[name] == before[name], f"{name} changed"
    assert set(after) == set(before)


def test_divergence_names_the_first_bad_step_whatever_log_every_and_prints_no_numpy_warning(tmp_path):
    lines = {}
    for log_every in (1, 10):
        process = subprocess.run(
            [
                sys.executable,
                "-m",
                "moco_ref",
                "train",
                *BUILTIN,
                "--lr",
                "1e30",
                "--log-every",
                str(log_every),
                "--out",
                str(tmp_path / f"r{log_every}"),
            ],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=300,
            check=False,
        )
        lines[log_every] = stop_line(process.returncode, process.stderr)
        assert not (tmp_path / f"r{log_every}" / "checkpoint_last.npz").exists()
    step = re.search(r"became .* at step (\d+) \(epoch 1\)", lines[1])
    assert step and int(step.group(1)) < 10, lines[1]
    assert lines[10] == lines[1].replace(str(tmp_path / "r1"), str(tmp_path / "r10"))


def test_a_huge_but_finite_checkpoint_that_diverges_on_resume_leaves_the_run_as_it_was(tmp_path):
    run = tmp_path / "run"
    subprocess.run(
        [sys.executable, "-m", "moco_ref", "train", *BUILTIN, "--max-steps", "3", "--out", str(run)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
        check=True,
    )
    arrays, meta = load_checkpoint(run / "checkpoint_last.npz")
    arrays["encoder_q.conv1.weight"] = np.full_like(arrays["encoder_q.conv1.weight"], 1e30)  # finite, diverges
    save_checkpoint(run / "checkpoint_last.npz", arrays, meta)
    before = digest(run)
    process = subprocess.run(
        [sys.executable, "-m", "moco_ref", "train", "--resume", str(run), "--log-every", "5"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
        check=False,
    )
    line = stop_line(process.returncode, process.stderr)
    assert re.search(r"became .* at step 4 \(epoch 1\); training stopped and the last good checkpoint is kept", line)
    after = digest(run)
    assert {k: v for k, v in after.items() if k != ".lock"} == {k: v for k, v in before.items() if k != ".lock"}
