"""Where the time of one MoCo step goes: every part timed by wrapping the functions the step calls.

The wrappers replace the names in the modules that *use* them (``moco_ref.models.resnet``
imports ``conv2d_forward`` by name, so that is where it is replaced) and are removed
afterwards.  Times are exclusive: a part's own time less the wrapped parts it called
(conv forward GEMM = conv2d_forward less its im2col).  The wrappers synchronise the
device around every call and add a little Python per call, so an instrumented step
is slightly slower than an uninstrumented one; both are reported.  What no wrapper
covers (the input's NCHW→NHWC transpose, the residual adds, Python glue) is the row
"other".
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections import defaultdict

import numpy as np

from backends import get_backend
from moco_ref.bench.common import REFERENCE, TINY, banner, interleaved, make_ours, median, table

# (module or class, attribute, part).  conv2d_forward/backward are timed without the im2col/col2im they call.
TARGETS = (
    ("moco_ref.models.resnet", "conv2d_forward", "conv forward GEMM"),
    ("moco_ref.models.resnet", "conv2d_backward", "conv backward GEMMs"),
    ("moco_ref.layers.conv", "im2col", "im2col"),
    ("moco_ref.layers.conv", "col2im", "col2im"),
    ("moco_ref.models.resnet", "batchnorm_forward", "BatchNorm forward"),
    ("moco_ref.models.resnet", "batchnorm_backward", "BatchNorm backward"),
    ("moco_ref.models.resnet", "relu_forward", "ReLU"),
    ("moco_ref.models.resnet", "relu_backward", "ReLU"),
    ("moco_ref.models.resnet", "linear_forward", "fc + pooling"),
    ("moco_ref.models.resnet", "linear_backward", "fc + pooling"),
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
PART_ORDER = ("conv forward GEMM", "conv backward GEMMs", "im2col", "col2im", "BatchNorm forward",
              "BatchNorm backward", "ReLU", "fc + pooling", "loss (normalize + InfoNCE)", "shuffle / unshuffle",
              "optimiser (SGD)", "EMA (momentum update)", "enqueue", "other")


class PartTimer:
    """Accumulates exclusive seconds per part; nested wrapped calls are subtracted from their caller."""

    def __init__(self, synchronize):
        self.synchronize = synchronize
        self.seconds = defaultdict(float)
        self._children = []  # one accumulator of nested wrapped time per open call

    def wrap(self, part: str, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            self.synchronize()
            start = time.perf_counter()
            self._children.append(0.0)
            try:
                return fn(*args, **kwargs)
            finally:
                self.synchronize()
                elapsed = time.perf_counter() - start
                self.seconds[part] += elapsed - self._children.pop()
                if self._children:
                    self._children[-1] += elapsed
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
        return dict(config=TINY, steps=1, warmup=0, pipeline="cifar")
    if quick:
        return dict(config=REFERENCE, steps=3, warmup=1, pipeline="cifar")
    return dict(config=REFERENCE, steps=5, warmup=1, pipeline="cifar")


def run_parts(backend_name: str, echo, config, steps: int, warmup: int, pipeline: str) -> dict:
    """Per-part medians over ``steps`` instrumented steps, and the augmentation of the batch's two views."""
    from moco_ref.augment import make_pipeline

    banner(f"parts: where one step goes ({config.label})", echo)
    backend = get_backend(backend_name)
    model, step, sync = make_ours(config, backend_name)
    interleaved({"step": (step, sync)}, 0, warmup)

    per_step = defaultdict(list)
    plain, instrumented_totals = [], []
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
        for part in PART_ORDER[:-1]:
            per_step[part].append(timer.seconds.get(part, 0.0))
        per_step["other"].append(total - sum(timer.seconds.values()))

    augment = make_pipeline(pipeline, config.size)
    images = np.random.default_rng(0).integers(0, 256, (config.batch, config.size, config.size, 3), dtype=np.uint8)
    rng = np.random.default_rng(1)
    two_views = interleaved({"augment": (lambda: (augment(images, rng, backend), augment(images, rng, backend)),
                                         sync)}, steps, warmup)["augment"]

    step_s = median(instrumented_totals)
    parts = {part: {"median_s": median(per_step[part]), "percent_of_step": 100 * median(per_step[part]) / step_s}
             for part in PART_ORDER}
    parts_augment = {"median_s": median(two_views), "percent_of_step": 100 * median(two_views) / step_s,
                     "pipeline": pipeline}
    rows = [[part, f["median_s"], f["percent_of_step"]] for part, f in parts.items()]
    rows.append([f"augmentation, 2 views ({pipeline}; outside the step)", parts_augment["median_s"],
                 parts_augment["percent_of_step"]])
    table(["part", "seconds", "% of step"], rows, echo)
    echo(f"instrumented step {step_s:.3f} s vs uninstrumented {median(plain):.3f} s (medians of {steps}, "
         f"alternating; {100 * (step_s / median(plain) - 1):+.1f}%): the wrappers add a clock read and Python call "
         "per part (and a device sync on a GPU), so instrumented totals slightly exceed an uninstrumented step "
         "beyond the noise.")
    echo("Parts are exclusive times summed over the query and key encoders; 'other' = step − all parts "
         "(layout transposes, residual adds, Python glue). Augmentation is not part of the step.")
    return {"config": config.as_dict(), "steps": steps, "instrumented_step_s": step_s,
            "uninstrumented_step_s": median(plain), "parts": parts, "augmentation": parts_augment}
