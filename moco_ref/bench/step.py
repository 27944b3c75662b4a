"""The headline: images/s of the full MoCo step, ours against PyTorch's, and the share of GEMM peak.

One step = query forward + backward, momentum update, shuffled key forward, InfoNCE
over the queue, SGD, enqueue (``moco_ref.moco.MoCo.step`` and ``moco_ref.pytorch_moco.TorchMoCo.step``).
Both run float32 with plain BatchNorm, on the same inputs, alternating repetition by
repetition; PyTorch gets as many threads as NumPy's BLAS.
"""

from __future__ import annotations

from backends import get_backend
from moco_ref.bench.clock import interleaved, median
from moco_ref.bench.flops import step_flops
from moco_ref.bench.machine import blas_info
from moco_ref.bench.optional_torch import set_torch_threads_like_blas, torch_device
from moco_ref.bench.peaks import gemm_peak
from moco_ref.bench.tables import banner, table
from moco_ref.bench.workload import REFERENCE, TINY, Config, make_ours, make_torch

STEP_CONFIGS = (REFERENCE, Config("resnet18", width=32, batch=64), Config("resnet18", width=64, batch=32))


def plan(quick: bool, tiny: bool = False) -> dict:
    """The suite's settings: the full set, the quick one (reference only, fewer reps) or a test-sized one."""
    if tiny:  # no PyTorch: importing it takes seconds (the slow smoke test covers that path)
        return dict(configs=(TINY,), reps=1, warmup=0, gemm_n=128, gemm_reps=1, compare_torch=False)
    if quick:
        return dict(configs=(REFERENCE,), reps=3, warmup=1, gemm_n=2048, gemm_reps=3)
    return dict(configs=STEP_CONFIGS, reps=5, warmup=1, gemm_n=2048, gemm_reps=5)


def _figures(seconds: float, batch: int, flops: int, peak_gflops: float) -> dict:
    gflops = flops / seconds / 1e9
    return {
        "median_s": seconds,
        "images_per_s": batch / seconds,
        "gflops": gflops,
        "fraction_of_gemm_peak": gflops / peak_gflops,
    }


def run_step(
    backend_name: str, echo, configs, reps: int, warmup: int, gemm_n: int, gemm_reps: int, compare_torch: bool = True
) -> dict:
    """Measures every configuration; prints a table; returns the figures."""
    banner("step: the full MoCo step, ours vs PyTorch", echo)
    backend = get_backend(backend_name)
    device = torch_device(backend_name) if compare_torch else None
    torch_threads = set_torch_threads_like_blas() if device == "cpu" else None
    peak = gemm_peak(backend, gemm_n, gemm_reps)
    echo(f"float32 GEMM peak ({gemm_n}³ matmul, median of {gemm_reps}): {peak['gflops']:.1f} GFLOP/s")
    if device is None:
        echo("PyTorch: left out (not asked for, not installed, or no CUDA build for a GPU comparison)")
    else:
        echo(
            f"PyTorch on {device}, {torch_threads or 'its own'} threads; NumPy's BLAS {blas_info()['threads']} threads"
        )
    records = []
    for config in configs:
        model, ours, sync = make_ours(config, backend_name)
        runners = {"ours": (ours, sync)}
        if device is not None:
            _, theirs, torch_sync = make_torch(config, device)
            runners["torch"] = (theirs, torch_sync)
        times = interleaved(runners, reps, warmup)
        flops = step_flops(model.encoder_q, config.batch, config.K, config.size)
        record = {"config": config.as_dict(), "flops": flops, "reps": reps, "warmup": warmup}
        for name, series in times.items():
            record[name] = dict(_figures(median(series), config.batch, flops["total"], peak["gflops"]), times_s=series)
        record["ratio_time_ours_over_torch"] = (
            record["ours"]["median_s"] / record["torch"]["median_s"] if "torch" in record else None
        )
        records.append(record)
        del model, runners

    rows = []
    for r in records:
        o, t = r["ours"], r.get("torch")
        rows.append(
            [
                r["config"]["label"],
                r["flops"]["total"] / 1e9,
                o["median_s"],
                o["images_per_s"],
                t and t["median_s"],
                t and t["images_per_s"],
                r["ratio_time_ours_over_torch"],
                o["gflops"],
                100 * o["fraction_of_gemm_peak"],
                t and 100 * t["fraction_of_gemm_peak"],
            ]
        )
    table(
        [
            "config",
            "GFLOP/step",
            "ours s",
            "ours img/s",
            "torch s",
            "torch img/s",
            "time ours/torch",
            "ours GFLOP/s",
            "ours %peak",
            "torch %peak",
        ],
        rows,
        echo,
    )
    echo(f"medians of {reps} interleaved repetitions after {warmup} warm-up; ratio < 1 means ours is faster.")
    echo(
        "FLOPs: matrix products only — conv MACs N·Ho·Wo·O·C·kh·kw ×4 (q forward, ∂x, ∂w, k forward) "
        "less the first conv's ∂x, fc ×4, InfoNCE N·K·D ×2 (logits and ∂q); 1 MAC = 2 FLOPs."
    )
    return {"gemm_peak": peak, "torch_threads": torch_threads, "torch_device": device, "configs": records}
