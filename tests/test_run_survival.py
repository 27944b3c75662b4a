"""What a run survives: a second writer, SIGKILL at random steps, SIGINT and SIGTERM, and a run directory
that fills up, is read-only or is deleted.

Runs compared bit for bit run as ``python -m moco_ref train`` subprocesses on the built-in data with tiny
settings (width 2, batch 32, 8 x 8 crops: 62 steps an epoch, 3 epochs, one record a step), so that
nothing but the fault differs between them.  Quick error paths run in this process on a tiny folder of
images (3 steps an epoch).  Faults this machine cannot make for real are injected (a writer that raises
OSError(ENOSPC) half way, an os.open that answers EROFS); where the machine allows mounting (root with
CAP_SYS_ADMIN), a real tmpfs fills up, a real small one is refused, and a real read-only bind mount
refuses writes.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import helpers
import numpy as np
import pytest
from helpers import MPIEXEC, mount, mpi_env, needs_mpi

from moco_ref.moco import MoCo
from moco_ref.run.checkpoint import load_checkpoint
from moco_ref.run.directory import RunLock
from moco_ref.run.stopping import agreed_signal

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
STEPS_PER_EPOCH = 62  # 2000 built-in images // batch 32
EPOCHS = 3
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
    "--log-every",
    "1",
    "--epochs",
    str(EPOCHS),
    "--seed",
    "5",
]
# In-process runs: the tiny folder (24 training images, batch 8: 3 steps an epoch).
TINY = [
    "--image-size",
    "16",
    "--width",
    "2",
    "-b",
    "8",
    "--moco-k",
    "20",
    "--moco-dim",
    "8",
    "--bn-splits",
    "2",
    "--log-every",
    "1",
    "--knn-every",
    "0",
]


# ----------------------------------------------------------------------------- helpers
def train_command(run_dir, *extra) -> list[str]:
    return [sys.executable, "-m", "moco_ref", "train", *BUILTIN, "--out", str(run_dir), *map(str, extra)]


def resume_command(run_dir, *extra) -> list[str]:
    return [sys.executable, "-m", "moco_ref", "train", "--resume", str(run_dir), *map(str, extra)]


def start(command, log: Path) -> subprocess.Popen:
    """A training subprocess with stdout and stderr in ``log`` (a pipe nobody reads could fill and stall it).
    SIGINT is reset to its default in the child, in case this test runs where it is ignored (``&``)."""
    return subprocess.Popen(
        command,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        env=ENV,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def run(command, expect: int = 0) -> subprocess.CompletedProcess:
    process = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert process.returncode == expect, f"{' '.join(command)}: exit {process.returncode}\n{process.stderr}"
    return process


def logged_step(run_dir: Path) -> int:
    """The global step of the last whole record in run_dir/metrics.jsonl (0 before the first)."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    for line in reversed(lines):
        try:
            return json.loads(line)["global_step"]
        except (ValueError, KeyError):
            continue  # a line being written right now
    return 0


