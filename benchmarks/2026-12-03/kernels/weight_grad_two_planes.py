"""Experiment: the direct ∂W with two output planes a loop (now backends/numba_direct_conv.py) against one.
python weight_grad_two_planes.py"""

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
def weight_sums1(x_planes, dy_planes, partial, Wp, H):  # the one-plane loop of commit 48c2df4
    C = x_planes.shape[0]
    O = dy_planes.shape[0]
    L = H * Wp - 2
    zero = partial.dtype.type(0)
    for c in range(C):
        x = x_planes[c]
        r0, r1, r2 = x[0:], x[Wp:], x[2 * Wp :]
        for o in range(O):
            d = dy_planes[o, Wp + 1 :]
            s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = s8 = zero
            for q in range(L):
                g = d[q]
                s0 += g * r0[q]
                s1 += g * r0[q + 1]
                s2 += g * r0[q + 2]
                s3 += g * r1[q]
                s4 += g * r1[q + 1]
                s5 += g * r1[q + 2]
                s6 += g * r2[q]
                s7 += g * r2[q + 1]
                s8 += g * r2[q + 2]
            t = partial[o, c]
            t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8] = s0, s1, s2, s3, s4, s5, s6, s7, s8


@njit(**F)
def weight_sums2(x_planes, dy_planes, partial, Wp, H):
    C = x_planes.shape[0]
    O = dy_planes.shape[0]
    L = H * Wp - 2
    zero = partial.dtype.type(0)
    for c in range(C):
        x = x_planes[c]
        r0, r1, r2 = x[0:], x[Wp:], x[2 * Wp :]
        o = 0
        while o + 2 <= O:
            d = dy_planes[o, Wp + 1 :]
            e = dy_planes[o + 1, Wp + 1 :]
            s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = s8 = zero
            t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = t8 = zero
            for q in range(L):
                g = d[q]
                h = e[q]
                x0, x1, x2 = r0[q], r0[q + 1], r0[q + 2]
                x3, x4, x5 = r1[q], r1[q + 1], r1[q + 2]
                x6, x7, x8 = r2[q], r2[q + 1], r2[q + 2]
                s0 += g * x0
                s1 += g * x1
                s2 += g * x2
                s3 += g * x3
                s4 += g * x4
                s5 += g * x5
                s6 += g * x6
                s7 += g * x7
                s8 += g * x8
                t0 += h * x0
                t1 += h * x1
                t2 += h * x2
                t3 += h * x3
                t4 += h * x4
                t5 += h * x5
                t6 += h * x6
                t7 += h * x7
                t8 += h * x8
            p = partial[o, c]
            p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8] = s0, s1, s2, s3, s4, s5, s6, s7, s8
            p = partial[o + 1, c]
            p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8] = t0, t1, t2, t3, t4, t5, t6, t7, t8
            o += 2
        if o < O:
            d = dy_planes[o, Wp + 1 :]
            s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = s8 = zero
            for q in range(L):
                g = d[q]
                s0 += g * r0[q]
                s1 += g * r0[q + 1]
                s2 += g * r0[q + 2]
                s3 += g * r1[q]
                s4 += g * r1[q + 1]
                s5 += g * r1[q + 2]
                s6 += g * r2[q]
                s7 += g * r2[q + 1]
                s8 += g * r2[q + 2]
            p = partial[o, c]
            p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8] = s0, s1, s2, s3, s4, s5, s6, s7, s8


@njit(parallel=True, **F)
def dw_only(x, dy, partial, which):
    N, H, W, C = x.shape
    O = dy.shape[3]
    P = (H + 2) * (W + 2)
    for n in prange(N):
        xp = np.empty((C, P), dtype=x.dtype)
        dp = np.empty((O, P), dtype=x.dtype)
        nd._to_planes(x[n], xp)
        nd._to_planes(dy[n], dp)
        if which == 0:
            weight_sums1(xp, dp, partial[n], W + 2, H)
        else:
            weight_sums2(xp, dp, partial[n], W + 2, H)


rng = np.random.default_rng(0)
for N, H, C, O in [(64, 32, 16, 16), (64, 16, 32, 32), (64, 32, 3, 16)]:
    x = rng.standard_normal((N, H, H, C), dtype=np.float32)
    dy = rng.standard_normal((N, H, H, O), dtype=np.float32)
    p1 = np.empty((N, O, C, 9), np.float32)
    p2 = p1.copy()
    dw_only(x, dy, p1, 0)
    dw_only(x, dy, p2, 1)
    err = np.abs(p1 - p2).max() / np.abs(p1).max()
    a = median_ms(lambda: dw_only(x, dy, p1, 0), reps=40)
    b = median_ms(lambda: dw_only(x, dy, p2, 1), reps=40)
    fl = 2 * N * H * H * C * O * 9 / 1e9
    print(
        f"N{N} {H} {C}->{O}: dW one plane {a:.2f} ms ({fl / a * 1e3:.0f} GF/s), "
        f"2 outputs {b:.2f} ms ({fl / b * 1e3:.0f} GF/s) err {err:.1e}"
    )
