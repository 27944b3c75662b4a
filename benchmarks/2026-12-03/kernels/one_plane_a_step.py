"""One output plane a step against two in the direct forward stencil (both with the loop rounded to 16 positions);
compiled for AVX2 only with NUMBA_CPU_NAME=znver2 (16 vector registers) or for this host.
    [NUMBA_CPU_NAME=znver2 NUMBA_CACHE_DIR=<a fresh folder>] python one_plane_a_step.py"""

# isort: off
import moco_ref  # noqa: F401  (first: the process's thread settings, before NumPy and Numba load)
# isort: on


import numpy as np
from numba import njit, prange

from backends import get_backend
from backends import numba_direct_conv as nd
from moco_ref.bench.clock import median_ms

get_backend("numpy")
F = nd.FLAGS


@njit(**F)
def stencil_r(planes, w9, out, Wp, L):
    C = planes.shape[0]
    O = out.shape[0]
    zero = out.dtype.type(0)
    out[:] = zero
    o = 0
    while o + 2 <= O:
        y0, y1 = out[o, Wp + 1 :], out[o + 1, Wp + 1 :]
        for c in range(C):
            x = planes[c]
            r0, r1, r2 = x[0:], x[Wp:], x[2 * Wp :]
            u = w9[o, c]
            v = w9[o + 1, c]
            u0, u1, u2, u3, u4, u5, u6, u7, u8 = u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8]
            v0, v1, v2, v3, v4, v5, v6, v7, v8 = v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]
            for q in range(L):
                x0, x1, x2 = r0[q], r0[q + 1], r0[q + 2]
                x3, x4, x5 = r1[q], r1[q + 1], r1[q + 2]
                x6, x7, x8 = r2[q], r2[q + 1], r2[q + 2]
                y0[q] += (u0 * x0 + u1 * x1 + u2 * x2) + (u3 * x3 + u4 * x4 + u5 * x5) + (u6 * x6 + u7 * x7 + u8 * x8)
                y1[q] += (v0 * x0 + v1 * x1 + v2 * x2) + (v3 * x3 + v4 * x4 + v5 * x5) + (v6 * x6 + v7 * x7 + v8 * x8)
        o += 2


@njit(**F)
def stencil_1(planes, w9, out, Wp, L):
    C = planes.shape[0]
    O = out.shape[0]
    zero = out.dtype.type(0)
    out[:] = zero
    for o in range(O):
        y0 = out[o, Wp + 1 :]
        for c in range(C):
            x = planes[c]
            r0, r1, r2 = x[0:], x[Wp:], x[2 * Wp :]
            u = w9[o, c]
            u0, u1, u2, u3, u4, u5, u6, u7, u8 = u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8]
            for q in range(L):
                y0[q] += (
                    (u0 * r0[q] + u1 * r0[q + 1] + u2 * r0[q + 2])
                    + (u3 * r1[q] + u4 * r1[q + 1] + u5 * r1[q + 2])
                    + (u6 * r2[q] + u7 * r2[q + 1] + u8 * r2[q + 2])
                )


@njit(parallel=True, **F)
def forward_r(x, w9, y, B, planes_per_step=2):
    N, H, W, C = x.shape
    O = y.shape[3]
    Wp = W + 2
    L = H * Wp - 2
    Lr = (L + B - 1) // B * B
    P = Lr + 2 * Wp + 2
    for n in prange(N):
        xp = np.zeros((C, P), dtype=x.dtype)
        yp = np.empty((O, P), dtype=x.dtype)
        nd._to_planes(x[n], xp[:, : (H + 2) * Wp])
        if planes_per_step == 2:
            stencil_r(xp, w9, yp, Wp, Lr)
        else:
            stencil_1(xp, w9, yp, Wp, Lr)
        nd._from_planes(yp[:, : (H + 2) * Wp], y[n])


rng = np.random.default_rng(0)
for N, H, C, O in [(64, 32, 16, 16), (64, 16, 32, 32), (64, 8, 64, 64)]:
    x = rng.standard_normal((N, H, H, C), dtype=np.float32)
    w = rng.standard_normal((O, C, 3, 3), dtype=np.float32)
    w9 = np.ascontiguousarray(w.reshape(O, C, 9))
    ref = nd.conv3x3_forward(x, w)
    y1 = np.empty_like(ref)
    forward_r(x, w9, y1, 16, 1)
    print(
        "one plane a step, B16:",
        f"{median_ms(lambda: forward_r(x, w9, y1, 16, 1), reps=40):.2f} ms",
        np.abs(y1 - ref).max(),
    )
    res = []
    for B in (1, 16, 32, 64):
        y = np.empty_like(ref)
        forward_r(x, w9, y, B)
        same = np.array_equal(y, ref)
        err = np.abs(y - ref).max()
        res.append(
            f"B{B} {median_ms(lambda: forward_r(x, w9, y, B), reps=40):.2f} ms {'same' if same else f'err {err:.1e}'}"
        )
    print(f"{H} {C}->{O}: current {median_ms(lambda: nd.conv3x3_forward(x, w), reps=40):.2f} ms;", "; ".join(res))
