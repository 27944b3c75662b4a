"""The first stage's 3×3 convolutions forward + backward (∂W, and ∂x but for the stem), one side per process, so that
neither side's threads share the process with the other's:

    python layer.py ours      # backends/numba_fast.py's conv2d_forward / conv2d_backward (the direct kernel)
    python layer.py torch     # F.conv2d in channels_last and its autograd backward (oneDNN), 2 threads

Medians of 30 after 5 warm-up runs, float32, batch 64, 32×32 (the 32 → 32 row: 16×16).
"""

import sys

import numpy as np

import moco_ref  # noqa: F401  (the process settings before NumPy loads)
from moco_ref.bench.clock import median_ms

LAYERS = ((3, 16, 32, False), (16, 16, 32, True), (32, 32, 16, True))  # (C, O, side, ∂x)


def ours(x, w, dy, need_dx):
    from backends import get_backend, numba_fast

    get_backend("numpy")

    def run():
        _, cache = numba_fast.conv2d_forward(x, w, 1, 1)
        numba_fast.conv2d_backward(dy, cache, need_dx)

    return run


def pytorch(x, w, dy, need_dx):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(2)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).requires_grad_(need_dx)  # NHWC memory: channels_last
    wt = torch.from_numpy(w).contiguous(memory_format=torch.channels_last).requires_grad_()
    dyt = torch.from_numpy(dy).permute(0, 3, 1, 2)

    def run():
        wt.grad = xt.grad = None
        F.conv2d(xt, wt, padding=1).backward(dyt)

    return run


side = sys.argv[1]
rng = np.random.default_rng(0)
for C, O, S, need_dx in LAYERS:
    x = rng.standard_normal((64, S, S, C), dtype=np.float32)
    w = rng.standard_normal((O, C, 3, 3), dtype=np.float32)
    dy = rng.standard_normal((64, S, S, O), dtype=np.float32)
    make = ours if side == "ours" else pytorch
    print(
        f"{side:5s} {C:2d} → {O:2d} on {S}×{S}: {median_ms(make(x, w, dy, need_dx), reps=30, warmup=5):.2f} ms",
        flush=True,
    )
