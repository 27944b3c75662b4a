"""A direct 3×3 convolution (stride 1, padding 1) for NumPy arrays in Numba: no im2col matrix.

backends/numba_fast.py registers it as the fast function of ``ops.conv2d_forward`` and ``ops.conv2d_backward``
for the shapes ``DIRECT_RULE`` gives it (``direct_conv_wanted``).  tests/test_fast_paths.py checks it against
the im2col formula.

Notation: N batch, H×W image, C input channels, O output channels, Wp = W + 2, P = (H + 2)·Wp, and
t = 3·a + b the kernel tap at row offset a and column offset b (0, 1, 2).

Each sample is one task (``prange`` over the batch).  The task copies its sample's channels into
zero-bordered, flattened (H + 2)×(W + 2) planes of its own (a few tens of kilobytes, in cache), so that
the tap (a, b) of flat position p is p + (a − 1)·Wp + (b − 1), and every 3×3 stencil becomes a loop
over contiguous positions with nine scalar weights, which LLVM vectorises:

    forward     y_o = Σ_c Σ_t W[o, c, t] · shift_t(x_c)
    ∂L/∂x       dx_c = Σ_o Σ_t W[o, c, 8 − t] · shift_t(dy_o)      (the flipped, transposed kernel)
    ∂L/∂W       dW[o, c, t] = Σ_n Σ_p dy_o[p] · x_c[p + offset_t]   (dy's zero border: the border columns,
                                                                    computed as whole rows, add nothing)

Rows are computed whole, border columns included; those positions are never read back.  The stencils' loops
also run on past the last row to a whole number of BLOCK positions (the planes have a zeroed tail for them), so
that the vector loop leaves no scalar remainder: the extra positions are junk, never read back either, and every
real position gets the same bits as before (measured: the 32 → 32 layer on 16×16 images 8 % faster, the 16 → 16
one on 32×32 5 %; benchmarks/RESULTS.md).  ∂L/∂W is
summed per sample, then over the samples in order in float64: the same bits with any number of threads.

Every index inside a vectorised loop is a loop counter plus a non-negative constant on a view taken
outside the loop: an index that may be negative makes Numba emit its wraparound (a compare and a
conditional move per load), which stops the vectoriser.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

FLAGS = {"fastmath": True, "error_model": "numpy", "cache": True}
BLOCK = 16  # the stencils' loop length is rounded up to a multiple of this many positions


@njit(**FLAGS)
def _plane_length(H, W):
    """Values per plane: the (H + 2)·(W + 2) of the padded image, and room for the stencils' rounded loops
    (their last position's taps reach 2·Wp + 2 further)."""
    Wp = W + 2
    L = (H * Wp - 2 + BLOCK - 1) // BLOCK * BLOCK
    return L + 2 * Wp + 2


@njit(**FLAGS)
def _to_planes(x, planes):
    """One sample (H, W, C) -> (C, P) zero-bordered planes (and a zeroed tail when the planes are longer)."""
    H, W, C = x.shape
    Wp = W + 2
    zero = planes.dtype.type(0)
    for c in range(C):
        for p in range((H + 2) * Wp, planes.shape[1]):
            planes[c, p] = zero
    for c in range(C):
        for p in range(Wp):
            planes[c, p] = zero
            planes[c, (H + 1) * Wp + p] = zero
    for i in range(H):
        row = (i + 1) * Wp
        for c in range(C):
            planes[c, row] = zero
            planes[c, row + W + 1] = zero
        for j in range(W):
            for c in range(C):
                planes[c, row + j + 1] = x[i, j, c]


@njit(**FLAGS)
def _from_planes(planes, y):
    """One sample's (O, P) planes -> (H, W, O), borders left out."""
    H, W, O = y.shape
    Wp = W + 2
    for i in range(H):
        row = (i + 1) * Wp + 1
        for j in range(W):
            for o in range(O):
                y[i, j, o] = planes[o, row + j]


@njit(**FLAGS)
def _stencil(planes, w9, out, Wp):
    """out_o = Σ_c Σ_t w9[o, c, t] · shift_t(planes_c) for the rows 1..H: (C, P), (O, C, 9) -> (O, P).

    Two output planes at a time share the nine loads of each input position; an odd last one alone."""
    C = planes.shape[0]
    O = out.shape[0]
    L = planes.shape[1] - 2 * Wp - 2  # flat positions q + Wp + 1, q = 0 .. L − 1: rows 1..H, then junk to BLOCK
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
    if o < O:
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


@njit(**FLAGS)
def _weight_sums(x_planes, dy_planes, partial, Wp, H):
    """One sample's ∂W: partial[o, c, t] = Σ_p dy_o[p] · x_c[p + offset_t], nine sums per (o, c).

    Two output planes at a time share the nine loads of each input position (18 running sums); an odd last
    one alone.  Each sum adds the same terms in the same order either way."""
    C = x_planes.shape[0]
    O = dy_planes.shape[0]
    L = H * Wp - 2
    zero = partial.dtype.type(0)
    for c in range(C):
        x = x_planes[c]
        r0, r1, r2 = x[0:], x[Wp:], x[2 * Wp :]
        o = 0
        while o + 2 <= O:
            d, e = dy_planes[o, Wp + 1 :], dy_planes[o + 1, Wp + 1 :]
            s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = s8 = zero
            t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = t8 = zero
            for q in range(L):
                g, h = d[q], e[q]
                x0, x1, x2 = r0[q], r0[q + 1], r0[q + 2]
                x3, x4, x5 = r1[q], r1[q + 1], r1[q + 2]
                x6, x7, x8 = r2[q], r2[q + 1], r2[q + 2]
                s0, s1, s2 = s0 + g * x0, s1 + g * x1, s2 + g * x2
                s3, s4, s5 = s3 + g * x3, s4 + g * x4, s5 + g * x5
                s6, s7, s8 = s6 + g * x6, s7 + g * x7, s8 + g * x8
                t0, t1, t2 = t0 + h * x0, t1 + h * x1, t2 + h * x2
                t3, t4, t5 = t3 + h * x3, t4 + h * x4, t5 + h * x5
                t6, t7, t8 = t6 + h * x6, t7 + h * x7, t8 + h * x8
            u, v = partial[o, c], partial[o + 1, c]
            u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8] = s0, s1, s2, s3, s4, s5, s6, s7, s8
            v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8] = t0, t1, t2, t3, t4, t5, t6, t7, t8
            o += 2
        if o < O:
            d = dy_planes[o, Wp + 1 :]
            s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = s8 = zero
            for q in range(L):
                g = d[q]
                s0, s1, s2 = s0 + g * r0[q], s1 + g * r0[q + 1], s2 + g * r0[q + 2]
                s3, s4, s5 = s3 + g * r1[q], s4 + g * r1[q + 1], s5 + g * r1[q + 2]
                s6, s7, s8 = s6 + g * r2[q], s7 + g * r2[q + 1], s8 + g * r2[q + 2]
            u = partial[o, c]
            u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8] = s0, s1, s2, s3, s4, s5, s6, s7, s8


