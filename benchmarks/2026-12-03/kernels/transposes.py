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
def to_planes_4(x, planes):
    H, W, C = x.shape
    Wp = W + 2
    zero = planes.dtype.type(0)
    for c in range(C):
        for p in range(Wp):
            planes[c, p] = zero
        for p in range((H + 1) * Wp, planes.shape[1]):
            planes[c, p] = zero
    for i in range(H):
        row = (i + 1) * Wp
        for c in range(C):
            planes[c, row] = zero
            planes[c, row + W + 1] = zero
        xi = x[i]
        j = 0
        while j + 4 <= W:
            a0, a1, a2, a3 = xi[j], xi[j + 1], xi[j + 2], xi[j + 3]
            for c in range(C):
                d = planes[c, row + 1 + j :]
                d[0] = a0[c]
                d[1] = a1[c]
                d[2] = a2[c]
                d[3] = a3[c]
            j += 4
        for jj in range(j, W):
            for c in range(C):
                planes[c, row + 1 + jj] = xi[jj, c]


@njit(**F)
def from_planes_4(planes, y):
    H, W, O = y.shape
    Wp = W + 2
    for i in range(H):
        row = (i + 1) * Wp + 1
        yi = y[i]
        j = 0
        while j + 4 <= W:
            b0, b1, b2, b3 = yi[j], yi[j + 1], yi[j + 2], yi[j + 3]
            for o in range(O):
                s = planes[o, row + j :]
                b0[o] = s[0]
                b1[o] = s[1]
                b2[o] = s[2]
                b3[o] = s[3]
            j += 4
        for jj in range(j, W):
            for o in range(O):
                yi[jj, o] = planes[o, row + jj]


@njit(parallel=True, **F)
def run(x, P, which, y):
    N, H, W, C = x.shape
    for n in prange(N):
        pl = np.empty((C, P), dtype=x.dtype)
        if which == 0:
            nd._to_planes(x[n], pl)
            nd._from_planes(pl, y[n])
        else:
            to_planes_4(x[n], pl)
            from_planes_4(pl, y[n])


rng = np.random.default_rng(0)
for N, H, C in [(64, 32, 16), (64, 16, 32), (64, 32, 3)]:
    x = rng.standard_normal((N, H, H, C), dtype=np.float32)
    y = np.empty_like(x)
    y2 = np.empty_like(x)
    P = nd._plane_length(H, H)
    run(x, P, 0, y)
    run(x, P, 1, y2)
    assert np.array_equal(y, x) and np.array_equal(y2, x)
    current, blocks = median_ms(lambda: run(x, P, 0, y), reps=40), median_ms(lambda: run(x, P, 1, y2), reps=40)
    print(H, C, f"current {current:.3f} ms  4-pixel blocks {blocks:.3f} ms")
