"""The speed suites of ``moco-ref bench``: their one list, and the runner that prints their tables and returns
their figures.

    from moco_ref.bench.suites import run
    figures = run("step", backend="numpy", quick=True, out="bench.json", echo=print)

Each suite is a module of this folder (see its docstring); ``SUITES`` names them with what each measures, in
the order ``moco-ref bench --help`` lists them.  ``moco-ref bench learn`` measures learning, not speed:
moco_ref/bench/learn.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from backends import get_backend
from moco_ref.bench import augment, data_parallel, memory, parts, scaling, step
from moco_ref.bench.machine import header_lines, load_average, machine_header, python_command
from moco_ref.paths import refused

IN_ALL = {  # the suites "all" runs, and what each measures
    "step": "the full MoCo step, images/s, ratio to PyTorch, GFLOP/s, % of GEMM peak",
    "parts": "where a step's time goes (conv GEMMs, im2col, BatchNorm, ...)",
    "scaling": "step time against batch, K and width",
    "memory": "peak memory, ours and PyTorch's (fresh processes)",
    "augment": "augmentation throughput against training throughput",
}
SUITES = {  # every name ``moco-ref bench SUITE`` takes
    **IN_ALL,
    "all": "all of the above",
    "dp": "one process against mpiexec -n 2 (data parallel) and PyTorch, with the time in communication "
    '(needs mpi4py and mpiexec; not part of "all")',
}


def run(
    suite: str,
    backend: str = "numpy",
    quick: bool = False,
    out: str | None = None,
    echo=print,
    *,
    tiny: bool = False,
    command: str | None = None,
) -> dict:
    """Runs one suite (or "all"), printing human-readable tables through ``echo``.

    Args:
        suite: a name of ``SUITES``.
        backend: "numpy" or "cupy" (our step's backend; PyTorch runs on the matching device).
        quick: fewer configurations and repetitions (minutes instead of tens of minutes on 2 cores).
        out: if given, the returned figures are also written there as JSON.
        echo: a print-like callable that receives every output line.
        tiny: test-sized settings (width 2, batch 8, K 64, one repetition): checks the plumbing only.
        command: the command line to record in the header (default: this process's argv).
    Returns:
        {"header": machine and versions, "<suite>": that suite's figures, ...}.
    """
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
    get_backend(backend)  # fails early, with the fix in the message, when the backend cannot run
    if suite == "dp":
        data_parallel.require_mpi(backend)  # likewise without mpi4py or mpiexec, before the header
    from backends.cpu import reuse_freed_memory

    reuse_freed_memory()  # as `moco-ref train` does; PyTorch's CPU tensors use the same allocator
    header = machine_header(backend, command or python_command())
    for line in header_lines(header):
        echo(line)
    results: dict[str, Any] = {"header": header, "quick": quick, "tiny": tiny}
    for name in IN_ALL if suite == "all" else (suite,):
        if name == "dp":
            results["dp"] = data_parallel.run_dp(backend, echo, **data_parallel.plan(quick, tiny))
        elif name == "step":
            results["step"] = step.run_step(backend, echo, **step.plan(quick, tiny))
        elif name == "parts":
            results["parts"] = parts.run_parts(backend, echo, **parts.plan(quick, tiny))
        elif name == "scaling":
            results["scaling"] = scaling.run_scaling(backend, echo, **scaling.plan(quick, tiny))
        elif name == "memory":
            results["memory"] = memory.run_memory(backend, echo, **memory.plan(quick, tiny))
        elif name == "augment":
            settings = augment.plan(quick, tiny)
            results["augment"] = augment.run_augment(
                backend,
                echo,
                **settings,
                training_images_per_s=_training_rate(results.get("step"), settings["step_config"]),
            )
        results[name]["load_average_end"] = load_average()
    header["load_average_end"] = load_average()
    echo("")
    echo(f"load average at the end (1, 5, 15 min): {header['load_average_end']}")
    if out:
        with refused(out, "--out"):
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            with open(out, "w") as f:
                json.dump(results, f, indent=2, default=json_value)
        echo(f"figures written to {out}")
    return results


def _training_rate(step_figures: dict | None, config) -> float | None:
    """Our images/s for ``config`` from the step suite of this run, if it measured that configuration."""
    for record in (step_figures or {}).get("configs", []):
        if record["config"] == config.as_dict():
            return record["ours"]["images_per_s"]
    return None


def json_value(value):
    """JSON fallback for NumPy scalars and tuples of them."""
    return value.item() if hasattr(value, "item") else str(value)
