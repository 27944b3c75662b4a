"""Data parallel: our MoCo step in one process against the same step over ``mpiexec -n 2``, and PyTorch's.

Three settings of the same model and maths (resnet10 w16, global batch N = 128, K 4096, D 128, T 0.1,
m 0.99, 32×32 inputs, float32), measured in one run:

    one process, 2 BLAS threads     bn_splits 2: BatchNorm over the two interleaved groups of 64
    mpiexec -n 2, 1 thread a rank   bn_splits 1: each rank's 64 samples are exactly one of those groups
                                    (moco_ref/shuffle.py); gradients and BN buffers in one allreduce
    PyTorch, 2 threads              bn_splits 2 (the demo's SplitBatchNorm), torch.set_num_threads(2)

The one-process step and PyTorch's alternate repetition by repetition in this process, as in the
``step`` suite.  The two-process step runs in a child ``mpiexec -n 2 python -m
moco_ref.bench.data_parallel_worker`` with OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=1, which times every step on
every rank (the maximum over ranks is the step's time) and the communicator's collectives inside it, and
prints its figures as JSON.  Figures: medians of the timed steps after warm-up.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from backends import BackendUnavailable
from moco_ref.bench.clock import interleaved, median
from moco_ref.bench.machine import blas_info
from moco_ref.bench.optional_torch import set_torch_threads_like_blas, torch_device
from moco_ref.bench.tables import banner, table
from moco_ref.bench.workload import Config, make_ours, make_torch
from moco_ref.parallel.environment import WORLD_SIZE_VARIABLES
from moco_ref.run.runtime import THREAD_VARIABLES

PROCESSES = 2
CONFIG = Config(batch=128, bn_splits=PROCESSES)  # resnet10 w16, K 4096, D 128, 32×32
TINY_DP = Config(width=2, batch=8, K=64, dim=16, size=8, bn_splits=PROCESSES)
TARGET_SPEEDUP = 1.4  # the targets: 2 processes ≥ 1.4× one,
TARGET_RATIO = 1.0  # and time ours / PyTorch ≤ 1.0
MPI_HINT = "pip install 'moco-ref[mpi]' (mpi4py and the mpich wheel, which ships mpiexec)"
IMPORT_ROOT = Path(__file__).resolve().parents[2]  # the folder holding moco_ref and backends


def plan(quick: bool, tiny: bool = False) -> dict:
    """Test-sized (no PyTorch: importing it takes seconds), quick, or the full measurement."""
    if tiny:
        return dict(config=TINY_DP, reps=1, warmup=0, compare_torch=False)
    if quick:
        return dict(config=CONFIG, reps=5, warmup=2)
    return dict(config=CONFIG, reps=20, warmup=3)


def find_mpiexec() -> str | None:
    """The mpiexec next to this Python (where the mpich wheel puts it), else the first on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def require_mpi(backend_name: str) -> str:
    """The mpiexec to use; BackendUnavailable (one line, exit 2 from the CLI) without it or mpi4py."""
    if backend_name != "numpy":
        raise BackendUnavailable(
            "the dp suite measures the NumPy step on this machine's cores; run it with --backend numpy"
        )
    mpiexec = find_mpiexec()
    has_mpi4py = importlib.util.find_spec("mpi4py") is not None
    if mpiexec is None or not has_mpi4py:
        missing = [name for name, ok in (("mpi4py", has_mpi4py), ("mpiexec", mpiexec is not None)) if not ok]
        raise BackendUnavailable(
            f"the dp suite runs the step under mpiexec, but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing; {MPI_HINT}"
        )
    return mpiexec


