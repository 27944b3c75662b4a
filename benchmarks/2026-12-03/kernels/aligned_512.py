"""Experiment: the direct forward stencil on three aligned, column-shifted copies of each plane (row stride W),
against backends/numba_direct_conv.py; with --512 the whole process is compiled for 512-bit vectors; PAD=16 pads
each output plane by 16 values, so that no two planes lie a multiple of 4 KiB apart.
    [PAD=16] python aligned_512.py [--512]"""

# isort: off
import moco_ref  # noqa: F401  (first: the process's thread settings, before NumPy and Numba load)
# isort: on

import os
import sys

if "--512" in sys.argv:
    import llvmlite.binding as llvm

    llvm.initialize_native_target() if hasattr(llvm, "initialize_native_target") else None
    os.environ["NUMBA_CPU_FEATURES"] = llvm.get_host_cpu_features().flatten() + ",-prefer-256-bit"
import numpy as np  # noqa: E402  (after NUMBA_CPU_FEATURES is set)
from numba import njit, prange  # noqa: E402

from backends import get_backend  # noqa: E402
from backends import numba_direct_conv as nd  # noqa: E402
from moco_ref.bench.clock import median_ms

get_backend("numpy")
PAD = int(os.environ.get("PAD", "0"))
F = {"fastmath": True, "error_model": "numpy", "cache": False}


@njit(**F)
def aligned_buffer(n, dtype_like):
    raw = np.empty(n + 16, dtype=dtype_like.dtype)
    off = ((-raw.ctypes.data) % 64) // raw.itemsize
    return raw[off : off + n]


@njit(**F)
def to_shifted(x, S):  # x (H, W, C) -> S (3, C, (H+2)*W): S[b, c, (i+1)W + j] = x[i, j+b-1, c]
    H, W, C = x.shape
    zero = S.dtype.type(0)
    S[:] = zero
    for i in range(H):
        row = (i + 1) * W
        for j in range(W):
            for c in range(C):
                v = x[i, j, c]
                S[1, c, row + j] = v
                if j + 1 < W:
                    S[0, c, row + j + 1] = v
                if j >= 1:
                    S[2, c, row + j - 1] = v


@njit(**F)
def stencil_al(S, w9, Y, W, L):
    C = S.shape[1]
    O = Y.shape[0]
    zero = Y.dtype.type(0)
    Y[:] = zero
    o = 0
    while o + 2 <= O:
        y0, y1 = Y[o], Y[o + 1]
        for c in range(C):
            a0, a1, a2 = S[0, c], S[1, c], S[2, c]
            r00, r01, r02 = a0[0:], a1[0:], a2[0:]
            r10, r11, r12 = a0[W:], a1[W:], a2[W:]
            r20, r21, r22 = a0[2 * W :], a1[2 * W :], a2[2 * W :]
            u = w9[o, c]
            v = w9[o + 1, c]
            u0, u1, u2, u3, u4, u5, u6, u7, u8 = u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8]
            v0, v1, v2, v3, v4, v5, v6, v7, v8 = v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]
            for q in range(L):
                x0, x1, x2 = r00[q], r01[q], r02[q]
                x3, x4, x5 = r10[q], r11[q], r12[q]
                x6, x7, x8 = r20[q], r21[q], r22[q]
                y0[q] += (u0 * x0 + u1 * x1 + u2 * x2) + (u3 * x3 + u4 * x4 + u5 * x5) + (u6 * x6 + u7 * x7 + u8 * x8)
                y1[q] += (v0 * x0 + v1 * x1 + v2 * x2) + (v3 * x3 + v4 * x4 + v5 * x5) + (v6 * x6 + v7 * x7 + v8 * x8)
        o += 2
    # (odd O omitted in the experiment)


@njit(**F)
def from_planes_al(Y, y):
    H, W, O = y.shape
    for i in range(H):
        for j in range(W):
            for o in range(O):
                y[i, j, o] = Y[o, i * W + j]


@njit(parallel=True, **F)
def forward_al(x, w9, y):
    N, H, W, C = x.shape
    O = y.shape[3]
    for n in prange(N):
        S = aligned_buffer(3 * C * (H + 2) * W, x[0, 0, 0]).reshape(3, C, (H + 2) * W)
        Y = aligned_buffer(O * (H * W + PAD), x[0, 0, 0]).reshape(O, H * W + PAD)
        to_shifted(x[n], S)
        stencil_al(S, w9, Y, W, H * W)
        from_planes_al(Y, y[n])


rng = np.random.default_rng(0)
for N, H, C, O in [(64, 32, 16, 16), (64, 16, 32, 32), (32, 32, 64, 64)]:
    x = rng.standard_normal((N, H, H, C), dtype=np.float32)
    w = rng.standard_normal((O, C, 3, 3), dtype=np.float32)
    ref = nd.conv3x3_forward(x, w)
    y = np.empty_like(ref)
    w9 = np.ascontiguousarray(w.reshape(O, C, 9))
    forward_al(x, w9, y)
    err = np.abs(y - ref).max() / np.abs(ref).max()
    a = median_ms(lambda: nd.conv3x3_forward(x, w), reps=40)
    b = median_ms(lambda: forward_al(x, w9, y), reps=40)
    fl = 2 * N * H * H * C * O * 9 / 1e9
    print(
        f"{'512' if '--512' in sys.argv else 'def'} N{N} {H}x{H} {C}->{O}: "
        f"current {a:.2f} ms ({fl / a * 1e3:.0f} GF/s)  aligned {b:.2f} ms ({fl / b * 1e3:.0f} GF/s)  err {err:.1e}"
    )
