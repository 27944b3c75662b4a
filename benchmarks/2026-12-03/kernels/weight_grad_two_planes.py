"""Experiment: the direct ∂W with two output planes a loop (backends/numba_direct_conv.py's _weight_sums) against
the one-plane loop it replaced.
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
            nd._weight_sums(xp, dp, partial[n], W + 2, H)  # two planes a loop


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