def run_worker(config: Config, steps: int, warmup: int, processes: int = PROCESSES) -> dict:
    """Runs the worker under ``mpiexec -n processes`` (one BLAS thread a rank); returns rank 0's JSON."""
    command = [
        require_mpi("numpy"),
        "-n",
        str(processes),
        sys.executable,
        "-m",
        "moco_ref.bench.data_parallel_worker",
        "--arch",
        config.arch,
        "--width",
        str(config.width),
        "--batch",
        str(config.batch),
        "--K",
        str(config.K),
        "--dim",
        str(config.dim),
        "--size",
        str(config.size),
        "--steps",
        str(steps),
        "--warmup",
        str(warmup),
    ]
    env = {k: v for k, v in os.environ.items() if k not in WORLD_SIZE_VARIABLES and not k.startswith("MOCO_REF_")}
    env.update({name: "1" for name in THREAD_VARIABLES})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(IMPORT_ROOT), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(command, cwd=IMPORT_ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"mpiexec -n {processes} data_parallel_worker failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_dp(
    backend_name: str,
    echo,
    config: Config,
    reps: int,
    warmup: int,
    compare_torch: bool = True,
    processes: int = PROCESSES,
) -> dict:
    """Measures the three settings; prints a table and the traffic; returns the figures."""
    require_mpi(backend_name)
    banner(
        f"dp: one process against mpiexec -n {processes}, and PyTorch ({config.label}, "
        f"bn_splits {config.bn_splits} in one process)",
        echo,
    )
    threads = blas_info()["threads"]
    if threads != processes:
        echo(
            f"note: this process's BLAS has {threads} threads, not {processes}: the one-process figure is "
            f"for {threads} (set OPENBLAS_NUM_THREADS={processes} to compare like with like)"
        )
    device = torch_device(backend_name) if compare_torch else None
    torch_threads = set_torch_threads_like_blas() if device == "cpu" else None
    runners = {"one_process": make_ours(config, backend_name)[1:]}
    if device is not None:
        runners["torch"] = make_torch(config, device)[1:]
    times = interleaved(runners, reps, warmup)
    del runners
    single = {
        name: {"median_s": median(series), "images_per_s": config.batch / median(series), "times_s": series}
        for name, series in times.items()
    }
    single["one_process"]["blas_threads"] = threads
    if "torch" in single:
        single["torch"]["threads"] = torch_threads
    parallel = run_worker(config, reps, warmup, processes)

    one, torch_figures = single["one_process"], single.get("torch")
    speedup = one["median_s"] / parallel["median_s"]
    ratios = (
        {
            name: seconds / torch_figures["median_s"]
            for name, seconds in (("one_process", one["median_s"]), ("data_parallel", parallel["median_s"]))
        }
        if torch_figures
        else None
    )
    rows = [
        [
            f"ours, 1 process × {threads} BLAS threads (bn_splits {config.bn_splits})",
            one["images_per_s"],
            1.0,
            ratios and ratios["one_process"],
            None,
        ],
        [
            f"ours, mpiexec -n {processes} × 1 thread (bn_splits 1 a rank)",
            parallel["images_per_s"],
            speedup,
            ratios and ratios["data_parallel"],
            1e3 * parallel["comm_median_s"],
        ],
    ]
    if torch_figures:
        rows.append(
            [
                f"PyTorch, 1 process × {torch_threads} threads (bn_splits {config.bn_splits})",
                torch_figures["images_per_s"],
                one["median_s"] / torch_figures["median_s"],
                1.0,
                None,
            ]
        )
    table(["setting", "images/s", "× one process", "time ours/PyTorch", "comm ms/step"], rows, echo)
    echo(
        f"medians of {reps} steps after {warmup} warm-up (one process and PyTorch interleaved; the "
        f"{processes}-process step: the slowest rank's time per step); time ours/PyTorch ≤ 1 means no slower."
    )

    echo("")
    echo(
        f"communication in the {processes}-process step (per step; times: median over steps of the longest "
        "time over ranks, waiting included; MPI call: the Allreduce/Allgather/Bcast alone, without packing):"
    )
    kib = 1024
    table(
        ["traffic", "calls", "sent KiB/rank", "result KiB", "ms", "MPI call ms"],
        [
            [
                kind,
                c["calls"],
                c["bytes_sent"] / kib,
                c["bytes_received"] / kib,
                1e3 * c["median_s"],
                1e3 * c["wire_median_s"],
            ]
            for kind, c in parallel["comm"].items()
        ],
        echo,
    )
    echo(
        f"in all: {1e3 * parallel['comm_median_s']:.1f} ms in the communicator ({1e3 * parallel['wire_median_s']:.1f}"
        f" ms of it in MPI calls) on the rank that waited longest, {1e3 * parallel['comm_last_rank_median_s']:.1f} ms "
        f"on the rank that came last (the collectives' own cost; the rest is waiting for the other rank); step "
        f"{1e3 * parallel['median_s']:.0f} ms; {parallel['bytes_per_rank_per_step'] / 2**20:.2f} MiB sent per rank "
        f"per step; {parallel['mpi']}"
    )

    targets = {"speedup": {"target": f"≥ {TARGET_SPEEDUP}", "value": speedup, "met": speedup >= TARGET_SPEEDUP}}
    echo("")
    echo(
        f"target {processes} processes ≥ {TARGET_SPEEDUP}× one process: "
        f"{'met' if targets['speedup']['met'] else 'NOT met'} ({speedup:.2f}×)"
    )
    if ratios:
        targets["ratio_to_torch"] = {
            "target": f"≤ {TARGET_RATIO}",
            "value": ratios["data_parallel"],
            "met": ratios["data_parallel"] <= TARGET_RATIO,
        }
        echo(
            f"target no slower than PyTorch (time ours/PyTorch ≤ {TARGET_RATIO}): "
            f"{'met' if targets['ratio_to_torch']['met'] else 'NOT met'} with {processes} processes "
            f"({ratios['data_parallel']:.3f}; one process: {ratios['one_process']:.3f})"
        )
    return {
        "config": config.as_dict(),
        "processes": processes,
        "reps": reps,
        "warmup": warmup,
        "one_process": one,
        "torch": torch_figures,
        "data_parallel": parallel,
        "speedup_over_one_process": speedup,
        "ratio_time_ours_over_torch": ratios,
        "targets": targets,
    }
