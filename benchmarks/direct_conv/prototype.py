"""Issue 27's gate: direct 3×3 convolutions against im2col + GEMM and PyTorch, on the first stage's layer.

    python benchmarks/direct_conv/prototype.py [--reps 20] [--prefer-512]

Layer: batch 64, 32×32, 16 → 16 channels, 3×3, stride 1, padding 1, float32.  Every candidate runs in this
one process on 2 threads (Numba, OpenBLAS and PyTorch alike), the candidates alternating repetition by
repetition (moco_ref.bench.clock.interleaved); the figures are medians.  Per pass: forward, ∂X, ∂W and
their total; 2·N·O·C·9·H·W FLOPs a pass; % of the machine's float32 GEMM rate (a 2048³ NumPy matmul
timed in the same rounds).

--prefer-512 compiles the Numba kernels for 512-bit vectors (LLVM's "rocketlake"/"skylake-avx512" tuning
prefers 256-bit ones): the host's features plus "-prefer-256-bit" in NUMBA_CPU_FEATURES, so the whole
process (the project's own Numba kernels included) is compiled that way.

The script first checks every kernel against the project's im2col result (the largest error at most 1e-5
of the largest value in float32, 1e-12 in float64) and that ∂W, and the fused backward, have the same bits
on 1 and 2 threads; it stops if any check fails.  Results: benchmarks/RESULTS.md, "Direct convolution
prototype".
"""

from __future__ import annotations

import argparse
import os
import re
import sys

if "--prefer-512" in sys.argv:  # before Numba is imported
    import llvmlite.binding as llvm

    os.environ["NUMBA_CPU_NAME"] = llvm.get_host_cpu_name()
    os.environ["NUMBA_CPU_FEATURES"] = llvm.get_host_cpu_features().flatten() + ",-prefer-256-bit"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kernels as K  # noqa: E402 (after the CPU features are set)
import numba  # noqa: E402 (after the CPU features are set)
import numpy as np  # noqa: E402 (after the CPU features are set)

import moco_ref  # noqa: E402,F401  (before NumPy: OpenBLAS's idle threads sleep)
from backends.numba_fast import set_threads  # noqa: E402 (after the CPU features are set)
from moco_ref.bench.clock import interleaved, median  # noqa: E402 (after the CPU features are set)
from moco_ref.bench.machine import cpu_model, vector_extensions  # noqa: E402 (after the CPU features are set)
from moco_ref.layers.conv import conv2d_backward, conv2d_forward  # noqa: E402 (after the CPU features are set)

N, H, W, C, O = 64, 32, 32, 16, 16
Hp, Wp = H + 2, W + 2
FLOPS = 2 * N * O * C * 9 * H * W  # one pass (forward, ∂X or ∂W)
THREADS = 2
FUSED = {"fused per sample, 2 planes/step": 2, "fused per sample, 4 planes/step": 4}


# ------------------------------------------------------------------ the direct convolution, end to end
class Planes:
    """One layer's direct convolution on padded planes, with the conversions the NHWC project needs.

    ``kernel_*`` run the kernels alone on planes prepared once; ``pass_*`` include the layout
    conversions each pass would pay in the project (forward: x in, y out; ∂X: dy in, dx out; ∂W reuses
    the planes of x and dy those two made).
    """

    def __init__(self, x, w, dy, block: int, grad_block: int | None):
        self.x, self.w, self.dy = x, w, dy
        self.stencil = K.make_stencil(block)
        self.weight_grad = K.weight_grad_by_output if grad_block is None else K.make_weight_grad(grad_block)
        dtype = x.dtype
        self.w9, self.w9_flip = K.weights_forward(w), K.weights_input_grad(w)
        self.xp = np.empty((N, C, Hp * Wp), dtype)
        self.dyp = np.empty((N, O, Hp * Wp), dtype)
        self.yp = np.empty((N, O, Hp * Wp), dtype)
        self.dxp = np.empty((N, C, Hp * Wp), dtype)
        self.partial = np.empty((N, O, C, 9), dtype)
        K.to_planes(x, self.xp)
        K.to_planes(dy, self.dyp)

    # kernels alone
    def kernel_forward(self):
        self.stencil(self.xp, self.w9, self.yp, Wp, H)

    def kernel_input_grad(self):
        self.stencil(self.dyp, self.w9_flip, self.dxp, Wp, H)

    def kernel_weight_grad(self):
        self.weight_grad(self.xp, self.dyp, self.partial, Wp, H)
        return K.sum_samples(self.partial)

    # with the conversions
    def pass_forward(self):
        xp = np.empty((N, C, Hp * Wp), self.x.dtype)
        K.to_planes(self.x, xp)
        self.stencil(xp, self.w9, self.yp, Wp, H)
        y = np.empty((N, H, W, O), self.x.dtype)
        K.from_planes(self.yp, y)
        return y

    def pass_input_grad(self):
        dyp = np.empty((N, O, Hp * Wp), self.x.dtype)
        K.to_planes(self.dy, dyp)
        self.stencil(dyp, self.w9_flip, self.dxp, Wp, H)
        dx = np.empty((N, H, W, C), self.x.dtype)
        K.from_planes(self.dxp, dx)
        return dx

    def pass_weight_grad(self):
        return self.kernel_weight_grad()