@njit(parallel=True, **FLAGS)
def _forward(x, w9, y):  # x (N, H, W, C), w9 (O, C, 9), y (N, H, W, O)
    N, H, W, C = x.shape
    O = y.shape[3]
    P = _plane_length(H, W)
    for n in prange(N):
        x_planes = np.empty((C, P), dtype=x.dtype)
        y_planes = np.empty((O, P), dtype=x.dtype)
        _to_planes(x[n], x_planes)
        _stencil(x_planes, w9, y_planes, W + 2)
        _from_planes(y_planes, y[n])


@njit(parallel=True, **FLAGS)
def _backward(x, dy, w9_flipped, need_dx, dx, partial):  # w9_flipped (C, O, 9); partial (N, O, C, 9)
    N, H, W, C = x.shape
    O = dy.shape[3]
    P = _plane_length(H, W)
    for n in prange(N):
        x_planes = np.empty((C, P), dtype=x.dtype)
        dy_planes = np.empty((O, P), dtype=x.dtype)
        _to_planes(x[n], x_planes)
        _to_planes(dy[n], dy_planes)
        _weight_sums(x_planes, dy_planes, partial[n], W + 2, H)
        if need_dx:
            dx_planes = np.empty((C, P), dtype=x.dtype)
            _stencil(dy_planes, w9_flipped, dx_planes, W + 2)
            _from_planes(dx_planes, dx[n])


def conv3x3_forward(x, w):
    """y = conv2d(x, w), 3×3, stride 1, padding 1: (N, H, W, C), (O, C, 3, 3) -> (N, H, W, O)."""
    N, H, W, C = x.shape
    O = w.shape[0]
    y = np.empty((N, H, W, O), dtype=x.dtype)
    _forward(np.ascontiguousarray(x), np.ascontiguousarray(w.reshape(O, C, 9), dtype=x.dtype), y)
    return y


def conv3x3_backward(dy, x, w, need_dx: bool = True):
    """(∂L/∂x or None, ∂L/∂W) of :func:`conv3x3_forward` given dy = ∂L/∂y (N, H, W, O)."""
    N, _, _, C = x.shape
    O = w.shape[0]
    flipped = np.ascontiguousarray(w.reshape(O, C, 9)[:, :, ::-1].transpose(1, 0, 2), dtype=x.dtype)
    dx = np.empty(x.shape if need_dx else (1, 1, 1, 1), dtype=x.dtype)
    partial = np.empty((N, O, C, 9), dtype=x.dtype)
    _backward(np.ascontiguousarray(x), np.ascontiguousarray(dy), flipped, bool(need_dx), dx, partial)
    dw = partial.sum(axis=0, dtype=np.float64)  # sample by sample, in order (NumPy's axis-0 sum)
    return (dx if need_dx else None), dw.astype(x.dtype).reshape(O, C, 3, 3)
