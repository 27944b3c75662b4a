"""The direct forward stencil with its loop length rounded up to a multiple of B positions (junk positions computed,
never read back), so that the vector loop leaves no scalar remainder (B 16 is backends/numba_direct_conv.py's BLOCK;
B 1 the loop before it), and with one output plane a step instead of two (same bits).  Compiled for this host, or
for AVX2 only (16 vector registers) with NUMBA_CPU_NAME=znver2 or haswell:
    [NUMBA_CPU_NAME=znver2 NUMBA_CACHE_DIR=<a fresh folder>] python loop_remainder.py"""

# isort: off
import moco_ref  # noqa: F401  (first: the process's thread settings, before NumPy and Numba load)
# isort: on

import numpy as np
from numba import njit, prange

from backends import get_backend
from backends import numba_direct_conv as nd
from moco_ref.bench.clock import median_ms

get_backend("numpy")


@njit(**nd.FLAGS)
def stencil_one_plane(planes, w9, out, Wp):
    """backends/numba_direct_conv.py's _stencil, one output plane a step."""
    C = planes.shape[0]
    O = out.shape[0]
    L = planes.shape[1] - 2 * Wp - 2
    out[:] = out.dtype.type(0)
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


@njit(parallel=True, **nd.FLAGS)
def forward(x, w9, y, B, pairs):
    """backends/numba_direct_conv.py's _forward with planes long enough for a loop rounded to B positions
    (its _stencil takes the loop length from the planes' length); two output planes a step or one."""
    N, H, W, C = x.shape
    O = y.shape[3]
    Wp = W + 2
    P = (H * Wp - 2 + B - 1) // B * B + 2 * Wp + 2
    for n in prange(N):
        xp = np.empty((C, P), dtype=x.dtype)
        yp = np.empty((O, P), dtype=x.dtype)
        nd._to_planes(x[n], xp)  # zeroes the tail past the padded image
        if pairs:
            nd._stencil(xp, w9, yp, Wp)
        else:
            stencil_one_plane(xp, w9, yp, Wp)
        nd._from_planes(yp, y[n])


rng = np.random.default_rng(0)
for N, H, C, O in [(64, 32, 16, 16), (64, 16, 32, 32), (64, 8, 64, 64)]:
    x = rng.standard_normal((N, H, H, C), dtype=np.float32)
    w = rng.standard_normal((O, C, 3, 3), dtype=np.float32)
    w9 = np.ascontiguousarray(w.reshape(O, C, 9))
    ref = nd.conv3x3_forward(x, w)
    res = []
    for B, pairs in ((1, True), (16, True), (32, True), (64, True), (16, False)):
        y = np.empty_like(ref)
        forward(x, w9, y, B, pairs)
        same = "same" if np.array_equal(y, ref) else f"err {np.abs(y - ref).max():.1e}"
        ms = median_ms(lambda: forward(x, w9, y, B, pairs), reps=40)
        res.append(f"B{B}{'' if pairs else ' one plane a step'} {ms:.2f} ms {same}")
    print(f"{H} {C}->{O}: current {median_ms(lambda: nd.conv3x3_forward(x, w), reps=40):.2f} ms;", "; ".join(res))
