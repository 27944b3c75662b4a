"""Which 3×3 stride-1 convolutions the direct kernel should take: direct against im2col + GEMM, shape by shape.

    python benchmarks/direct_conv/shapes.py [--reps 7]

Every 3×3, stride-1 convolution of the networks of NETWORKS (issue 27's two, the default run's, the step
suite's resnet18 w32; 32×32 images), forward and backward (∂X and ∂W) as the model runs them, float32, on the BLAS's
threads: backends/numba_direct_conv.py against the plain primitives of backends/ops.py (im2col + GEMM, the
``fast`` extra's Numba im2col/col2im), alternating repetition by repetition; medians.  The rule in
backends/numba_fast.py (``direct_conv_wanted``) is read off this table; benchmarks/RESULTS.md has the figures.
"""

from __future__ import annotations

import argparse

import numpy as np

import moco_ref  # noqa: F401  (before NumPy's first product: OpenBLAS's idle threads sleep)
from backends import numba_direct_conv as direct
from backends import ops
from backends.numba_fast import set_threads
from moco_ref.bench.common import cpu_model, interleaved, median, vector_extensions
from moco_ref.models import conv_sides, resnet_layout

# (arch, width, batch): the reference and the CIFAR demo of issue 27, the default run, the step suite's third
NETWORKS = (("resnet10", 16, 64), ("resnet18", 64, 32), ("resnet10", 8, 64), ("resnet18", 32, 64))


def shapes():
    """(label, N, side, C, O, need_dx) of every distinct 3×3 stride-1 convolution of the networks (the stem
    computes no ∂x)."""
    seen = {}
    for arch, width, batch in NETWORKS:
        layout = resnet_layout(arch, width, 128, False)
        for layer, side_in, _ in conv_sides(layout, 32):
            if layer.kernel == 3 and layer.stride == 1:
                key = (batch, side_in, layer.c_in, layer.c_out, layer is not layout.stem)
                seen.setdefault(key, f"{arch} w{width}")
    return [(label, *key) for key, label in seen.items()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    threads = set_threads()
    print(f"{cpu_model()} ({', '.join(vector_extensions())}), {threads} threads, float32, medians of {args.reps}")
    print("| network | N | side | C → O | ∂x | im2col + GEMM ms | direct ms | im2col / direct |")
    print("| --- | --: | --: | --: | --- | --: | --: | --: |")
    rng = np.random.default_rng(0)
    for label, N, side, C, O, need_dx in shapes():
        x = rng.standard_normal((N, side, side, C), dtype=np.float32)
        w = rng.standard_normal((O, C, 3, 3), dtype=np.float32)
        dy = rng.standard_normal((N, side, side, O), dtype=np.float32)

        def plain():
            y, cache = ops.conv2d_forward.plain(x, w, 1, 1)
            ops.conv2d_backward.plain(dy, cache, need_dx)

        def fused():
            direct.conv3x3_forward(x, w)
            direct.conv3x3_backward(dy, x, w, need_dx)

        times = interleaved({"plain": (plain, lambda: None), "direct": (fused, lambda: None)}, args.reps, 2)
        a, b = 1e3 * median(times["plain"]), 1e3 * median(times["direct"])
        print(
            f"| {label} | {N} | {side} | {C} → {O} | {'yes' if need_dx else 'no'} | {a:.1f} | {b:.1f} | {a / b:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
