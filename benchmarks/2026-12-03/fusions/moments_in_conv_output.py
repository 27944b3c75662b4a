"""Item 3 of issue 27, measured: BatchNorm's per-sample moments computed in the direct forward's output pass (from
the output planes, in cache) against the forward and ops.channel_moments apart.
    python moments_in_conv_output.py"""

# isort: off
import moco_ref  # noqa: F401  (first: the process's thread settings, before NumPy and Numba load)
# isort: on


import numpy as np
from numba import njit, prange

from backends import get_backend
from backends import numba_direct_conv as nd
from backends import numba_fast as nf
from moco_ref.bench.clock import median_ms

get_backend("numpy")
F = nd.FLAGS


@njit(cache=False, error_model="numpy")
def plane_moments(planes, Wp, H, W, means, squares):  # per output plane: mean and Σ(y−mean)² over interior, float64
    O = planes.shape[0]
    for o in range(O):
        pl = planes[o]
        s = 0.0
        for i in range(H):
            row = pl[(i + 1) * Wp + 1 :]
            for j in range(W):
                s += row[j]
        s /= H * W
        q = 0.0
        for i in range(H):
            row = pl[(i + 1) * Wp + 1 :]
            for j in range(W):
                d = row[j] - s
                q += d * d
        means[o] = s
        squares[o] = q


@njit(parallel=True, **F)
def forward_m(x, w9, y, means, squares):
    N, H, W, C = x.shape
    O = y.shape[3]
    P = nd._plane_length(H, W)
    for n in prange(N):
        x_planes = np.empty((C, P), dtype=x.dtype)
        y_planes = np.empty((O, P), dtype=x.dtype)
        nd._to_planes(x[n], x_planes)
        nd._stencil(x_planes, w9, y_planes, W + 2)
        nd._from_planes(y_planes, y[n])
        plane_moments(y_planes, W + 2, H, W, means[n], squares[n])


rng = np.random.default_rng(0)
for N, H, C, O in [(64, 32, 16, 16), (64, 16, 32, 32), (64, 32, 3, 16)]:
    x = rng.standard_normal((N, H, H, C), dtype=np.float32)
    w = rng.standard_normal((O, C, 3, 3), dtype=np.float32)
    w9 = np.ascontiguousarray(w.reshape(O, C, 9))
    y = np.empty((N, H, H, O), np.float32)
    means = np.empty((N, O))
    squares = np.empty((N, O))
    forward_m(x, w9, y, means, squares)
    a = median_ms(lambda: nd.conv3x3_forward(x, w), reps=40)
    b = median_ms(lambda: nf.channel_moments(y.reshape(N, 1, H * H, O)), reps=40)
    c = median_ms(lambda: forward_m(x, w9, y, means, squares), reps=40)
    print(
        f"{H} {C}->{O}: forward {a:.2f} + moments {b:.2f} = {a + b:.2f} ms; fused {c:.2f} ms; saves {a + b - c:.2f} ms"
    )
