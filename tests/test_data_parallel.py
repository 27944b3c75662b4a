"""Data-parallel MoCo: W processes under mpiexec train exactly the model one process trains with W BatchNorm splits.

The two-process tests run ``mpiexec -n 2 python -m moco_ref train`` on the built-in data (skipped without
mpi4py or mpiexec).  They compare checkpoints: every parameter and buffer of both encoders, the queue, its
pointer and the optimiser state.  Without MPI, the pieces are checked in this process: a share of a batch
augments exactly as the whole batch, and the interleaved gather puts every sample back in its place.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import MPIEXEC, mpi_env, needs_mpi

from moco_ref.augment import PIPELINES, make_pipeline
from moco_ref.run.checkpoint import load_checkpoint
from moco_ref.shuffle import concat_all_gather, local_share
from moco_ref.tools.gradcheck import relative_error

ROOT = Path(__file__).resolve().parents[1]
# Small and quick: width 2, 2 000 built-in images, 16 images a step, float64 for the comparisons.
QUICK = [
    "--width",
    "2",
    "-b",
    "16",
    "--moco-k",
    "64",
    "--dtype",
    "float64",
    "--knn-every",
    "0",
    "--log-every",
    "1",
    "--epochs",
    "1",
]


def train(tmp_path, name, *flags, ranks=None, timeout=300, env=None):
    """Runs ``[mpiexec -n ranks] python -m moco_ref train --out tmp_path/name flags``; returns (code, stderr, dir)."""
    run_dir = tmp_path / name
    command = [sys.executable, "-m", "moco_ref", "train", "--out", str(run_dir), *map(str, flags)]
    if ranks is not None:
        command = [MPIEXEC, "-n", str(ranks), *command]
    result = subprocess.run(
        command, cwd=tmp_path, env=env or mpi_env(ROOT), capture_output=True, text=True, timeout=timeout
    )
    return result.returncode, result.stderr, run_dir


def assert_same_run(a: Path, b: Path, rtol: float) -> None:
    """Every array of the two checkpoints within rtol (0 = bit for bit), and the same logged losses."""
    arrays_a, meta_a = load_checkpoint(a / "checkpoint_last.npz")
    arrays_b, meta_b = load_checkpoint(b / "checkpoint_last.npz")
    assert sorted(arrays_a) == sorted(arrays_b)
    assert meta_a["global_step"] == meta_b["global_step"]
    for name in arrays_a:
        if rtol == 0:
            assert np.array_equal(arrays_a[name], arrays_b[name]), f"{name} differs"
        else:
            error, worst = relative_error(arrays_a[name], arrays_b[name])
            assert error <= rtol, f"{name}: relative error {error:.2e} > {rtol:.0e} at {worst}"
    losses = [
        [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "step"]
        for run in (a, b)
    ]
    assert len(losses[0]) == len(losses[1]) > 0
    error, _ = relative_error(losses[0], losses[1])
    assert error <= rtol, f"logged losses: relative error {error:.2e}"


# ----------------------------------------------------------------- in this process
@pytest.mark.parametrize("name", PIPELINES)
@pytest.mark.parametrize("processes", [2, 3])
def test_a_share_of_a_batch_augments_exactly_as_the_whole_batch(name, processes):
    """Parameters drawn for the whole batch, this process's rows of images and parameters applied (taken once,
    where the trainer forms the batch): the same views, the same generator state."""
    images = np.random.default_rng(0).integers(0, 256, (12, 20, 20, 3), dtype=np.uint8)
    pipeline = make_pipeline(name, 16)
    whole_rng = np.random.default_rng(5)
    whole = pipeline(images, whole_rng)
    for rank in range(processes):
        rng = np.random.default_rng(5)
        comm = _Rank(rank, processes)
        draws = pipeline.draw(rng, len(images), 20, 20)
        part = pipeline.apply(local_share(images, comm), local_share(draws, comm))
        assert np.array_equal(part, whole[rank::processes]), f"rank {rank} of {processes}"
        assert rng.bit_generator.state == whole_rng.bit_generator.state, "the generators must stay in step"


class _Rank:
    """Which process this is, all that local_share asks of a communicator."""

    def __init__(self, rank, size):
        self.rank, self.size = rank, size


class _Gathered:
    """Stands in for W processes at once: allgather of rank r's share gives what MPI's Allgather gives."""

    def __init__(self, shares):
        self.shares, self.size = shares, len(shares)

    def allgather(self, x):
        return np.concatenate(self.shares, axis=0)


def test_the_gather_puts_every_sample_back_in_its_place():
    batch = np.arange(12 * 2).reshape(12, 2)
    for W in (2, 3, 4):
        shares = [batch[r::W] for r in range(W)]
        comm = _Gathered(shares)
        assert np.array_equal(concat_all_gather(shares[0], comm), batch)
        for r in range(W):
            comm.rank = r
            assert np.array_equal(local_share(batch, comm), shares[r])


# ----------------------------------------------------------------- two processes
@needs_mpi
@pytest.mark.parametrize(
    "flags,splits",
    [
        ([], ("1", "2")),
        (["--symmetric", "--aug", "v2", "--mlp"], ("1", "2")),
        ([], None),
        (["--no-shuffle-bn"], ("1", "2")),
    ],
    ids=["asymmetric", "symmetric-v2-mlp", "default-splits", "no-shuffle-bn"],
)
def test_two_processes_equal_one_process_with_two_bn_splits(tmp_path, flags, splits):
    """`mpiexec -n 2 moco-ref train --bn-splits 1` and `moco-ref train --bn-splits 2`: the same run (<= 1e-10).
    Without --bn-splits the default's two groups are shared out over the two processes: the default run."""
    two_splits, one_splits = (["--bn-splits", splits[0]], ["--bn-splits", splits[1]]) if splits else ([], [])
    code, err, two = train(tmp_path, "two", *QUICK, "--max-steps", "4", *two_splits, *flags, ranks=2)
    assert code == 0, err
    shown = [line.split(" [")[0] for line in err.splitlines() if line.startswith("epoch 1/1 ")]
    assert shown == [f"epoch 1/1 {step}/4" for step in range(1, 5)], err  # rank 0 alone shows progress
    if not splits:
        assert "1 group(s) on each of the 2 processes" in err
    code, err, one = train(tmp_path, "one", *QUICK, "--max-steps", "4", *one_splits, *flags)
    assert code == 0, err
    assert_same_run(two, one, rtol=1e-10)
    assert load_checkpoint(two / "checkpoint_last.npz")[1]["world_size"] == 2
    evaluated = subprocess.run(
        [sys.executable, "-m", "moco_ref", "eval", "knn", "--checkpoint", str(two)],
        cwd=tmp_path,
        env=mpi_env(ROOT),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert evaluated.returncode == 0 and 0 <= json.loads(evaluated.stdout)["top1"] <= 100, evaluated.stderr


@needs_mpi
def test_a_two_process_run_resumes_bit_identically(tmp_path):
    code, err, whole = train(tmp_path, "whole", *QUICK, "--max-steps", "6", ranks=2)
    assert code == 0, err
    code, err, part = train(tmp_path, "part", *QUICK, "--max-steps", "3", ranks=2)
    assert code == 0, err
    command = [MPIEXEC, "-n", "2", sys.executable, "-m", "moco_ref", "train", "--resume", str(part), "--max-steps", "6"]
    result = subprocess.run(command, cwd=tmp_path, env=mpi_env(ROOT), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert_same_run(part, whole, rtol=0)

    # With another number of processes: refused in one line that names both.
    code, err, _ = train(tmp_path, "elsewhere", "--resume", str(part))
    assert code == 2 and "2 process(es)" in err and "with 1" in err and "Traceback" not in err, err


@needs_mpi
def test_a_batch_that_does_not_split_over_the_processes_is_one_clear_error(tmp_path):
    code, err, run_dir = train(tmp_path, "odd", *QUICK, "-b", "15", ranks=2)
    assert code == 2, err
    assert "does not split evenly over 2 processes" in err and "Traceback" not in err, err
    assert not (run_dir / "checkpoint_last.npz").exists()


def _rank_pid(marker: str, rank: int) -> int | None:
    """The pid of the process with MOCO_TEST_MARKER=marker and PMI_RANK=rank, from /proc."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"MOCO_TEST_MARKER={marker}".encode() in environ and f"PMI_RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


@needs_mpi
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's pid in /proc")
def test_a_killed_rank_ends_the_job_and_the_run_resumes(tmp_path):
    """SIGKILL one rank mid-run: mpiexec ends by itself within seconds, the last checkpoint loads, --resume finishes."""
    marker = f"{os.getpid()}-{time.time()}"
    run_dir = tmp_path / "run"
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
        "4",
        "--epochs",
        "40",
        "--knn-every",
        "0",
    ]
    job = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=mpi_env(ROOT, MOCO_TEST_MARKER=marker),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "checkpoint_last.npz").exists() and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert job.poll() is None, job.communicate()[1]
        pid = _rank_pid(marker, 1)
        assert pid is not None, "rank 1 not found"
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        _, err = job.communicate(timeout=20)  # a hang would raise TimeoutExpired here
        ended_after = time.monotonic() - killed
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    print(f"the job ended {ended_after:.2f} s after rank 1 was killed (exit code {job.returncode})")
    assert job.returncode != 0
    arrays, meta = load_checkpoint(run_dir / "checkpoint_last.npz")
    assert meta["world_size"] == 2 and meta["global_step"] > 0
    resume = [
        MPIEXEC,
        "-n",
        "2",
        sys.executable,
        "-m",
        "moco_ref",
        "train",
        "--resume",
        str(run_dir),
        "--epochs",
        str(meta["epoch"] + 1),
    ]
    result = subprocess.run(resume, cwd=tmp_path, env=mpi_env(ROOT), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    final = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert final["kind"] == "final" and final["epoch"] == meta["epoch"] + 1
