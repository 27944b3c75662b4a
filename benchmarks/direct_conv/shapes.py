"""Which convolutions the direct kernels should take: direct against im2col + GEMM, shape by shape.

    python benchmarks/direct_conv/shapes.py [--reps 7] [--torch] [--kinds 3x3/1,3x3/2,1x1/2]

Every convolution of the networks of NETWORKS (issue 27's two, the default run's, the step suite's resnet18 w32;
32×32 images) that a direct kernel of backends/numba_fast.py's ``DIRECT_KERNELS`` can compute (3×3 at stride 1,
3×3 at stride 2, the 1×1 downsample at stride 2; --kinds picks some), forward and backward (∂X and ∂W) as the
model runs them, float32, on the BLAS's threads: the direct kernel against the plain primitives of
backends/ops.py (im2col + GEMM, the ``fast`` extra's Numba im2col/col2im), alternating repetition by repetition;
medians, and ("fastest") the ratio of the fastest repetitions (the runs least disturbed where other work shares the
machine).  --torch adds ``torch.nn.functional.conv2d`` in channels_last with its autograd backward (oneDNN), on
as many threads.  The rule in backends/numba_fast.py (``direct_conv_wanted``) is read off this table;
benchmarks/RESULTS.md has the figures.
"""

from __future__ import annotations

import argparse

import numpy as np

import moco_ref  # noqa: F401  (before NumPy's first product: OpenBLAS's idle threads sleep)
from backends import ops
from backends.numba_fast import DIRECT_KERNELS, set_threads
from moco_ref.bench.clock import interleaved, median
from moco_ref.bench.machine import cpu_model, vector_extensions
from moco_ref.models import conv_sides, resnet_layout

# (arch, width, batch): the reference and the CIFAR demo of issue 27, the default run, the step suite's third
NETWORKS = (("resnet10", 16, 64), ("resnet18", 64, 32), ("resnet10", 8, 64), ("resnet18", 32, 64))


def shapes(kinds):
    """(label, (kernel, stride, padding), N, side, C, O, need_dx) of every distinct convolution of the networks
    of one of ``kinds`` (the stem computes no ∂x)."""
    seen = {}
    for arch, width, batch in NETWORKS:
        layout = resnet_layout(arch, width, 128, False)
        for layer, side_in, _ in conv_sides(layout, 32):
            kind = (layer.kernel, layer.stride, layer.padding)
            if kind in kinds:
                key = (kind, batch, side_in, layer.c_in, layer.c_out, layer is not layout.stem)
                seen.setdefault(key, f"{arch} w{width}")
    return [(label, *key) for key, label in seen.items()]


def kind_name(kind):
    kernel, stride, _ = kind
    return f"{kernel}x{kernel}/{stride}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--torch", action="store_true", help="also time PyTorch (channels_last)")
    parser.add_argument("--kinds", default="3x3/1,3x3/2,1x1/2", help="kernel/stride, comma-separated")
    args = parser.parse_args()
    kinds = [kind for kind in DIRECT_KERNELS if kind_name(kind) in args.kinds.split(",")]
    threads = set_threads()
    torch = None
    if args.torch:
        import torch

        torch.set_num_threads(threads)
    print(f"{cpu_model()} ({', '.join(vector_extensions())}), {threads} threads, float32, medians of {args.reps}")
    extra = (" torch ms | direct / torch |", " --: | --: |") if torch else ("", "")
    head = "| network | conv | N | side | C → O | ∂x | im2col + GEMM ms | direct ms | im2col / direct | fastest |"
    print(head + extra[0])
    print("| --- | --- | --: | --: | --: | --- | --: | --: | --: | --: |" + extra[1])
    rng = np.random.default_rng(0)
    for label, kind, N, side, C, O, need_dx in shapes(kinds):
        kernel, stride, padding = kind
        forward, backward = DIRECT_KERNELS[kind]
        side_out = ops.conv_output_size(side, kernel, stride, padding)
        x = rng.standard_normal((N, side, side, C), dtype=np.float32)
        w = rng.standard_normal((O, C, kernel, kernel), dtype=np.float32)
        dy = rng.standard_normal((N, side_out, side_out, O), dtype=np.float32)

        def plain():
            y, cache = ops.conv2d_forward.plain(x, w, stride, padding)
            ops.conv2d_backward.plain(dy, cache, need_dx)

        def fused():
            forward(x, w)
            backward(dy, x, w, need_dx)

        runners = {"plain": (plain, lambda: None), "direct": (fused, lambda: None)}
        if torch:
            runners["torch"] = (torch_pass(torch, x, w, dy, need_dx, stride, padding), lambda: None)
        times = interleaved(runners, args.reps, 2)
        a, b = 1e3 * median(times["plain"]), 1e3 * median(times["direct"])
        fastest = min(times["plain"]) / min(times["direct"])  # on a shared machine, the runs least disturbed
        row = f"| {label} | {kind_name(kind)} | {N} | {side} | {C} → {O} | {'yes' if need_dx else 'no'} "
        row += f"| {a:.1f} | {b:.1f} | {a / b:.2f} | {fastest:.2f} |"
        if torch:
            t = 1e3 * median(times["torch"])
            row += f" {t:.1f} | {b / t:.2f} |"
        print(row, flush=True)


def torch_pass(torch, x, w, dy, need_dx, stride, padding):
    """F.conv2d forward and its autograd backward (∂W, and ∂x when need_dx), channels_last."""
    import torch.nn.functional as F

    def nchw(a):
        return torch.from_numpy(a).permute(0, 3, 1, 2)  # an NHWC array is an NCHW tensor in channels_last

    xt, dyt = nchw(x).requires_grad_(need_dx), nchw(dy)
    wt = torch.from_numpy(np.ascontiguousarray(w)).contiguous(memory_format=torch.channels_last).requires_grad_()

    def run():
        wt.grad = xt.grad = None
        F.conv2d(xt, wt, stride=stride, padding=padding).backward(dyt)

    return run


if __name__ == "__main__":
    main()
