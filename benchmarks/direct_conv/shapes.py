"""Which 3×3 stride-1 convolutions the direct kernel should take: direct against im2col + GEMM, shape by shape.

    python benchmarks/direct_conv/shapes.py [--reps 7] [--torch]

Every 3×3, stride-1 convolution of the networks of NETWORKS (issue 27's two, the default run's, the step
suite's resnet18 w32; 32×32 images), forward and backward (∂X and ∂W) as the model runs them, float32, on the BLAS's
threads: backends/numba_direct_conv.py against the plain primitives of backends/ops.py (im2col + GEMM, the
``fast`` extra's Numba im2col/col2im), alternating repetition by repetition; medians.  --torch adds
``torch.nn.functional.conv2d`` in channels_last with its autograd backward (oneDNN), on as many threads.  The rule in
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
    parser.add_argument("--torch", action="store_true", help="also time PyTorch (channels_last)")
    args = parser.parse_args()
    threads = set_threads()
    torch = None
    if args.torch:
        import torch

        torch.set_num_threads(threads)
    print(f"{cpu_model()} ({', '.join(vector_extensions())}), {threads} threads, float32, medians of {args.reps}")
    extra = (" torch ms | direct / torch |", " --: | --: |") if torch else ("", "")
    print("| network | N | side | C → O | ∂x | im2col + GEMM ms | direct ms | im2col / direct |" + extra[0])
    print("| --- | --: | --: | --: | --- | --: | --: | --: |" + extra[1])
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

        runners = {"plain": (plain, lambda: None), "direct": (fused, lambda: None)}
        if torch:
            runners["torch"] = (torch_pass(torch, x, w, dy, need_dx), lambda: None)
        times = interleaved(runners, args.reps, 2)
        a, b = 1e3 * median(times["plain"]), 1e3 * median(times["direct"])
        row = f"| {label} | {N} | {side} | {C} → {O} | {'yes' if need_dx else 'no'} | {a:.1f} | {b:.1f} | {a / b:.2f} |"
        if torch:
            t = 1e3 * median(times["torch"])
            row += f" {t:.1f} | {b / t:.2f} |"
        print(row, flush=True)


def torch_pass(torch, x, w, dy, need_dx):
    """F.conv2d forward and its autograd backward (∂W, and ∂x when need_dx), channels_last."""
    import torch.nn.functional as F

    def nchw(a):
        return torch.from_numpy(a).permute(0, 3, 1, 2)  # an NHWC array is an NCHW tensor in channels_last

    xt, dyt = nchw(x).requires_grad_(need_dx), nchw(dy)
    wt = torch.from_numpy(np.ascontiguousarray(w)).contiguous(memory_format=torch.channels_last).requires_grad_()

    def run():
        wt.grad = xt.grad = None
        F.conv2d(xt, wt, padding=1).backward(dyt)

    return run


if __name__ == "__main__":
    main()
