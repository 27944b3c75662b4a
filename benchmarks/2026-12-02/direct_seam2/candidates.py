"""The rows of shapes.txt closest to a win, again with more repetitions: direct against im2col + GEMM, float32,
forward + ∂x + ∂W, medians and minima of REPS interleaved rounds.

    PYTHONPATH=. python benchmarks/2026-12-02/direct_seam2/candidates.py [REPS]
"""

import sys

import numpy as np

import moco_ref  # noqa: F401  (before NumPy's first product: OpenBLAS's idle threads sleep)
from backends import ops
from backends.numba_fast import DIRECT_KERNELS, set_threads
from moco_ref.bench.clock import interleaved, median

reps = int(sys.argv[1]) if len(sys.argv) > 1 else 41
print(f"{set_threads()} threads, float32, {reps} rounds")
print(
    "| conv | N | side | C → O | im2col + GEMM ms (median, min) | direct ms (median, min) | ratio: medians | minima |"
)
print("| --- | --: | --: | --: | --: | --: | --: | --: |")
rng = np.random.default_rng(0)
for kind, N, side, C, O in [
    ((3, 2, 1), 64, 32, 8, 16),
    ((3, 2, 1), 64, 32, 16, 32),
    ((3, 2, 1), 64, 16, 16, 32),
    ((1, 2, 0), 64, 32, 8, 16),
    ((1, 2, 0), 64, 32, 16, 32),
    ((1, 2, 0), 64, 16, 32, 64),
]:
    kernel, stride, padding = kind
    forward, backward = DIRECT_KERNELS[kind]
    x = rng.standard_normal((N, side, side, C), dtype=np.float32)
    w = rng.standard_normal((O, C, kernel, kernel), dtype=np.float32)
    dy = rng.standard_normal((N, (side + 1) // 2, (side + 1) // 2, O), dtype=np.float32)

    def plain():
        ops.conv2d_backward.plain(dy, ops.conv2d_forward.plain(x, w, stride, padding)[1], True)

    def direct():
        forward(x, w)
        backward(dy, x, w, True)

    t = interleaved({"plain": (plain, lambda: None), "direct": (direct, lambda: None)}, reps, 3)
    a, b = 1e3 * median(t["plain"]), 1e3 * median(t["direct"])
    a0, b0 = 1e3 * min(t["plain"]), 1e3 * min(t["direct"])
    print(
        f"| {kernel}x{kernel}/{stride} | {N} | {side} | {C} → {O} | {a:.2f}, {a0:.2f} | {b:.2f}, {b0:.2f} "
        f"| {a / b:.2f} | {a0 / b0:.2f} |",
        flush=True,
    )