def wait_for_step(process: subprocess.Popen, run_dir: Path, step: int, log: Path, timeout: float = 120) -> int:
    """Waits until the running ``process`` has logged ``step`` (or later); returns the step it logged."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the run ended (exit {process.returncode}) before step {step}:\n{log.read_text()}")
        reached = logged_step(run_dir)
        if reached >= step:
            return reached
        time.sleep(0.003)
    raise AssertionError(f"no step {step} within {timeout} s")


def without_timings(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("images_per_s", "data_share", "seconds")} for r in records]


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(expected: Path, actual: Path) -> None:
    """Every array of the final checkpoints bit for bit, the same position and generators, the same records."""
    arrays_a, meta_a = load_checkpoint(expected / "checkpoint_last.npz")
    arrays_b, meta_b = load_checkpoint(actual / "checkpoint_last.npz")
    assert sorted(arrays_a) == sorted(arrays_b)
    different = [
        n for n in arrays_a if arrays_a[n].dtype != arrays_b[n].dtype or not np.array_equal(arrays_a[n], arrays_b[n])
    ]
    assert not different, f"{len(different)} arrays differ, e.g. {different[:5]}"
    for key in ("epoch", "step_in_epoch", "global_step", "rng", "config", "logged_this_epoch"):
        assert meta_a[key] == meta_b[key], key
    records_a, records_b = without_timings(read_metrics(expected)), without_timings(read_metrics(actual))
    steps = [r["global_step"] for r in records_b if r["kind"] == "step"]
    assert len(set(steps)) == len(steps), "a step was logged twice"
    for a, b in zip(records_a, records_b):
        assert a == b, f"\nuninterrupted: {a}\nfaulted:       {b}"
    assert len(records_a) == len(records_b)


def snapshot(run_dir: Path) -> dict:
    """Every file of a run directory: name -> (sha256, modification time)."""
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in sorted(run_dir.iterdir())
    }


def temporary_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def error_line(code: int, err: str, *phrases) -> str:
    """Exit code 2 and exactly one line on stderr, "moco-ref: error: …", holding every phrase."""
    progress = ("epoch ", "training MoCo", "resuming ")
    assert "Traceback" not in err
    return helpers.error_line(
        code, "\n".join(line for line in err.strip().splitlines() if not line.startswith(progress)), *phrases
    )


@pytest.fixture
def mounts():
    """Mount points made by a test, unmounted at its end."""
    points = []
    yield points
    for point in reversed(points):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def tmpfs(mounts: list, point: Path, size: str) -> Path:
    point.mkdir(parents=True, exist_ok=True)
    mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", point)
    mounts.append(point)
    return point


def fill(path: Path) -> None:
    """Writes zeros into ``path`` until its file system is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError as error:
        assert error.errno == errno.ENOSPC, error
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return helpers.write_image_folder(tmp_path_factory.mktemp("images"), 12, 4, 20, seed=0)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The built-in run straight through: 3 epochs of 62 steps."""
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    run(train_command(run_dir))
    assert load_checkpoint(run_dir / "checkpoint_last.npz")[1]["global_step"] == EPOCHS * STEPS_PER_EPOCH
    return run_dir


def tiny_run(capsys, data, run_dir, *flags) -> tuple[int, str, str]:
    return helpers.run_cli(["train", "--data", data, *TINY, "--out", run_dir, *flags], capsys)


# ------------------------------------------------------------------------ the fault soak
def test_a_run_killed_at_random_steps_and_resumed_ends_bit_identical(tmp_path, uninterrupted):
    """Six SIGKILLs at seeded random steps after the first checkpoint (one in each sixth of the steps left),
    each followed by --resume: the final checkpoint's every array and every metrics record equal the
    uninterrupted run's."""
    run_dir, log = tmp_path / "run", tmp_path / "log.txt"
    rng = np.random.default_rng(2024)  # one kill point drawn in each sixth of steps 64..165
    bins = np.linspace(STEPS_PER_EPOCH + 2, EPOCHS * STEPS_PER_EPOCH - 20, 7).astype(int)
    targets = [int(rng.integers(low, high)) for low, high in zip(bins[:-1], bins[1:])]
    killed_at, resumed_from = [], []
    for target in targets:
        # Records of an earlier life stay in metrics.jsonl until the new one truncates them: wait for a step
        # past them, which only this life can log.
        target = max(target, logged_step(run_dir) + 1)
        checkpoint = run_dir / "checkpoint_last.npz"
        if checkpoint.exists():
            resumed_from.append(load_checkpoint(checkpoint)[1]["global_step"])
            command = resume_command(run_dir)
        else:
            command = train_command(run_dir)
        process = start(command, log)
        try:
            wait_for_step(process, run_dir, target, log)
        finally:
            process.kill()
            process.wait(timeout=60)
        assert process.returncode == -signal.SIGKILL, log.read_text()
        killed_at.append(logged_step(run_dir))
    resumed_from.append(load_checkpoint(run_dir / "checkpoint_last.npz")[1]["global_step"])
    run(resume_command(run_dir))

    print(f"killed at steps {killed_at}; resumed from {resumed_from}")
    assert len(set(killed_at)) == len(killed_at) >= 5, killed_at
    assert any(step % STEPS_PER_EPOCH for step in killed_at), "no kill landed mid-epoch"
    assert len(resumed_from) == len(killed_at)  # each kill was followed by --resume
    assert len(set(resumed_from)) >= 2, "every resume started from the same checkpoint"
    assert_same_run(uninterrupted, run_dir)
    assert temporary_files(run_dir) == []


