"""How our step time grows with batch N, queue size K and width w, one at a time around the reference.

Expected: about linear in N (every layer's work is proportional to N), nearly flat
in K (K enters only the two N·K·D InfoNCE products, small beside the convolutions),
and roughly quadratic in w (conv MACs go as C·O).  The growth is summarised by the
exponent b of a least-squares fit t ∝ xᵇ on log-log axes.
"""

from __future__ import annotations

import math
from dataclasses import replace

from moco_ref.bench.clock import interleaved, median
from moco_ref.bench.tables import banner, table
from moco_ref.bench.workload import REFERENCE, TINY, make_ours

AXES = {"batch": (16, 32, 64, 128, 256), "K": (1024, 4096, 16384, 65536), "width": (8, 16, 32)}
QUICK_AXES = {"batch": (16, 64, 128), "K": (1024, 65536), "width": (8, 16)}


def plan(quick: bool, tiny: bool = False) -> dict:
    if tiny:
        return dict(base=TINY, axes={"batch": (4, 8), "K": (32, 64), "width": (2, 4)}, reps=1, warmup=0)
    if quick:
        return dict(base=REFERENCE, axes=QUICK_AXES, reps=2, warmup=1)
    return dict(base=REFERENCE, axes=AXES, reps=3, warmup=1)


def fitted_exponent(xs, ts) -> float:
    """b of the least-squares fit log t = a + b·log x."""
    lx, lt = [math.log(x) for x in xs], [math.log(t) for t in ts]
    mx, mt = sum(lx) / len(lx), sum(lt) / len(lt)
    return sum((a - mx) * (b - mt) for a, b in zip(lx, lt)) / sum((a - mx) ** 2 for a in lx)


def _verdict(axis: str, exponent: float) -> str:
    if axis == "batch":
        return "about linear in batch" if 0.8 <= exponent <= 1.2 else f"not linear in batch (exponent {exponent:.2f})"
    if axis == "K":
        return "about flat in K" if exponent <= 0.1 else f"grows with K (exponent {exponent:.2f})"
    return f"time ∝ width^{exponent:.2f}"


def run_scaling(backend_name: str, echo, base, axes: dict, reps: int, warmup: int) -> dict:
    banner(f"scaling: step time around {base.label}", echo)
    results = {}
    for axis, values in axes.items():
        # All points of an axis are built first and timed in alternation, so that they share the noise.
        configs = [replace(base, **{axis: value}) for value in values]
        runners = {}
        for config in configs:
            _, step, sync = make_ours(config, backend_name)
            runners[config] = (step, sync)
        times = interleaved(runners, reps, warmup)
        del runners
        points = []
        for value, config in zip(values, configs):
            seconds = median(times[config])
            points.append(
                {
                    axis: value,
                    "median_s": seconds,
                    "s_per_image": seconds / config.batch,
                    "images_per_s": config.batch / seconds,
                }
            )
        exponent = fitted_exponent(values, [p["median_s"] for p in points])
        results[axis] = {"points": points, "exponent": exponent, "verdict": _verdict(axis, exponent)}
        echo("")
        table(
            [axis, "s/step", "ms/image", "img/s"],
            [[p[axis], p["median_s"], 1e3 * p["s_per_image"], p["images_per_s"]] for p in points],
            echo,
        )
        echo(f"fit t ∝ {axis}^b: b = {exponent:.2f} — {results[axis]['verdict']}")
    echo(f"medians of {reps} repetitions after {warmup} warm-up; the points of an axis alternate.")
    return {"base": base.as_dict(), "reps": reps, "axes": results}
