"""Where the time of one MoCo step goes, and where each part stands against the machine (a roofline).

Every part is timed by wrapping the functions the step calls: the primitives of backends/ops.py
(im2col, col2im, BatchNorm's passes, ReLU's backward) where the layers call them, and the layer and
step functions in the modules that use them (``moco_ref.models.resnet`` imports ``conv2d_forward``
by name, so that is where it is replaced).  The wrappers are removed afterwards.  Times are
exclusive: a part's own time less the wrapped parts it called (conv forward GEMM = conv2d_forward
less its im2col; a convolution the ``fast`` extra computes directly, without im2col, counts whole in
the conv rows and in the GEMM table, at the FLOPs of its products).  What no wrapper covers (the input's
NCHW→NHWC transpose, the residual joins of the backward, Python glue) is the row "other".

For each part the wrappers also count the bytes its calls read and write (the sizes of the arrays
passed in and returned: the least traffic the call can have) and, for the products, the FLOPs; with
the time that gives GB/s and GFLOP/s, set against this machine's measured memory bandwidth (one
thread and all threads) and float32 GEMM rate.  A second table gives every convolution's GEMMs,
in the step and alone.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections import defaultdict

import numpy as np

from backends import get_backend
from backends.cpu import blas_threads
from backends.ops import conv_output_size
from moco_ref.augment import make_pipeline
from moco_ref.bench.clock import interleaved, median
from moco_ref.bench.peaks import gemm_peak, memory_bandwidth
from moco_ref.bench.tables import banner, table
from moco_ref.bench.workload import REFERENCE, TINY, make_ours

# (module or class, attribute, part).  conv2d_forward/backward are timed without the im2col/col2im they call.
TARGETS = (
    ("moco_ref.models.resnet", "conv2d_forward", "conv forward GEMM"),
    ("moco_ref.models.resnet", "conv2d_backward", "conv backward GEMMs"),
    ("backends.ops", "im2col", "im2col"),
    ("backends.ops", "col2im", "col2im"),
    ("backends.ops", "channel_moments", "BatchNorm moments"),
    ("backends.ops", "batchnorm_output", "BatchNorm output (+ add, ReLU)"),
    ("backends.ops", "batchnorm_grad_sums", "BatchNorm backward sums"),
    ("backends.ops", "batchnorm_input_grad", "BatchNorm input gradient"),
    ("backends.ops", "relu_backward", "ReLU backward"),
    ("moco_ref.models.resnet", "batchnorm_forward", "BatchNorm vectors"),
    ("moco_ref.models.resnet", "batchnorm_backward", "BatchNorm vectors"),
    ("moco_ref.models.resnet", "linear_forward", "fc + pooling"),
    ("moco_ref.models.resnet", "linear_backward", "fc + pooling"),
    ("moco_ref.models.resnet", "relu_forward", "fc + pooling"),
    ("moco_ref.models.resnet", "relu_backward", "fc + pooling"),
    ("moco_ref.models.resnet", "global_avg_pool_forward", "fc + pooling"),
    ("moco_ref.models.resnet", "global_avg_pool_backward", "fc + pooling"),
    ("moco_ref.moco", "normalize_forward", "loss (normalize + InfoNCE)"),
    ("moco_ref.moco", "normalize_backward", "loss (normalize + InfoNCE)"),
    ("moco_ref.moco", "info_nce_forward", "loss (normalize + InfoNCE)"),
    ("moco_ref.moco", "info_nce_backward", "loss (normalize + InfoNCE)"),
    ("moco_ref.moco", "instance_accuracy", "loss (normalize + InfoNCE)"),
    ("moco_ref.moco", "batch_shuffle", "shuffle / unshuffle"),
    ("moco_ref.moco", "batch_unshuffle", "shuffle / unshuffle"),
    ("moco_ref.optim:SGD", "step_", "optimiser (SGD)"),
    ("moco_ref.moco", "momentum_update_", "EMA (momentum update)"),
    ("moco_ref.queue:KeyQueue", "enqueue", "enqueue"),
)
PART_ORDER = tuple(dict.fromkeys(part for _, _, part in TARGETS)) + ("other",)
GEMM_PARTS = ("conv forward GEMM", "conv backward GEMMs")
# Parts whose own work is on small vectors, though large arrays pass through them: no bytes counted.
PASS_THROUGH = ("BatchNorm vectors",)


def _arrays(value):
    """The arrays in a call's arguments or result (nested in tuples, lists and dicts)."""
    if hasattr(value, "nbytes") and hasattr(value, "shape"):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _arrays(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _arrays(v)


def _conv_flops(name: str, args, result) -> tuple:
    """(FLOPs, shape key) of a conv2d_forward / conv2d_backward call: 2·M·K·O per product (the same count
    where the direct kernel computes it without the products)."""
    if name == "conv2d_forward":
        w = args[1]
        N, Ho, Wo, O = result[0].shape
        M, K = N * Ho * Wo, w.shape[1] * w.shape[2] * w.shape[3]
        return 2 * M * K * O, (M, K, O)
    (N, H, W, C), (O, _, kh, kw), stride, padding = args[1][2:6]  # the cache: x's and w's shapes, stride, padding
    Ho, Wo = conv_output_size(H, kh, stride, padding), conv_output_size(W, kw, stride, padding)
    M, K = N * Ho * Wo, kh * kw * C
    products = 2 if result[0] is not None else 1  # ∂W, and ∂x unless skipped
    return products * 2 * M * K * O, (M, K, O)


class PartTimer:
    """Accumulates exclusive seconds, bytes and FLOPs per part; nested wrapped calls are subtracted from
    their caller.  ``shapes`` holds, per GEMM part and (M, K, O), the [seconds, FLOPs] of every call."""

    def __init__(self, synchronize):
        self.synchronize = synchronize
        self.seconds = defaultdict(float)
        self.bytes = defaultdict(int)
        self.flops = defaultdict(int)
        self.calls = defaultdict(int)
        self.shapes = defaultdict(list)
        self._children = []  # one accumulator of nested wrapped time per open call

    def wrap(self, part: str, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            self.synchronize()
            start = time.perf_counter()
            self._children.append(0.0)
            try:
                result = fn(*args, **kwargs)
                return result
            finally:
                self.synchronize()
                elapsed = time.perf_counter() - start
                own = elapsed - self._children.pop()
                self.seconds[part] += own
                self.calls[part] += 1
                if self._children:
                    self._children[-1] += elapsed
                if part in GEMM_PARTS:
                    flops, key = _conv_flops(fn.__name__, args, result)
                    self.flops[part] += flops
                    self.shapes[(part, key)].append((own, flops))
                elif part not in PASS_THROUGH:
                    self.bytes[part] += sum(a.nbytes for a in _arrays((args, kwargs, result)))

        return timed


def _resolve(target: str):
    import importlib

    module_name, _, class_name = target.partition(":")
    owner = importlib.import_module(module_name)
    return getattr(owner, class_name) if class_name else owner


@contextlib.contextmanager
def instrumented(timer: PartTimer, targets=TARGETS):
    """Replaces every target with its timed wrapper; puts the originals back on exit, whatever happens."""
    originals = []
    try:
        for target, name, part in targets:
            owner = _resolve(target)
            if name not in vars(owner):
                raise AttributeError(f"{target} has no {name}: the parts list is out of date with moco_ref")
            original = vars(owner)[name]
            originals.append((owner, name, original))
            setattr(owner, name, timer.wrap(part, original))
        yield timer
    finally:
        for owner, name, original in reversed(originals):
            setattr(owner, name, original)


def plan(quick: bool, tiny: bool = False) -> dict:
    if tiny:
        return dict(config=TINY, steps=1, warmup=0, pipeline="cifar", bandwidth_mb=8, gemm_n=128, reps=1)
    if quick:
        return dict(config=REFERENCE, steps=3, warmup=1, pipeline="cifar", bandwidth_mb=256, gemm_n=2048, reps=3)
    return dict(config=REFERENCE, steps=5, warmup=1, pipeline="cifar", bandwidth_mb=256, gemm_n=2048, reps=5)


def machine_rates(backend, bandwidth_mb: int, gemm_n: int, reps: int) -> dict:
    """The roofline's ceilings: copy bandwidth on one thread and on the BLAS's threads, and the GEMM rate."""
    threads = blas_threads()
    return {
        "bandwidth_one_thread_gb_s": memory_bandwidth(bandwidth_mb, 1, reps),
        "bandwidth_all_threads_gb_s": memory_bandwidth(bandwidth_mb, threads, reps),
        "threads": threads,
        "bandwidth_array_mb": bandwidth_mb,
        "gemm_peak": gemm_peak(backend, gemm_n, reps),
    }


def isolated_gemm_rates(shapes, reps: int) -> dict:
    """GFLOP/s of each convolution's three products alone, as conv.py computes them, on random matrices:
    forward X·Wmᵀ, ∂W (Xᵀ·G or Gᵀ·X, whichever conv.py uses), ∂X = G·Wm."""
    rng = np.random.default_rng(0)
    rates = {}
    for M, K, O in shapes:
        X = rng.standard_normal((M, K), dtype=np.float32)
        W_t = rng.standard_normal((K, O), dtype=np.float32)
        G = rng.standard_normal((M, O), dtype=np.float32)
        products = {
            "forward": lambda: X @ W_t,
            "dW": (lambda: X.T @ G) if K >= O else (lambda: G.T @ X),
            "dX": lambda: G @ W_t.T,
        }
        times = interleaved({k: (f, lambda: None) for k, f in products.items()}, reps, 1)
        rates[(M, K, O)] = {k: 2 * M * K * O / median(t) / 1e9 for k, t in times.items()}
    return rates


def run_parts(
    backend_name: str,
    echo,
    config,
    steps: int,
    warmup: int,
    pipeline: str,
    bandwidth_mb: int = 256,
    gemm_n: int = 2048,
    reps: int = 5,
) -> dict:
    """Per-part medians over ``steps`` instrumented steps with their traffic and rates, the machine's
    ceilings, every GEMM shape, and the augmentation of the batch's two views."""
    banner(f"parts: where one step goes, against the machine ({config.label})", echo)
    backend = get_backend(backend_name)
    machine = machine_rates(backend, bandwidth_mb, gemm_n, reps)
    peak = machine["gemm_peak"]["gflops"]
    echo(
        f"ceilings: copy bandwidth {machine['bandwidth_one_thread_gb_s']:.1f} GB/s on 1 thread, "
        f"{machine['bandwidth_all_threads_gb_s']:.1f} GB/s on {machine['threads']} (arrays of {bandwidth_mb} MB, "
        f"read + write); float32 GEMM {peak:.1f} GFLOP/s ({gemm_n}³)"
    )
    model, step, sync = make_ours(config, backend_name)
    interleaved({"step": (step, sync)}, 0, warmup)

    per_step = defaultdict(list)
    plain, instrumented_totals, timers = [], [], []
    for _ in range(steps):  # a plain step, then an instrumented one: both see the same noise
        plain.append(interleaved({"step": (step, sync)}, 1, 0)["step"][0])
        timer = PartTimer(sync)
        with instrumented(timer):
            sync()
            start = time.perf_counter()
            step()
            sync()
            total = time.perf_counter() - start
        instrumented_totals.append(total)
        timers.append(timer)
        for part in PART_ORDER[:-1]:
            per_step[part].append(timer.seconds.get(part, 0.0))
        per_step["other"].append(total - sum(timer.seconds.values()))

    step_s = median(instrumented_totals)
    last = timers[-1]  # bytes, FLOPs and calls are the same in every step
    parts = {}
    for part in PART_ORDER:
        seconds = median(per_step[part])
        record = {
            "median_s": seconds,
            "percent_of_step": 100 * seconds / step_s,
            "calls": last.calls.get(part, 0),
            "bytes": last.bytes.get(part, 0),
            "flops": last.flops.get(part, 0),
        }
        if seconds > 0 and record["bytes"]:
            record["gb_s"] = record["bytes"] / seconds / 1e9
            record["percent_of_bandwidth"] = 100 * record["gb_s"] / machine["bandwidth_all_threads_gb_s"]
        if seconds > 0 and record["flops"]:
            record["gflops"] = record["flops"] / seconds / 1e9
            record["percent_of_gemm_peak"] = 100 * record["gflops"] / peak
        parts[part] = record

    rows = [
        [
            part,
            f["calls"],
            1e3 * f["median_s"],
            f["percent_of_step"],
            f["bytes"] / 1e6 or None,
            f.get("gb_s"),
            f.get("percent_of_bandwidth"),
            f["flops"] / 1e9 or None,
            f.get("gflops"),
            f.get("percent_of_gemm_peak"),
        ]
        for part, f in parts.items()
    ]
    table(
        [
            "part",
            "calls",
            "ms",
            "% of step",
            "MB moved",
            "GB/s",
            "% of bandwidth",
            "GFLOP",
            "GFLOP/s",
            "% of GEMM peak",
        ],
        rows,
        echo,
    )
    echo(
        f"instrumented step {step_s:.3f} s vs uninstrumented {median(plain):.3f} s (medians of {steps}, "
        f"alternating; {100 * (step_s / median(plain) - 1):+.1f}%).  MB moved: the sizes of the arrays each call "
        "reads and writes (its least traffic); % of bandwidth: of the copy bandwidth on all threads."
    )

    gemms = _gemm_table(timers, isolated_gemm_rates(sorted({key for _, key in last.shapes}), reps), peak, echo)

    augment = make_pipeline(pipeline, config.size)
    images = np.random.default_rng(0).integers(0, 256, (config.batch, config.size, config.size, 3), dtype=np.uint8)
    rng = np.random.default_rng(1)
    two_views = interleaved(
        {"augment": (lambda: (augment(images, rng, backend), augment(images, rng, backend)), sync)}, steps, warmup
    )["augment"]
    parts_augment = {
        "median_s": median(two_views),
        "percent_of_step": 100 * median(two_views) / step_s,
        "pipeline": pipeline,
    }
    echo(
        f"augmentation of the batch's two views ({pipeline}, outside the step): {parts_augment['median_s']:.4f} s, "
        f"{parts_augment['percent_of_step']:.1f}% of a step"
    )
    return {
        "config": config.as_dict(),
        "steps": steps,
        "machine": machine,
        "instrumented_step_s": step_s,
        "uninstrumented_step_s": median(plain),
        "parts": parts,
        "gemm_shapes": gemms,
        "augmentation": parts_augment,
    }


def _gemm_table(timers, isolated: dict, peak: float, echo) -> list:
    """Every convolution shape's GEMM rates in the step (medians over steps of the summed calls) and alone."""
    records = []
    for M, K, O in sorted(isolated, key=lambda s: -s[0] * s[1] * s[2]):
        record = {"M": M, "K": K, "O": O, "isolated_gflops": isolated[(M, K, O)]}
        for part, label in zip(GEMM_PARTS, ("forward", "backward")):
            sums = [[sum(c[i] for c in t.shapes.get((part, (M, K, O)), [])) for i in (0, 1)] for t in timers]
            if sums and sums[0][1]:
                record[f"{label}_calls"] = len(timers[-1].shapes[(part, (M, K, O))])
                record[f"{label}_ms"] = 1e3 * median([s for s, _ in sums])
                record[f"{label}_gflops"] = sums[0][1] / median([s for s, _ in sums]) / 1e9
        records.append(record)
    echo("")
    echo(
        f"GEMMs of every convolution shape (M = N·Ho·Wo rows, K = kh·kw·C, O outputs); in the step: forward X·Wmᵀ, "
        f"backward ∂W and ∂X together; alone: each product on random matrices.  GEMM peak {peak:.0f} GFLOP/s."
    )
    table(
        ["M", "K", "O", "fwd calls", "fwd ms", "fwd GFLOP/s", "bwd ms", "bwd GFLOP/s", "alone: fwd", "dW", "dX"],
        [
            [
                r["M"],
                r["K"],
                r["O"],
                r.get("forward_calls"),
                r.get("forward_ms"),
                r.get("forward_gflops"),
                r.get("backward_ms"),
                r.get("backward_gflops"),
                r["isolated_gflops"]["forward"],
                r["isolated_gflops"]["dW"],
                r["isolated_gflops"]["dX"],
            ]
            for r in records
        ],
        echo,
    )
    return records