class Fused:
    """One task per sample: its planes made in the task's own buffers from NHWC and written back to NHWC
    (no N-sized plane arrays, no conversion passes of their own); ∂X and ∂W in one backward pass."""

    def __init__(self, x, w, dy, block: int):
        self.x, self.w, self.dy = x, w, dy
        self.forward, self.backward, self.input_grad, self.weight_grad = K.make_fused(block)
        self.stencil = self.forward  # for the assembly count
        self.w9, self.w9_flip = K.weights_forward(w), K.weights_input_grad(w)

    def pass_forward(self):
        y = np.empty((N, H, W, O), self.x.dtype)
        self.forward(self.x, self.w9, y)
        return y

    def pass_input_grad(self):
        dx = np.empty((N, H, W, C), self.x.dtype)
        self.input_grad(self.dy, self.w9_flip, dx)
        return dx

    def pass_weight_grad(self):
        partial = np.empty((N, O, C, 9), self.x.dtype)
        self.weight_grad(self.x, self.dy, partial)
        return K.sum_samples(partial)

    def pass_backward(self):
        dx = np.empty((N, H, W, C), self.x.dtype)
        partial = np.empty((N, O, C, 9), self.x.dtype)
        self.backward(self.x, self.dy, self.w9_flip, dx, partial)
        return dx, K.sum_samples(partial)


# ------------------------------------------------------------------ checks
def check(name, got, want, dtype):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = np.abs(want).max()
    error = np.abs(got - want).max() / scale
    limit = 1e-5 if dtype == np.float32 else 1e-12
    status = "ok" if error < limit else "FAILED"
    print(f"  {status:6} {name:34} {np.dtype(dtype).name:7} max |Δ|/max|ref| = {error:.1e} (limit {limit:.0e})")
    return error < limit


