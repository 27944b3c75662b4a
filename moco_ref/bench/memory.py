"""Peak memory of ours and PyTorch's MoCo step, each measured in a fresh subprocess.

Each implementation runs in its own ``python -m moco_ref.bench.memory_probe`` so that
neither inherits the other's allocations, imports or allocator caches.  The figure
is the peak resident set size (the probe's own ru_maxrss, read as VmHWM) less the
resident set size after the imports (and our compiled kernels): what the two encoders, the queue,
the optimiser state, the activations of a step and the allocator's slack cost.  Ours is set
against the estimate a run makes before its first step (moco_ref/run/footprint.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from moco_ref.bench.machine import blas_info
from moco_ref.bench.optional_torch import import_torch, torch_device
from moco_ref.bench.tables import banner, table
from moco_ref.bench.workload import REFERENCE, TINY

# The folder holding the moco_ref and backends packages (the clone, or site-packages when installed): the probe
# imports them from there.
IMPORT_ROOT = Path(__file__).resolve().parents[2]


def plan(quick: bool, tiny: bool = False) -> dict:
    """Tiny (for the smoke tests) probes ours only: a fresh process importing torch costs seconds."""
    if tiny:
        return dict(config=TINY, steps=1, implementations=("ours",))
    return dict(config=REFERENCE, steps=2 if quick else 3, implementations=("ours", "torch"))


def probe(which: str, config, steps: int, backend_name: str, threads: int | None) -> dict:
    """Runs the probe in a fresh interpreter and returns its JSON record."""
    command = [
        sys.executable,
        "-m",
        "moco_ref.bench.memory_probe",
        which,
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
        "--backend",
        backend_name,
    ]
    if threads:
        command += ["--threads", str(threads)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(IMPORT_ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run(command, cwd=IMPORT_ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe '{which}' failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_memory(backend_name: str, echo, config, steps: int, implementations=("ours", "torch")) -> dict:
    banner(f"memory: peak resident memory added by the model and {steps} steps ({config.label})", echo)
    records = {"ours": probe("ours", config, steps, backend_name, None)}
    if "torch" in implementations:
        if import_torch() is not None and torch_device(backend_name) is not None:
            records["torch"] = probe("torch", config, steps, backend_name, blas_info()["threads"])
        else:
            echo("PyTorch: left out (not installed, or no CUDA build for a GPU comparison)")
    ratio = records["ours"]["added_bytes"] / records["torch"]["added_bytes"] if "torch" in records else None
    mib = 2**20
    ours = records["ours"]
    estimate_ratio = ours["estimate_bytes"] / ours["added_bytes"] if ours["added_bytes"] > 0 else None
    table(
        ["implementation", "RSS after imports MiB", "peak RSS MiB", "added MiB", "estimated MiB"],
        [
            [
                name,
                r["baseline_rss_bytes"] / mib,
                r["peak_rss_bytes"] / mib,
                r["added_bytes"] / mib,
                r.get("estimate_bytes", 0) / mib or None,
            ]
            for name, r in records.items()
        ],
        echo,
    )
    if estimate_ratio is not None:
        echo(
            f"estimate (moco_ref/run/footprint.py, what `moco-ref train` checks before the first step) / "
            f"measured: {estimate_ratio:.2f} ({'within' if abs(estimate_ratio - 1) <= 0.25 else 'NOT within'} 25 %)"
        )
    if ratio is not None:
        echo(f"added memory ours/PyTorch: {ratio:.2f}")
    echo(
        "Each in a fresh process: peak RSS (VmHWM — the process's own ru_maxrss; Linux's ru_maxrss would "
        "carry the parent's peak across fork+exec) less the RSS after imports."
    )
    return dict(
        records,
        config=config.as_dict(),
        steps=steps,
        ratio_added_ours_over_torch=ratio,
        ratio_estimate_over_measured=estimate_ratio,
    )
