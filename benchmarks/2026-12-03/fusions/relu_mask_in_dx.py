"""Item 3 of issue 27, measured: the ReLU mask applied in the direct backward's ∂x pass against the backward and
ops.relu_backward apart.
    python relu_mask_in_dx.py"""

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


@njit(**F)
def from_planes_masked(planes, mask, y):
    H, W, O = y.shape
    Wp = W + 2
    zero = y.dtype.type(0)
    for i in range(H):
        row = (i + 1) * Wp + 1
        for j in range(W):
            for o in range(O):
                y[i, j, o] = planes[o, row + j] if mask[i, j, o] else zero


@njit(parallel=True, **F)
def backward_m(x, dy, w9_flipped, dx, partial, mask):
    N, H, W, C = x.shape
    O = dy.shape[3]
    P = nd._plane_length(H, W)
    for n in prange(N):
        x_planes = np.empty((C, P), dtype=x.dtype)
        dy_planes = np.empty((O, P), dtype=x.dtype)
        nd._to_planes(x[n], x_planes)
        nd._to_planes(dy[n], dy_planes)
        nd._weight_sums(x_planes, dy_planes, partial[n], W + 2, H)
        dx_planes = np.empty((C, P), dtype=x.dtype)
        nd._stencil(dy_planes, w9_flipped, dx_planes, W + 2)
        from_planes_masked(dx_planes, mask[n], dx[n])


rng = np.random.default_rng(0)
for N, H, C, O in [(64, 32, 16, 16), (64, 16, 32, 32)]:
    x = rng.standard_normal((N, H, H, C), dtype=np.float32)
    w = rng.standard_normal((O, C, 3, 3), dtype=np.float32)
    dy = rng.standard_normal((N, H, H, O), dtype=np.float32)
    mask = rng.random((N, H, H, C)) > 0.5
    fl = np.ascontiguousarray(w.reshape(O, C, 9)[:, :, ::-1].transpose(1, 0, 2))
    dx = np.empty_like(x)
    partial = np.empty((N, O, C, 9), np.float32)

    def sep():
        d, _ = nd.conv3x3_backward(dy, x, w, True)
        nf.relu_backward(d, mask)

    def fused():
        backward_m(x, dy, fl, dx, partial, mask)
        partial.sum(axis=0, dtype=np.float64)

    d, _ = nd.conv3x3_backward(dy, x, w, True)
    fused()
    assert np.array_equal(nf.relu_backward(d, mask), dx)
    a = median_ms(sep, reps=40)
    b = median_ms(fused, reps=40)
    print(f"{H} {C}->{O}: backward + relu_backward {a:.2f} ms; fused {b:.2f} ms; saves {a - b:.2f} ms")