def correctness(variants) -> bool:
    ok = True
    rng = np.random.default_rng(1)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((N, H, W, C)).astype(dtype)
        w = (rng.standard_normal((O, C, 3, 3)) / 12).astype(dtype)
        dy = rng.standard_normal((N, H, W, O)).astype(dtype)
        y_ref, cache = conv2d_forward(x, w, 1, 1)
        dx_ref, dw_ref = conv2d_backward(dy, cache)
        for name, block in FUSED.items():
            f = Fused(x, w, dy, block)
            ok &= check(f"{name} forward", f.pass_forward(), y_ref, dtype)
            ok &= check(f"{name} ∂X", f.pass_input_grad(), dx_ref, dtype)
            ok &= check(f"{name} ∂W", f.pass_weight_grad(), dw_ref, dtype)
            dx, dw = f.pass_backward()
            ok &= check(f"{name} backward ∂X", dx, dx_ref, dtype)
            ok &= check(f"{name} backward ∂W", dw, dw_ref, dtype)
        for name, (block, grad_block) in variants.items():
            p = Planes(x, w, dy, block, grad_block)
            ok &= check(f"{name} forward", p.pass_forward(), y_ref, dtype)
            ok &= check(f"{name} ∂X", p.pass_input_grad(), dx_ref, dtype)
            ok &= check(f"{name} ∂W", p.pass_weight_grad(), dw_ref, dtype)
        xp = np.zeros((N, Hp, Wp, C), dtype)
        xp[:, 1:-1, 1:-1] = x
        wt = np.ascontiguousarray(w.transpose(2, 3, 1, 0))
        for name, f in (("nhwc tile 8×16 forward", K.nhwc_tile8), ("nhwc runtime O forward", K.nhwc_runtime_channels)):
            y = np.empty((N, H, W, O), dtype)
            f(xp, wt, y)
            ok &= check(name, y, y_ref, dtype)
        if dtype == np.float32:  # ∂W's bits with 1 and 2 threads
            for name, (block, grad_block) in variants.items():
                p = Planes(x, w, dy, block, grad_block)
                bits = []
                for threads in (1, 2):
                    set_threads(threads)
                    bits.append(p.kernel_weight_grad().tobytes())
                set_threads(THREADS)
                same = bits[0] == bits[1]
                ok &= same
                print(f"  {'ok' if same else 'FAILED':6} {name} ∂W: the same bits on 1 and 2 threads")
            for name, block in FUSED.items():
                f = Fused(x, w, dy, block)
                bits = []
                for threads in (1, 2):
                    set_threads(threads)
                    bits.append(b"".join(a.tobytes() for a in f.pass_backward()))
                set_threads(THREADS)
                same = bits[0] == bits[1]
                ok &= same
                print(f"  {'ok' if same else 'FAILED':6} {name} backward: the same bits on 1 and 2 threads")
    return ok


# ------------------------------------------------------------------ vectorisation
def fused_multiply_adds(function) -> dict:
    """vfmadd…ps per register width (and scalar vfmadd…ss) in the compiled code of every signature."""
    counts = {"zmm": 0, "ymm": 0, "xmm": 0, "scalar": 0}
    for signature in function.signatures:
        asm = function.inspect_asm(signature)
        for width in ("zmm", "ymm", "xmm"):
            counts[width] += len(re.findall(r"vfmadd\w*ps\s[^\n]*%" + width, asm))
        counts["scalar"] += len(re.findall(r"vfmadd\w*s[sd]\s", asm))
    return counts


# ------------------------------------------------------------------ timing
def torch_runners(torch, x, w, dy, channels_last: bool):
    """Forward, ∂X, ∂W and forward + backward of F.conv2d, autograd for the backward."""
    import torch.nn.functional as F

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=fmt).requires_grad_(True)
    wt = torch.from_numpy(w).contiguous(memory_format=fmt).requires_grad_(True)
    dyt = torch.from_numpy(dy).permute(0, 3, 1, 2).contiguous(memory_format=fmt)
    y = F.conv2d(xt, wt, padding=1)

    def forward():
        with torch.no_grad():
            F.conv2d(xt, wt, padding=1)

    def input_grad():
        torch.autograd.grad(y, [xt], dyt, retain_graph=True)

    def weight_grad():
        torch.autograd.grad(y, [wt], dyt, retain_graph=True)

    def total():
        out = F.conv2d(xt, wt, padding=1)
        torch.autograd.grad(out, [xt, wt], dyt)

    return {"fwd": forward, "dX": input_grad, "dW": weight_grad, "total": total}


def im2col_runners(x, w, dy):
    """The project's layer as the model calls it; ∂X alone is (backward) − (backward without ∂X)."""
    cache = conv2d_forward(x, w, 1, 1)[1]

    def total():
        _, c = conv2d_forward(x, w, 1, 1)
        conv2d_backward(dy, c)

    return {
        "fwd": lambda: conv2d_forward(x, w, 1, 1),
        "backward": lambda: conv2d_backward(dy, cache),
        "dW": lambda: conv2d_backward(dy, cache, need_dx=False),
        "total": total,
    }


