"""Exact resume on NumPy: a run that is stopped or killed and then resumed ends bit-identical to one
that ran straight through.  And a loss that turns NaN stops training with one line, keeping the last
good checkpoint.

Data: a tiny folder of 32 images (4 steps of batch 8 an epoch), resnet10 of width 2, 16 x 16 crops.
Runs that are compared with each other all run as ``python -m moco_ref.cli.main`` subprocesses with the same
environment, so that nothing but the interruption differs between them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import helpers
import numpy as np
import pytest

from moco_ref.cli.main import main
from moco_ref.errors import UserError
from moco_ref.moco import MoCo
from moco_ref.run.checkpoint import load_checkpoint, save_checkpoint
from moco_ref.run.config import LEGACY_NAMES, TrainConfig
from moco_ref.run.trainer import Trainer

STEPS_PER_EPOCH = 4
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
    "24",
    "--moco-dim",
    "8",
    "--bn-splits",
    "2",
    "--log-every",
    "1",
    "--seed",
    "7",
]


def write_image_folder(root: Path, train_per_class: int = 16, val_per_class: int = 4, size: int = 20) -> Path:
    """root/train/{red,green}/*.png and root/val/...: noisy images, one dominant colour per class."""
    return helpers.write_image_folder(root, train_per_class, val_per_class, size, seed=1)


ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # fast on a busy machine


def train_command(data, run_dir, *extra) -> list[str]:
    return [
        sys.executable,
        "-m",
        "moco_ref.cli.main",
        "train",
        "--data",
        str(data),
        *TINY,
        "--out",
        str(run_dir),
        *map(str, extra),
    ]


def resume_command(run_dir, *extra) -> list[str]:
    return [sys.executable, "-m", "moco_ref.cli.main", "train", "--resume", str(run_dir), *map(str, extra)]


def run(command) -> subprocess.CompletedProcess:
    process = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert process.returncode == 0, f"{' '.join(command)}\n{process.stderr}"
    return process


INSTRUMENTS = (
    "alignment",
    "uniformity",
    "feature_std",
    "logit_pos",
    "logit_neg",
    "key_drift",
    "queue_age",
    "false_negatives",
    "logit_same_class",
    "logit_other_class",
)


def metrics(run_dir: Path) -> list[tuple]:
    """metrics.jsonl without the timings: (kind, epoch, global_step, loss, acc1, lr, m, kNN top-1, untrained kNN,
    and the instruments)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [
        (
            r["kind"],
            r["epoch"],
            r["global_step"],
            r.get("loss"),
            r.get("acc1"),
            r.get("lr"),
            r.get("m"),
            r.get("knn_top1"),
            r.get("knn_top1_untrained"),
            *(r.get(name) for name in INSTRUMENTS),
        )
        for r in records
    ]


def done_line(process: subprocess.CompletedProcess) -> str:
    """The summary line a run printed, without its run directory ("done: ... ; saved in RUN_DIR")."""
    return process.stdout.strip().split("; saved in ")[0]


def assert_same_metrics(run_a: Path, run_b: Path) -> None:
    """The resumed run logged the same records as the uninterrupted one: each step once, the same epoch means."""
    records_a, records_b = metrics(run_a), metrics(run_b)
    steps = [r[2] for r in records_b if r[0] == "step"]
    assert len(set(steps)) == len(steps), f"a step was logged twice: {steps}"
    for a, b in zip(records_a, records_b):
        assert a == b, f"\nuninterrupted: {a}\nresumed:       {b}"
    assert len(records_a) == len(records_b), f"{len(records_a)} records against {len(records_b)}"


def assert_same_final_state(run_a: Path, run_b: Path) -> None:
    """Both final checkpoints hold the same arrays, bit for bit, and the same position and RNG states."""
    arrays_a, meta_a = load_checkpoint(run_a / "checkpoint_last.npz")
    arrays_b, meta_b = load_checkpoint(run_b / "checkpoint_last.npz")
    assert sorted(arrays_a) == sorted(arrays_b)
    different = [
        name
        for name in arrays_a
        if arrays_a[name].dtype != arrays_b[name].dtype or not np.array_equal(arrays_a[name], arrays_b[name])
    ]
    assert not different, f"{len(different)} arrays differ after resume, e.g. {different[:5]}"
    assert int(arrays_a["queue_ptr"][0]) == int(arrays_b["queue_ptr"][0])
    for key in ("epoch", "step_in_epoch", "global_step", "rng"):
        assert meta_a[key] == meta_b[key], key
    assert meta_a["config"] == meta_b["config"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory, data) -> tuple[Path, subprocess.CompletedProcess]:
    """Run A: 2 epochs of 4 steps straight through, a checkpoint after each epoch; (run dir, its process)."""
    run_dir = tmp_path_factory.mktemp("a") / "run"
    process = run(train_command(data, run_dir, "--epochs", 2, "--knn-every", 1))
    _, meta = load_checkpoint(run_dir / "checkpoint_last.npz")
    assert (meta["epoch"], meta["global_step"]) == (2, 2 * STEPS_PER_EPOCH)
    return run_dir, process


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_run) -> Path:
    return uninterrupted_run[0]


# --------------------------------------------------------------------- stop, then resume


@pytest.mark.parametrize("stop_after", [2, 4, 6], ids=["mid-epoch-1", "epoch-boundary", "mid-epoch-2"])
def test_stop_and_resume_is_bit_identical(tmp_path, data, uninterrupted, stop_after):
    run_b = tmp_path / "b"
    run(train_command(data, run_b, "--epochs", 2, "--knn-every", 1, "--max-steps", stop_after))
    _, meta = load_checkpoint(run_b / "checkpoint_last.npz")
    assert meta["global_step"] == stop_after
    assert (meta["epoch"], meta["step_in_epoch"]) == divmod(stop_after, STEPS_PER_EPOCH)

    resumed = run(resume_command(run_b, "--max-steps", 0))
    assert f"at epoch {stop_after // STEPS_PER_EPOCH + 1}, step {stop_after}" in resumed.stderr
    assert resumed.stdout.startswith("done: 2 epoch(s), 8 steps")

    assert_same_final_state(uninterrupted, run_b)
    assert_same_metrics(uninterrupted, run_b)  # the same losses, step by step


def test_stop_and_resume_with_direct_convolutions_is_bit_identical(tmp_path, data):
    """32 x 32 crops: with the ``fast`` extra the first stage's 3x3 convolutions run the direct kernel (chosen by
    their shape, the same in every process), and a resumed run still ends with the same bits."""
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    run(train_command(data, run_a, "--epochs", 1, "--knn-every", 0, "--image-size", 32))
    run(train_command(data, run_b, "--epochs", 1, "--knn-every", 0, "--image-size", 32, "--max-steps", 2))
    run(resume_command(run_b, "--max-steps", 0))
    assert_same_final_state(run_a, run_b)
    assert_same_metrics(run_a, run_b)


def test_resuming_twice_in_one_epoch_is_bit_identical(tmp_path, data, uninterrupted):
    run_b = tmp_path / "b"
    run(train_command(data, run_b, "--epochs", 2, "--knn-every", 1, "--max-steps", 5))
    run(resume_command(run_b, "--max-steps", 7))
    assert load_checkpoint(run_b / "checkpoint_last.npz")[1]["global_step"] == 7
    run(resume_command(run_b, "--max-steps", 0))
    assert_same_final_state(uninterrupted, run_b)
    assert_same_metrics(uninterrupted, run_b)


def test_the_instruments_resume_exactly(tmp_path, data, uninterrupted):
    """With the instruments on (--knn-every 1), a run stopped mid-epoch 2 measures after resuming what the
    uninterrupted run measured: the key drift against the probe keys kept in the checkpoint included."""
    run_b = tmp_path / "b"
    run(train_command(data, run_b, "--epochs", 2, "--knn-every", 1, "--max-steps", 6))
    arrays, _ = load_checkpoint(run_b / "checkpoint_last.npz")
    assert arrays["instruments.probe_keys"].shape == (8, 8)  # 8 validation images, D = 8
    run(resume_command(run_b, "--max-steps", 0))
    measured = [r for r in metrics(run_b) if r[0] == "instruments"]
    assert [r[2] for r in measured] == [0, 4, 8]  # before training, after each epoch
    drifts = [dict(zip(INSTRUMENTS, r[-len(INSTRUMENTS) :]))["key_drift"] for r in measured]
    assert drifts[0] is None and None not in drifts[1:]
    assert measured == [r for r in metrics(uninterrupted) if r[0] == "instruments"]
    assert_same_final_state(uninterrupted, run_b)  # instruments.probe_keys included


@pytest.mark.parametrize("stop_after", [3, 4], ids=["mid-epoch-1", "epoch-boundary"])
def test_stop_and_resume_with_the_momentum_schedule_is_bit_identical(tmp_path, data, stop_after):
    """--moco-m-cos: m rises on a half-cosine over the 8 steps; its state is the global step in the checkpoint."""
    from moco_ref.momentum import momentum_at_step

    run_a, run_b = tmp_path / "a", tmp_path / "b"
    run(train_command(data, run_a, "--epochs", 2, "--knn-every", 1, "--moco-m-cos"))
    run(train_command(data, run_b, "--epochs", 2, "--knn-every", 1, "--moco-m-cos", "--max-steps", stop_after))
    run(resume_command(run_b, "--max-steps", 0))
    assert_same_final_state(run_a, run_b)
    assert_same_metrics(run_a, run_b)
    logged_m = [r[6] for r in metrics(run_b) if r[0] == "step"]  # --log-every 1: the m of each step
    assert logged_m == [momentum_at_step(0.99, t, 2 * STEPS_PER_EPOCH, cos=True) for t in range(8)]
    assert logged_m[0] == 0.99 and logged_m == sorted(logged_m) and logged_m[-1] < 1.0


def test_a_checkpoint_file_can_be_resumed_into_another_folder(tmp_path, data, uninterrupted):
    run_b = tmp_path / "b"
    run(train_command(data, run_b, "--epochs", 2, "--knn-every", 1, "--max-steps", 3))
    run([*resume_command(run_b / "checkpoint_last.npz", "--max-steps", 0), "--out", str(tmp_path / "c")])
    assert_same_final_state(uninterrupted, tmp_path / "c")
    assert load_checkpoint(run_b / "checkpoint_last.npz")[1]["global_step"] == 3  # the source is untouched


# ------------------------------------------------------- the checkpoint alone is the state


def test_resume_without_metrics_jsonl_gives_the_same_epoch_record_and_final_line(tmp_path, data, uninterrupted_run):
    """The epoch's logged sums and the untrained kNN come from the checkpoint, not from metrics.jsonl."""
    run_a, process_a = uninterrupted_run
    run_b = tmp_path / "b"
    run(train_command(data, run_b, "--epochs", 2, "--knn-every", 1, "--max-steps", 6))  # stops mid-epoch 2
    (run_b / "metrics.jsonl").unlink()

    resumed = run(resume_command(run_b, "--max-steps", 0))
    assert done_line(resumed) == done_line(process_a)
    assert "(untrained encoder: " in done_line(resumed)
    assert [r[0] for r in metrics(run_b)] == ["step", "step", "epoch", "instruments", "final"]  # steps 7, 8 only
    assert metrics(run_b)[-3:] == metrics(run_a)[-3:]  # the epoch record averages steps 5 to 8
    assert_same_final_state(run_a, run_b)


def test_a_checkpoint_with_the_old_field_names_resumes(tmp_path, data, uninterrupted):
    """Checkpoints of earlier versions hold moco_k, moco_dim, moco_m, moco_t and wd: they still resume exactly."""
    run_b = tmp_path / "b"
    run(train_command(data, run_b, "--epochs", 2, "--knn-every", 1, "--max-steps", 2))
    checkpoint = run_b / "checkpoint_last.npz"
    arrays, meta = load_checkpoint(checkpoint)
    old_names = {new: old for old, new in LEGACY_NAMES.items()}
    meta["config"] = {old_names.get(name, name): value for name, value in meta["config"].items()}
    assert {"moco_k", "moco_dim", "moco_m", "moco_t", "wd"} <= set(meta["config"])
    save_checkpoint(checkpoint, arrays, meta)

    run(resume_command(run_b, "--max-steps", 0))
    assert_same_final_state(uninterrupted, run_b)
    assert_same_metrics(uninterrupted, run_b)
    assert json.loads((run_b / "config.json").read_text())["K"] == 24


def test_a_checkpoint_with_the_data_generator_of_earlier_versions_resumes(tmp_path, data, uninterrupted):
    """Checkpoints of earlier versions hold rng.data_epoch_start, the generator state that drew the epoch's order:
    the entry is ignored (each epoch's order comes from the seed and the epoch), so they resume, exactly."""
    run_b = tmp_path / "b"
    run(train_command(data, run_b, "--epochs", 2, "--knn-every", 1, "--max-steps", 2))
    checkpoint = run_b / "checkpoint_last.npz"
    arrays, meta = load_checkpoint(checkpoint)
    assert "data_epoch_start" not in meta["rng"]
    meta["rng"]["data_epoch_start"] = np.random.default_rng([7, 10]).bit_generator.state
    save_checkpoint(checkpoint, arrays, meta)

    run(resume_command(run_b, "--max-steps", 0))
    assert_same_final_state(uninterrupted, run_b)
    assert_same_metrics(uninterrupted, run_b)
    assert "data_epoch_start" not in load_checkpoint(checkpoint)[1]["rng"]  # the new checkpoint omits it


# --------------------------------------------------------------------------- SIGKILL


def test_sigkill_then_resume_is_bit_identical(tmp_path, data):
    """Kill a run with SIGKILL as soon as its first checkpoint exists, resume it, compare with run A.

    The runs here have 4 epochs, so that the kill lands while epochs 2 to 4 are still to come.
    """
    run_a = tmp_path / "a"
    run(train_command(data, run_a, "--epochs", 4, "--knn-every", 0))

    run_b = tmp_path / "b"
    checkpoint = run_b / "checkpoint_last.npz"
    process = subprocess.Popen(
        train_command(data, run_b, "--epochs", 4, "--knn-every", 0),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    try:
        deadline = time.monotonic() + 120
        while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"

    # The checkpoint the kill left behind is complete and loads.
    arrays, meta = load_checkpoint(checkpoint)
    assert meta["global_step"] % STEPS_PER_EPOCH == 0 and meta["step_in_epoch"] == 0
    assert 1 <= meta["epoch"] < 4, f"killed too late: {meta['epoch']} epochs done"
    assert all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f")

    resumed = run(resume_command(run_b))
    assert resumed.stdout.startswith("done: 4 epoch(s), 16 steps")
    assert_same_final_state(run_a, run_b)
    assert_same_metrics(run_a, run_b)


# ----------------------------------------------------------------------------- NaN


def tiny_config(data, **changes) -> TrainConfig:
    values = dict(
        data=str(data),
        image_size=16,
        arch="resnet10",
        width=2,
        batch_size=8,
        K=24,
        dim=8,
        bn_splits=2,
        log_every=1,
        seed=7,
        epochs=2,
        knn_every=0,
    )
    return TrainConfig(**{**values, **changes})


def break_step(monkeypatch, at_call: int, how: str) -> None:
    """From the at_call-th MoCo.step on, make it report a NaN loss ("loss") or leave inf in a BN buffer ("weights")."""
    real_step = MoCo.step
    calls = []

    def step(self, x_q, x_k, **schedule):
        out = real_step(self, x_q, x_k, **schedule)
        calls.append(1)
        if len(calls) >= at_call:
            if how == "loss":
                out = {**out, "loss": np.float32(np.nan)}
            else:
                name = sorted(n for n in self.encoder_q.buffers if n.endswith("running_var"))[0]
                self.encoder_q.buffers[name][...] = np.inf
        return out

    monkeypatch.setattr(MoCo, "step", step)


def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(capsys, monkeypatch, tmp_path, data):
    run_dir = tmp_path / "r"
    break_step(monkeypatch, at_call=STEPS_PER_EPOCH + 2, how="loss")  # step 6, in epoch 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--data", str(data), *TINY, "--epochs", "2", "--knn-every", "0", "--out", str(run_dir)])
    _, err = capsys.readouterr()
    assert exit_.value.code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("moco-ref: error:")]
    assert len(errors) == 1, err
    assert "the loss became nan at step 6 (epoch 2)" in errors[0]
    assert f"last good checkpoint is kept in {run_dir}" in errors[0] and "--lr" in errors[0]

    arrays, meta = load_checkpoint(run_dir / "checkpoint_last.npz")
    assert (meta["epoch"], meta["global_step"]) == (1, STEPS_PER_EPOCH)
    assert all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f")

    monkeypatch.undo()  # the checkpoint resumes to the end
    trainer = Trainer(tiny_config(data), run_dir, log=lambda message: None)
    trainer.restore(run_dir / "checkpoint_last.npz")
    assert trainer.run()["global_step"] == 2 * STEPS_PER_EPOCH


def test_non_finite_weights_are_never_saved_over_the_last_good_checkpoint(monkeypatch, tmp_path, data):
    """A finite loss can still leave inf in the weights or BatchNorm statistics: the step that does is named, and
    nothing of it is saved."""
    run_dir = tmp_path / "r"
    break_step(monkeypatch, at_call=2 * STEPS_PER_EPOCH, how="weights")  # the last step of epoch 2
    trainer = Trainer(tiny_config(data), run_dir, log=lambda message: None)
    with pytest.raises(UserError, match=r"running_var became inf or nan at step 8 \(epoch 2\)") as info:
        trainer.run()
    assert "last good checkpoint is kept" in str(info.value)
    arrays, meta = load_checkpoint(run_dir / "checkpoint_last.npz")
    assert meta["global_step"] == STEPS_PER_EPOCH
    assert all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f")


def test_a_huge_learning_rate_fails_with_one_line_and_no_checkpoint(tmp_path, data):
    run_dir = tmp_path / "r"
    process = subprocess.run(
        train_command(data, run_dir, "--epochs", 2, "--knn-every", 0, "--lr", "1e30"),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert process.returncode == 2 and "Traceback" not in process.stderr and process.stdout == ""
    errors = [line for line in process.stderr.splitlines() if line.startswith("moco-ref: error:")]
    assert len(errors) == 1, process.stderr
    assert re.search(r"became (nan|inf or nan) at step \d+ \(epoch 1\)", errors[0]), errors[0]
    assert "before any checkpoint was written" in errors[0] and "RuntimeWarning" not in process.stderr
    assert not (run_dir / "checkpoint_last.npz").exists()