# ------------------------------------------------------------------------------ signals
@pytest.mark.parametrize(
    "signum, target",
    [(signal.SIGTERM, 20), (signal.SIGINT, STEPS_PER_EPOCH + 30)],
    ids=["SIGTERM-epoch-1", "SIGINT-epoch-2"],
)
def test_a_signal_mid_epoch_saves_that_step_and_the_printed_resume_ends_bit_identical(
    tmp_path, uninterrupted, signum, target
):
    run_dir, log = tmp_path / "run", tmp_path / "log.txt"
    process = start(train_command(run_dir), log)
    try:
        wait_for_step(process, run_dir, target, log)
        process.send_signal(signum)
        process.wait(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + signum, log.read_text()  # 143 for SIGTERM, 130 for SIGINT

    # The checkpoint is of the step the run stopped at: the last one it logged, in the middle of an epoch.
    _, meta = load_checkpoint(run_dir / "checkpoint_last.npz")
    stopped = meta["global_step"]
    assert stopped == logged_step(run_dir) >= target
    assert (meta["epoch"], meta["step_in_epoch"]) == divmod(stopped, STEPS_PER_EPOCH)
    assert meta["step_in_epoch"] > 0, "the stop landed on an epoch boundary"
    assert temporary_files(run_dir) == []

    # One line says where it stopped and the exact command that continues; that command finishes the run.
    last = log.read_text().strip().splitlines()[-1]
    assert last.startswith(f"moco-ref: stopped by {signal.Signals(signum).name} at step {stopped} ("), last
    command = shlex.split(last.split("continue with: ")[1])
    assert command == ["moco-ref", "train", "--resume", str(run_dir)]
    resumed = run([sys.executable, "-m", "moco_ref", *command[1:]])
    assert resumed.stdout.startswith(f"done: {EPOCHS} epoch(s), {EPOCHS * STEPS_PER_EPOCH} steps")
    assert_same_run(uninterrupted, run_dir)


def test_further_signals_while_saving_tear_nothing(capsys, monkeypatch, tmp_path, data):
    """SIGTERM at step 2; while its checkpoint is written, SIGINT and SIGTERM again: the save completes."""
    real_step, real_savez, steps, saves = MoCo.step, np.savez, [], []

    def step(self, x_q, x_k, **schedule):
        steps.append(1)
        if len(steps) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, before the step goes on
        return real_step(self, x_q, x_k, **schedule)

    def savez(file, **arrays):
        saves.append(1)
        file.write(b"PK")  # half way into the temporary file ...
        os.kill(os.getpid(), signal.SIGINT)  # ... two more signals ...
        os.kill(os.getpid(), signal.SIGTERM)
        file.seek(0)
        real_savez(file, **arrays)  # ... and the write goes on to the end

    monkeypatch.setattr(MoCo, "step", step)
    monkeypatch.setattr(np, "savez", savez)
    handlers = [signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)]
    run_dir = tmp_path / "r"
    code, out, err = tiny_run(capsys, data, run_dir, "--epochs", "2")
    assert code == 143 and out == "", err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(
        f"moco-ref: stopped by SIGTERM at step 2 (step 2 of 3 in epoch 1), its checkpoint saved in {run_dir}; "
        f"continue with: moco-ref train --resume {run_dir}"
    )
    assert len(saves) == 1
    _, meta = load_checkpoint(run_dir / "checkpoint_last.npz")
    assert (meta["global_step"], meta["step_in_epoch"]) == (2, 2)
    assert temporary_files(run_dir) == []
    assert [signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)] == handlers  # put back