def planes_runners(p: Planes):
    def total():
        p.pass_forward()
        p.pass_input_grad()
        p.pass_weight_grad()

    return {
        "fwd": p.pass_forward,
        "dX": p.pass_input_grad,
        "dW": p.pass_weight_grad,
        "total": total,
        "fwd kernel": p.kernel_forward,
        "dX kernel": p.kernel_input_grad,
        "dW kernel": p.kernel_weight_grad,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--prefer-512", action="store_true", help="512-bit vectors in the Numba kernels")
    args = parser.parse_args()

    set_threads(THREADS)
    import torch

    torch.set_num_threads(THREADS)
    variants = {
        "planes 1 plane/task, dW per (n,o)": (1, None),
        "planes 2 planes/task, dW per (n,c)": (2, 1),
        "planes 4 planes/task, dW per (n,2c)": (4, 2),
    }

    print(f"# {cpu_model()}; vector extensions {', '.join(vector_extensions())}")
    print(
        f"# numba {numba.__version__} ({numba.get_num_threads()} threads, layer {numba.threading_layer()}), "
        f"numpy {np.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    print(f"# NUMBA_CPU_FEATURES {'host + -prefer-256-bit' if args.prefer_512 else 'default (host)'}")
    print("# correctness")
    if not correctness(variants):
        sys.exit("a kernel disagrees with im2col + GEMM")

    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, H, W, C), dtype=np.float32)
    w = (rng.standard_normal((O, C, 3, 3)) / 12).astype(np.float32)
    dy = rng.standard_normal((N, H, W, O), dtype=np.float32)
    xp = np.zeros((N, Hp, Wp, C), np.float32)
    xp[:, 1:-1, 1:-1] = x
    wt = np.ascontiguousarray(w.transpose(2, 3, 1, 0))
    y = np.empty((N, H, W, O), np.float32)

    runners = {}
    for key, fn in im2col_runners(x, w, dy).items():
        runners[("im2col + GEMM", key)] = fn
    for label, cl in (("torch NCHW", False), ("torch channels_last", True)):
        for key, fn in torch_runners(torch, x, w, dy, cl).items():
            runners[(label, key)] = fn
    planes = {}
    for name, (block, grad_block) in variants.items():
        planes[name] = Planes(x, w, dy, block, grad_block)
        for key, fn in planes_runners(planes[name]).items():
            runners[(name, key)] = fn
    fused = {}
    for name, block in FUSED.items():
        fused[name] = f = Fused(x, w, dy, block)
        runners[(name, "fwd")] = f.pass_forward
        runners[(name, "dX")] = f.pass_input_grad
        runners[(name, "dW")] = f.pass_weight_grad
        runners[(name, "dX + dW in one pass")] = f.pass_backward
        runners[(name, "total")] = lambda f=f: (f.pass_forward(), f.pass_backward())
    from backends import numba_direct_conv as direct

    module = "backends/numba_direct_conv.py"
    runners[(module, "fwd")] = lambda: direct.conv3x3_forward(x, w)
    runners[(module, "dX + dW in one pass")] = lambda: direct.conv3x3_backward(dy, x, w)
    runners[(module, "dW")] = lambda: direct.conv3x3_backward(dy, x, w, need_dx=False)
    runners[(module, "total")] = lambda: (direct.conv3x3_forward(x, w), direct.conv3x3_backward(dy, x, w))
    runners[("nhwc tile 8×16 (scalar)", "fwd kernel")] = lambda: K.nhwc_tile8(xp, wt, y)
    runners[("nhwc runtime O", "fwd kernel")] = lambda: K.nhwc_runtime_channels(xp, wt, y)

    a, b = (rng.standard_normal((2048, 2048), dtype=np.float32) for _ in range(2))
    product = np.empty((2048, 2048), np.float32)
    runners[("GEMM peak", "2048³")] = lambda: np.matmul(a, b, out=product)  # timed in the same rounds
    times = interleaved({k: (fn, lambda: None) for k, fn in runners.items()}, args.reps, args.warmup)
    peak = 2 * 2048**3 / median(times.pop(("GEMM peak", "2048³"))) / 1e9
    ms = {k: 1e3 * median(v) for k, v in times.items()}
    im2col_bwd = ms[("im2col + GEMM", "backward")]
    ms[("im2col + GEMM", "dX")] = im2col_bwd - ms[("im2col + GEMM", "dW")]

    print(f"\n# GEMM peak: {peak:.0f} GFLOP/s (2048³ float32 NumPy matmul, timed in every round); {args.reps} rounds")
    print(f"# one pass = {FLOPS / 1e6:.0f} MFLOP; im2col's ∂X = backward − backward without ∂X")
    reference = {key: ms[("im2col + GEMM", key)] for key in ("fwd", "dX", "dW", "total")}
    torch_nchw = {key: ms[("torch NCHW", key)] for key in ("fwd", "dX", "dW", "total")}
    torch_cl = {key: ms[("torch channels_last", key)] for key in ("fwd", "dX", "dW", "total")}
    header = (
        "| candidate | pass | ms | GFLOP/s | % GEMM peak | im2col ÷ this | this ÷ torch NCHW | this ÷ torch CL |\n"
        "| --- | --- | --: | --: | --: | --: | --: | --: |"
    )
    print(header)
    for (name, key), value in ms.items():
        if key == "backward":
            continue
        base = key.replace(" kernel", "")
        flops = {"total": 3 * FLOPS, "dX + dW in one pass": 2 * FLOPS}.get(base, FLOPS)
        if base == "dX + dW in one pass":
            base = "backward"
            reference["backward"] = im2col_bwd
            torch_nchw["backward"] = torch_nchw["dX"] + torch_nchw["dW"]
            torch_cl["backward"] = torch_cl["dX"] + torch_cl["dW"]
        gflops = flops / value / 1e6
        cells = [
            f"{value:.2f}",
            f"{gflops:.1f}",
            f"{100 * gflops / peak:.0f}",
            f"{reference[base] / value:.2f}",
            f"{value / torch_nchw[base]:.2f}",
            f"{value / torch_cl[base]:.2f}",
        ]
        print(f"| {name} | {key} | " + " | ".join(cells) + " |")

    print(
        "\n# per round: im2col + GEMM total ÷ candidate total, and candidate ÷ torch (medians of the per-round ratios)"
    )
    for name in [k[0] for k in times if k[1] == "total"]:
        ours = times[(name, "total")]
        per_round = [
            median([r / o for r, o in zip(times[(other, "total")], ours)])
            for other in ("im2col + GEMM", "torch NCHW", "torch channels_last")
        ]
        print(
            f"  {name:40} im2col ÷ this {per_round[0]:.2f}   this ÷ torch NCHW {1 / per_round[1]:.2f}"
            f"   this ÷ torch CL {1 / per_round[2]:.2f}"
        )
    print("\n# per round: im2col total ÷ best direct total (median of the per-round ratios)")
    best = min([*variants, *FUSED, "backends/numba_direct_conv.py"], key=lambda name: ms[(name, "total")])
    ratios = [a / b for a, b in zip(times[("im2col + GEMM", "total")], times[(best, "total")])]
    print(f"{best}: {median(ratios):.2f}× (rounds: min {min(ratios):.2f}, max {max(ratios):.2f})")
    gate = median(ratios) >= 1.5
    print(f"gate (≥ 1.5× forward + backward over im2col + GEMM): {'MET' if gate else 'NOT MET'}")

    print("\n# fused multiply-adds in the compiled kernels (vfmadd…ps by register; scalar vfmadd…ss/sd)")
    for label, fn in [
        ("stencil 1 plane/task", planes[list(variants)[0]].stencil),
        ("stencil 2 planes/task", planes[list(variants)[1]].stencil),
        ("stencil 4 planes/task", planes[list(variants)[2]].stencil),
        ("∂W per (n,o)", K.weight_grad_by_output),
        ("∂W per (n,c)", planes[list(variants)[1]].weight_grad),
        ("∂W per (n,2c)", planes[list(variants)[2]].weight_grad),
        ("fused forward (2 planes/step)", fused[list(FUSED)[0]].forward),
        ("fused backward (2 planes/step)", fused[list(FUSED)[0]].backward),
        ("fused forward (4 planes/step)", fused[list(FUSED)[1]].forward),
        ("fused backward (4 planes/step)", fused[list(FUSED)[1]].backward),
        ("numba_direct_conv forward", direct._forward),
        ("numba_direct_conv backward", direct._backward),
        ("nhwc tile 8×16", K.nhwc_tile8),
        ("nhwc runtime O (row kernel)", K._row_runtime_channels),
    ]:
        print(f"{label:30} {fused_multiply_adds(fn)}")


if __name__ == "__main__":
    main()