class _TwoProcesses:
    """A communicator of two processes whose other process received ``other`` (a signal number or None)."""

    size = 2

    def __init__(self, other):
        self.other = other

    def allreduce_host_mean(self, values):
        theirs = [float(self.other == signal.SIGINT), float(self.other == signal.SIGTERM)]
        return [(mine + other) / 2 for mine, other in zip(values, theirs)]


@pytest.mark.parametrize(
    "mine, other, agreed",
    [
        (None, None, None),
        (signal.SIGINT, None, signal.SIGINT),
        (None, signal.SIGTERM, signal.SIGTERM),
        (signal.SIGINT, signal.SIGTERM, signal.SIGTERM),
    ],
)
def test_all_processes_agree_on_the_stop_when_any_got_a_signal(mine, other, agreed):
    assert agreed_signal(_TwoProcesses(other), mine) == agreed


@needs_mpi
def test_sigterm_to_mpiexec_stops_every_process_at_one_step_and_resumes_bit_identically(tmp_path):
    """mpiexec forwards SIGTERM to both ranks; they stop after the same step, rank 0 saves, the job exits 143,
    and the printed `mpiexec -n 2 … --resume` continues to the uninterrupted 2-process run, bit for bit."""
    quick = [
        "--width",
        "2",
        "-b",
        "16",
        "--moco-k",
        "32",
        "--moco-dim",
        "8",
        "--image-size",
        "8",
        "--dtype",
        "float64",
        "--knn-every",
        "0",
        "--log-every",
        "1",
        "--epochs",
        "1",
        "--max-steps",
        "40",
    ]
    env = mpi_env(ROOT)

    def job(*arguments):
        return [MPIEXEC, "-n", "2", sys.executable, "-m", "moco_ref", "train", *arguments]

    whole = tmp_path / "whole"
    result = subprocess.run(job(*quick, "--out", whole), env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr

    run_dir, log = tmp_path / "stopped", tmp_path / "log.txt"
    process = subprocess.Popen(
        job(*quick, "--out", run_dir), env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_for_step(process, run_dir, 10, log)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 143, log.read_text()
    _, meta = load_checkpoint(run_dir / "checkpoint_last.npz")
    assert meta["world_size"] == 2 and 10 <= meta["global_step"] == logged_step(run_dir) < 40
    last = log.read_text().strip().splitlines()[-1]
    command = shlex.split(last.split("continue with: ")[1])
    assert command == ["mpiexec", "-n", "2", "moco-ref", "train", "--resume", str(run_dir), "--max-steps", "40"]
    result = subprocess.run(job(*command[5:]), env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    arrays_a, arrays_b = (load_checkpoint(d / "checkpoint_last.npz")[0] for d in (whole, run_dir))
    assert all(np.array_equal(arrays_a[name], arrays_b[name]) for name in arrays_a)
    assert without_timings(read_metrics(whole)) == without_timings(read_metrics(run_dir))


# --------------------------------------------------------------------------- one writer
def test_a_second_run_on_a_locked_directory_is_refused_and_changes_nothing(capsys, tmp_path, data):
    run_dir = tmp_path / "r"
    assert tiny_run(capsys, data, run_dir, "--epochs", "1")[0] == 0
    lock = RunLock.acquire(run_dir)  # this process plays the run that is training there
    try:
        before = snapshot(run_dir)
        holder = f"{run_dir} is in use by another moco-ref run: pid {os.getpid()} on host {socket.gethostname()}"
        for flags in (["--resume", run_dir, "--epochs", "2"], ["--data", data, *TINY, "--out", run_dir]):
            code, out, err = helpers.run_cli(["train", *flags], capsys)
            error_line(code, err, holder, ", since ", f"--resume {run_dir}")
            assert out == "" and snapshot(run_dir) == before
    finally:
        lock.release()
    code, out, err = helpers.run_cli(["train", "--resume", run_dir, "--epochs", "2"], capsys)
    assert code == 0 and out.startswith("done: 2 epoch(s), 6 steps"), err


def test_a_running_trainer_is_named_and_once_sigkilled_leaves_no_stale_lock(tmp_path):
    run_dir, log = tmp_path / "run", tmp_path / "log.txt"
    process = start(train_command(run_dir, "--epochs", 20), log)  # still running when the other tries
    try:
        wait_for_step(process, run_dir, 2, log)
        refused = run(train_command(run_dir), expect=2)
        assert refused.stderr.strip().splitlines() == [
            f"moco-ref: error: {run_dir} is in use by another moco-ref run: pid {process.pid} on host "
            f"{socket.gethostname()}, since {json.loads((run_dir / '.lock').read_text())['since']}; wait "
            f"for it to end, or stop it (SIGTERM saves a checkpoint) and continue with --resume {run_dir}"
        ]
        assert process.poll() is None, "the first run ended before the second tried"
    finally:
        process.kill()
        process.wait(timeout=60)
    assert json.loads((run_dir / ".lock").read_text())["pid"] == process.pid  # the record stays ...
    again = run(train_command(run_dir, "--max-steps", 2))  # ... but the lock is free
    assert again.stdout.startswith("done: 0 epoch(s), 2 steps")


@needs_mpi
def test_a_data_parallel_job_on_a_locked_directory_ends_at_once(tmp_path):
    run_dir = tmp_path / "r"
    lock = RunLock.acquire(run_dir)
    try:
        command = [
            MPIEXEC,
            "-n",
            "2",
            sys.executable,
            "-m",
            "moco_ref",
            "train",
            "--out",
            str(run_dir),
            "--width",
            "2",
            "-b",
            "16",
            "--knn-every",
            "0",
            "--epochs",
            "1",
        ]
        result = subprocess.run(command, env=mpi_env(ROOT), capture_output=True, text=True, timeout=120)
    finally:
        lock.release()
    assert result.returncode == 2, result.stderr
    assert f"[rank 0] moco-ref: error: {run_dir} is in use by another moco-ref run: pid {os.getpid()}" in result.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]


# ------------------------------------------------------------------------------ I/O errors
def _fail_second_checkpoint_with_no_space(monkeypatch, run_dir: Path, kept: dict) -> None:
    """np.savez writes the first checkpoint; for the second, half a file reaches the disk, then ENOSPC."""
    real_savez = np.savez

    def savez(file, **arrays):
        latest = run_dir / "checkpoint_last.npz"
        if not latest.exists():
            return real_savez(file, **arrays)
        kept["checkpoint"] = latest.read_bytes()
        file.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "savez", savez)


def _refuse_second_checkpoint_with_no_permission(monkeypatch, run_dir: Path, kept: dict) -> None:
    """The temporary file of the second checkpoint cannot be created: EACCES."""
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        latest = run_dir / "checkpoint_last.npz"
        if kwargs.get("prefix", "").startswith(latest.name) and latest.exists():
            kept["checkpoint"] = latest.read_bytes()
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def _fill_disk_before_metrics_of_step_5(monkeypatch, run_dir: Path, kept: dict) -> None:
    """The run directory's open(metrics.jsonl, "a") for the record of step 5 fails with ENOSPC."""

    def open_(path, mode="r", *args, **kwargs):
        if str(path).endswith("metrics.jsonl") and "a" in mode and logged_step(run_dir) == 4:
            kept["checkpoint"] = (run_dir / "checkpoint_last.npz").read_bytes()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr("moco_ref.run.directory.open", open_, raising=False)


FAULTS = {  # name: (injection, the file named, the cause named, the step training stopped at)
    "no-space-in-checkpoint": (
        _fail_second_checkpoint_with_no_space,
        "checkpoint_last.npz",
        "no space left on the device",
        6,
    ),
    "no-permission-in-checkpoint": (
        _refuse_second_checkpoint_with_no_permission,
        "checkpoint_last.npz",
        "permission denied",
        6,
    ),
    "no-space-in-metrics": (_fill_disk_before_metrics_of_step_5, "metrics.jsonl", "no space left on the device", 5),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_write_that_fails_in_epoch_2_is_one_line_and_keeps_the_previous_checkpoint(
    capsys, monkeypatch, tmp_path, data, fault
):
    inject, name, cause, step = FAULTS[fault]
    run_dir, kept = tmp_path / "r", {}
    inject(monkeypatch, run_dir, kept)
    code, out, err = tiny_run(capsys, data, run_dir, "--epochs", "3")
    error_line(
        code,
        err,
        f"cannot write {run_dir / name}: {cause}; training stopped at step {step} and the last "
        f"good checkpoint is kept in {run_dir} (step 3); once that is fixed, continue with "
        f"--resume {run_dir}",
    )
    assert out == ""
    assert (run_dir / "checkpoint_last.npz").read_bytes() == kept["checkpoint"], "the previous checkpoint changed"
    assert load_checkpoint(run_dir / "checkpoint_last.npz")[1]["global_step"] == 3
    assert temporary_files(run_dir) == []
    monkeypatch.undo()
    code, out, err = helpers.run_cli(["train", "--resume", run_dir], capsys)
    assert code == 0 and out.startswith("done: 3 epoch(s), 9 steps"), err


def test_a_real_file_system_that_fills_up_mid_run_is_one_line(tmp_path, mounts):
    """A 1 MB tmpfs: once the first checkpoint is there, a filler takes the rest of the space."""
    run_dir, log = tmpfs(mounts, tmp_path / "disk", "1m") / "run", tmp_path / "log.txt"
    process = start(train_command(run_dir), log)
    try:
        wait_for_step(process, run_dir, STEPS_PER_EPOCH + 1, log)
        fill(run_dir.parent / "filler")
        process.wait(timeout=120)
    finally:
        process.kill()
    output = log.read_text()
    error_line(
        process.returncode,
        output,
        f"cannot write {run_dir}/",
        "no space left on the device",
        f"the last good checkpoint is kept in {run_dir} (step {STEPS_PER_EPOCH})",
    )
    _, meta = load_checkpoint(run_dir / "checkpoint_last.npz")
    assert meta["global_step"] == STEPS_PER_EPOCH
    assert temporary_files(run_dir) == []


@pytest.mark.parametrize("where", ["tmpfs", "statvfs"])
def test_too_little_room_for_two_checkpoints_is_refused_before_the_first_step(
    capsys, monkeypatch, tmp_path, mounts, data, where
):
    """A real 64 kB tmpfs, or a file system whose statvfs reports 64 kB free (the checkpoint takes ~100 kB)."""
    if where == "tmpfs":
        run_dir = tmpfs(mounts, tmp_path / "disk", "64k") / "r"
    else:
        run_dir = tmp_path / "r"
        real_statvfs = os.statvfs
        monkeypatch.setattr(
            os,
            "statvfs",
            lambda path: (
                os.statvfs_result((4096, 4096, 10**6, 16, 16, 10**6, 10**6, 10**6, 0, 255))
                if Path(path) == run_dir
                else real_statvfs(path)
            ),
        )
    code, out, err = tiny_run(capsys, data, run_dir, "--epochs", "1")
    line = error_line(code, err, f"{run_dir} has ", "free some space or choose another --out")
    assert re.search(
        r"has 0\.0[67] MB free, too little for two checkpoints of this model \(about 0\.1\d MB each", line
    ), line
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # nothing written but the lock


def _read_only_by_bind_mount(run_dir: Path, mounts: list, monkeypatch) -> Path:
    view = run_dir.parent / "read-only-view"
    view.mkdir()
    mount("--bind", run_dir, view)
    mounts.append(view)
    mount("-o", "remount,bind,ro", view)
    return view


def _read_only_by_chmod(run_dir: Path, mounts: list, monkeypatch) -> Path:
    if os.geteuid() == 0:
        pytest.skip("root writes into a 0o555 folder anyway")
    os.chmod(run_dir, 0o555)
    return run_dir


def _read_only_by_injection(run_dir: Path, mounts: list, monkeypatch) -> Path:
    """os.open answers EROFS for every write into the run directory (mkstemp and the lock use os.open)."""
    real_open = os.open
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def open_(path, flags, *args, **kwargs):
        if Path(path).parent == run_dir and flags & writing:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    return run_dir


@pytest.mark.parametrize(
    "make_read_only, cause",
    [
        (_read_only_by_bind_mount, "the file system is read-only"),
        (_read_only_by_chmod, "permission denied"),
        (_read_only_by_injection, "the file system is read-only"),
    ],
    ids=["bind-mount", "chmod", "injected"],
)
def test_resuming_into_a_read_only_run_directory_is_one_line_and_changes_nothing(
    capsys, monkeypatch, tmp_path, mounts, data, make_read_only, cause
):
    source = tmp_path / "r"
    assert tiny_run(capsys, data, source, "--epochs", "1")[0] == 0
    before = snapshot(source)
    run_dir = make_read_only(source, mounts, monkeypatch)
    try:
        code, out, err = helpers.run_cli(["train", "--resume", run_dir, "--epochs", "2"], capsys)
    finally:
        os.chmod(source, 0o755)
    error_line(code, err, str(run_dir), cause)
    assert out == "" and snapshot(source) == before


def test_a_run_directory_deleted_mid_run_is_one_line_and_not_made_again(tmp_path):
    run_dir, log = tmp_path / "run", tmp_path / "log.txt"
    process = start(train_command(run_dir), log)
    try:
        wait_for_step(process, run_dir, STEPS_PER_EPOCH + 2, log)  # a checkpoint is there, and goes too
        os.rename(run_dir, tmp_path / "deleted")  # gone at once: rmtree alone races with the next write
        shutil.rmtree(tmp_path / "deleted")
        process.wait(timeout=120)
    finally:
        process.kill()
    error_line(
        process.returncode,
        log.read_text(),
        f"cannot write {run_dir}/",
        f"the run directory {run_dir} no longer exists (deleted while the run was writing it)",
        "with nothing kept",
    )
    assert not run_dir.exists()


def test_the_temporary_file_of_a_killed_save_is_removed_when_the_run_resumes(capsys, tmp_path, data):
    run_dir = tmp_path / "r"
    assert tiny_run(capsys, data, run_dir, "--epochs", "1")[0] == 0
    leftover = run_dir / "checkpoint_last.npz.x7k2q9.tmp"  # what SIGKILL during a save leaves
    leftover.write_bytes(b"PK\x03\x04 half a checkpoint")
    code, out, err = helpers.run_cli(["train", "--resume", run_dir, "--epochs", "2"], capsys)
    assert code == 0, err
    assert f"note: removed {leftover.name}, left by a run that was killed while saving" in err
    assert temporary_files(run_dir) == []


def test_a_line_cut_short_in_metrics_jsonl_does_not_stop_a_resume(capsys, tmp_path, data):
    """A full disk or a kill can leave half a record at the end of metrics.jsonl: the resume drops it."""
    run_dir = tmp_path / "r"
    assert tiny_run(capsys, data, run_dir, "--epochs", "1")[0] == 0
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"kind": "step", "epoch": 1, "glo')
    code, out, err = helpers.run_cli(["train", "--resume", run_dir, "--epochs", "2"], capsys)
    assert code == 0, err
    assert [r["global_step"] for r in read_metrics(run_dir) if r["kind"] == "step"] == [1, 2, 3, 4, 5, 6]


def test_the_docs_survival_table_names_only_tests_that_exist():
    """Every test the "What a run survives" table of docs/run-directory.md names is a test function of the
    file it names."""
    text = (ROOT / "docs" / "run-directory.md").read_text()
    table = re.search(r"## What a run survives\n(.*?)\n\nThe limits", text, re.S).group(1)
    named = re.findall(r"`(?:(test_\w+\.py)::)?(test_\w+)(?:\[[^\]]*\])?`", table)
    assert len(named) >= 15, named
    missing = [
        f"{file or 'test_run_survival.py'}::{name}"
        for file, name in named
        if f"def {name}(" not in (ROOT / "tests" / (file or "test_run_survival.py")).read_text()
    ]
    assert not missing, f"docs/run-directory.md names tests that do not exist: {missing}"
