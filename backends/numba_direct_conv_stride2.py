"""The downsampling convolutions, direct, for NumPy arrays in Numba: 3×3 at stride 2 (padding 1) and the 1×1
shortcut at stride 2 (padding 0), forward, ∂L/∂x and ∂L/∂W, without an im2col matrix.

backends/numba_fast.py registers them beside the stride-1 kernel (backends/numba_direct_conv.py) for the shapes
``DIRECT_RULE`` gives them (``direct_conv_wanted``); tests/test_fast_paths.py checks them against the im2col formula.

Notation: N batch, H×W image, C input channels, O output channels, Ho = ⌈H/2⌉, Wo = ⌈W/2⌉ the output, Wd = Wo + 2,
x_pad the image with its zero border of 1, and t = 3·a + b the tap at row offset a and column offset b (0, 1, 2).

3×3, stride 2.  y[i, j] reads x_pad[2i + a, 2j + b]: every other column, which a vector loop cannot load.  So each
channel is split into its four phases, the planes x_rs[u, v] = x_pad[2u + r, 2v + s] (r, s ∈ {0, 1}), each
(Ho + 1)×Wd and flattened.  The tap (a, b) of output (i, j) is then phase (a mod 2, b mod 2) at flat position
q + (a div 2)·Wd + (b div 2), q = i·Wd + j: a stencil over contiguous positions, as at stride 1, and the output
planes have the stride-1 kernel's bordered (Ho + 2)×Wd layout (its ``_from_planes`` reads them back):

    forward     y_o = Σ_c Σ_t W[o, c, t] · phase_t(x_c)
    ∂L/∂x       dx_rs,c[u, v] = Σ_o Σ_{(a, b) ≡ (r, s) mod 2} W[o, c, a, b] · dy_o[u − a div 2, v − b div 2]
                (the four phases of dx_pad; dy in the stride-1 kernel's zero-bordered planes, so that u − 1 = −1
                and u = Ho read the border)
    ∂L/∂W       dW[o, c, t] = Σ_n Σ_q dy_o[q] · phase_t(x_c)[q]

1×1, stride 2.  y[i, j] = W · x[2i, 2j]: each channel's even pixels as one flat plane of Ho·Wo values, then

    forward     y_o = Σ_c W[o, c] · x_c         ∂L/∂x at the even pixels: Σ_o W[o, c] · dy_o (zero elsewhere)
    ∂L/∂W       dW[o, c] = Σ_n Σ_q dy_o[q] · x_c[q]

Each sample is one task (``prange`` over the batch), its planes in buffers of its own; ∂L/∂W is summed per sample,
then over the samples in order in float64: the same bits with any number of threads.  Two output planes at a time
share each load (the odd last one pairs with itself, its twin's weights zero).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from backends.numba_direct_conv import FLAGS, _from_planes, _to_planes


# ------------------------------------------------------------------ 3×3, stride 2, padding 1
@njit(**FLAGS)
def _to_phases(x, phases, Wd):
    """One sample (H, W, C) -> (C, 4, (Ho + 1)·Wd): phase 2r + s holds x_pad[2u + r, 2v + s] at u·Wd + v."""
    H, W, C = x.shape
    phases[:] = phases.dtype.type(0)
    for i in range(H):
        u, r = (i + 1) // 2, (i + 1) % 2
        for j in range(W):
            p = 2 * r + (j + 1) % 2
            q = u * Wd + (j + 1) // 2
            for c in range(C):
                phases[c, p, q] = x[i, j, c]


@njit(**FLAGS)
def _from_phases(phases, dx, Wd):
    """The four phases of dx_pad, (C, 4, (Ho + 1)·Wd) -> one sample (H, W, C)."""
    H, W, C = dx.shape
    for i in range(H):
        u, r = (i + 1) // 2, (i + 1) % 2
        for j in range(W):
            p = 2 * r + (j + 1) % 2
            q = u * Wd + (j + 1) // 2
            for c in range(C):
                dx[i, j, c] = phases[c, p, q]


@njit(**FLAGS)
def _stencil_stride2(phases, w9, out, Wd, Ho):
    """out_o = Σ_c Σ_t w9[o, c, t] · phase_t(x_c): (C, 4, (Ho + 1)·Wd), (O, C, 9) -> (O, (Ho + 2)·Wd), rows 1..Ho."""
    C = phases.shape[0]
    O = out.shape[0]
    L = Ho * Wd - 2  # q = i·Wd + j up to the last output, written at q + Wd + 1
    zero = out.dtype.type(0)
    out[:] = zero
    for o in range(0, O, 2):
        twin = min(o + 1, O - 1)
        y0, y1 = out[o, Wd + 1 :], out[twin, Wd + 1 :]
        for c in range(C):
            e, f, g, h = phases[c, 0], phases[c, 1], phases[c, 2], phases[c, 3]
            e2, f2 = e[Wd:], f[Wd:]
            u, v = w9[o, c], w9[twin, c]
            u0, u1, u2, u3, u4, u5, u6, u7, u8 = u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8]
            v0, v1, v2, v3, v4, v5, v6, v7, v8 = v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]
            if twin == o:
                v0 = v1 = v2 = v3 = v4 = v5 = v6 = v7 = v8 = zero
            for q in range(L):
                x0, x1, x2 = e[q], f[q], e[q + 1]
                x3, x4, x5 = g[q], h[q], g[q + 1]
                x6, x7, x8 = e2[q], f2[q], e2[q + 1]
                y0[q] += (u0 * x0 + u1 * x1 + u2 * x2) + (u3 * x3 + u4 * x4 + u5 * x5) + (u6 * x6 + u7 * x7 + u8 * x8)
                y1[q] += (v0 * x0 + v1 * x1 + v2 * x2) + (v3 * x3 + v4 * x4 + v5 * x5) + (v6 * x6 + v7 * x7 + v8 * x8)


@njit(**FLAGS)
def _transposed_stride2(dy_planes, w9t, phases, Wd, Ho):
    """The four phases of dx_pad from dy's bordered (O, (Ho + 2)·Wd) planes; w9t (C, O, 9) -> (C, 4, (Ho + 1)·Wd).

    With q = u·Wd + v, dy[u − a, v − b] (a, b ∈ {0, 1}) sits at q + (1 − a)·Wd + (1 − b) of dy's plane: d, d1, dw,
    dw1 below are dy[u − 1, v − 1], dy[u − 1, v], dy[u, v − 1], dy[u, v]."""
    C = phases.shape[0]
    O = dy_planes.shape[0]
    L = (Ho + 1) * Wd - 1  # every (u, v) but the last junk column's last one
    zero = phases.dtype.type(0)
    phases[:] = zero
    for c in range(C):
        p00, p01, p10, p11 = phases[c, 0], phases[c, 1], phases[c, 2], phases[c, 3]
        for o in range(0, O, 2):
            twin = min(o + 1, O - 1)
            d, e = dy_planes[o], dy_planes[twin]
            d1, dw, dw1 = d[1:], d[Wd:], d[Wd + 1 :]
            e1, ew, ew1 = e[1:], e[Wd:], e[Wd + 1 :]
            u, v = w9t[c, o], w9t[c, twin]
            u0, u1, u2, u3, u4, u5, u6, u7, u8 = u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8]
            v0, v1, v2, v3, v4, v5, v6, v7, v8 = v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]
            if twin == o:
                v0 = v1 = v2 = v3 = v4 = v5 = v6 = v7 = v8 = zero
            for q in range(L):  # one phase a loop: each loop stores to one plane only (and vectorises)
                p00[q] += ((u8 * d[q] + u6 * d1[q]) + (u2 * dw[q] + u0 * dw1[q])) + (
                    (v8 * e[q] + v6 * e1[q]) + (v2 * ew[q] + v0 * ew1[q])
                )
            for q in range(L):
                p01[q] += (u7 * d1[q] + u1 * dw1[q]) + (v7 * e1[q] + v1 * ew1[q])
            for q in range(L):
                p10[q] += (u5 * dw[q] + u3 * dw1[q]) + (v5 * ew[q] + v3 * ew1[q])
            for q in range(L):
                p11[q] += u4 * dw1[q] + v4 * ew1[q]


@njit(**FLAGS)
def _weight_sums_stride2(phases, dy_planes, partial, Wd, Ho):
    """One sample's ∂W: partial[o, c, t] = Σ_q dy_o[q] · phase_t(x_c)[q], nine sums per (o, c)."""
    C = phases.shape[0]
    O = dy_planes.shape[0]
    L = Ho * Wd - 2
    zero = partial.dtype.type(0)
    for c in range(C):
        e, f, g, h = phases[c, 0], phases[c, 1], phases[c, 2], phases[c, 3]
        e2, f2 = e[Wd:], f[Wd:]
        for o in range(O):
            d = dy_planes[o, Wd + 1 :]
            s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = s8 = zero
            for q in range(L):
                k = d[q]
                s0 += k * e[q]
                s1 += k * f[q]
                s2 += k * e[q + 1]
                s3 += k * g[q]
                s4 += k * h[q]
                s5 += k * g[q + 1]
                s6 += k * e2[q]
                s7 += k * f2[q]
                s8 += k * e2[q + 1]
            t = partial[o, c]
            t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8] = s0, s1, s2, s3, s4, s5, s6, s7, s8


@njit(parallel=True, **FLAGS)
def _forward3x3(x, w9, y):  # x (N, H, W, C), w9 (O, C, 9), y (N, Ho, Wo, O)
    N, H, W, C = x.shape
    _, Ho, Wo, O = y.shape
    Wd = Wo + 2
    for n in prange(N):
        phases = np.empty((C, 4, (Ho + 1) * Wd), dtype=x.dtype)
        y_planes = np.empty((O, (Ho + 2) * Wd), dtype=x.dtype)
        _to_phases(x[n], phases, Wd)
        _stencil_stride2(phases, w9, y_planes, Wd, Ho)
        _from_planes(y_planes, y[n])


@njit(parallel=True, **FLAGS)
def _backward3x3(x, dy, w9t, need_dx, dx, partial):  # w9t (C, O, 9); partial (N, O, C, 9)
    N, H, W, C = x.shape
    _, Ho, Wo, O = dy.shape
    Wd = Wo + 2
    for n in prange(N):
        phases = np.empty((C, 4, (Ho + 1) * Wd), dtype=x.dtype)
        dy_planes = np.empty((O, (Ho + 2) * Wd), dtype=x.dtype)
        _to_phases(x[n], phases, Wd)
        _to_planes(dy[n], dy_planes)
        _weight_sums_stride2(phases, dy_planes, partial[n], Wd, Ho)
        if need_dx:
            _transposed_stride2(dy_planes, w9t, phases, Wd, Ho)  # x's phases are not needed any more
            _from_phases(phases, dx[n], Wd)


def conv3x3_stride2_forward(x, w):
    """y = conv2d(x, w), 3×3, stride 2, padding 1: (N, H, W, C), (O, C, 3, 3) -> (N, ⌈H/2⌉, ⌈W/2⌉, O)."""
    N, H, W, C = x.shape
    O = w.shape[0]
    y = np.empty((N, (H + 1) // 2, (W + 1) // 2, O), dtype=x.dtype)
    _forward3x3(np.ascontiguousarray(x), np.ascontiguousarray(w.reshape(O, C, 9), dtype=x.dtype), y)
    return y


def conv3x3_stride2_backward(dy, x, w, need_dx: bool = True):
    """(∂L/∂x or None, ∂L/∂W) of :func:`conv3x3_stride2_forward` given dy = ∂L/∂y (N, Ho, Wo, O)."""
    N, _, _, C = x.shape
    O = w.shape[0]
    w9t = np.ascontiguousarray(w.reshape(O, C, 9).transpose(1, 0, 2), dtype=x.dtype)
    dx = np.empty(x.shape if need_dx else (1, 1, 1, 1), dtype=x.dtype)
    partial = np.empty((N, O, C, 9), dtype=x.dtype)
    _backward3x3(np.ascontiguousarray(x), np.ascontiguousarray(dy), w9t, bool(need_dx), dx, partial)
    dw = partial.sum(axis=0, dtype=np.float64)  # sample by sample, in order (NumPy's axis-0 sum)
    return (dx if need_dx else None), dw.astype(x.dtype).reshape(O, C, 3, 3)


# ------------------------------------------------------------------ 1×1, stride 2, padding 0
@njit(**FLAGS)
def _even_pixels(x, planes):
    """One sample (H, W, C) -> (C, Ho·Wo): x[2i, 2j, c] at i·Wo + j."""
    H, W, C = x.shape
    Wo = (W + 1) // 2
    for i in range(0, H, 2):
        for j in range(0, W, 2):
            q = (i // 2) * Wo + j // 2
            for c in range(C):
                planes[c, q] = x[i, j, c]


@njit(**FLAGS)
def _mix(planes, w, out):
    """out_o = Σ_c w[o, c] · planes_c: (C, P), (O, C) -> (O, P)."""
    C, P = planes.shape
    O = out.shape[0]
    zero = out.dtype.type(0)
    out[:] = zero
    for o in range(0, O, 2):
        twin = min(o + 1, O - 1)
        y0, y1 = out[o], out[twin]
        for c in range(C):
            x = planes[c]
            u, v = w[o, c], (w[twin, c] if twin != o else zero)
            for q in range(P):
                y0[q] += u * x[q]
                y1[q] += v * x[q]


@njit(parallel=True, **FLAGS)
def _forward1x1(x, w, y):  # x (N, H, W, C), w (O, C), y (N, Ho, Wo, O)
    N, H, W, C = x.shape
    _, Ho, Wo, O = y.shape
    for n in prange(N):
        planes = np.empty((C, Ho * Wo), dtype=x.dtype)
        y_planes = np.empty((O, Ho * Wo), dtype=x.dtype)
        _even_pixels(x[n], planes)
        _mix(planes, w, y_planes)
        yn = y[n]
        for i in range(Ho):
            for j in range(Wo):
                for o in range(O):
                    yn[i, j, o] = y_planes[o, i * Wo + j]


@njit(parallel=True, **FLAGS)
def _backward1x1(x, dy, wt, need_dx, dx, partial):  # wt (C, O); partial (N, O, C)
    N, H, W, C = x.shape
    _, Ho, Wo, O = dy.shape
    P = Ho * Wo
    zero = x.dtype.type(0)
    for n in prange(N):
        planes = np.empty((C, P), dtype=x.dtype)
        dy_planes = np.empty((O, P), dtype=x.dtype)
        _even_pixels(x[n], planes)
        dyn = dy[n]
        for i in range(Ho):
            for j in range(Wo):
                for o in range(O):
                    dy_planes[o, i * Wo + j] = dyn[i, j, o]
        for o in range(O):
            d = dy_planes[o]
            for c in range(C):
                xc = planes[c]
                s = zero
                for q in range(P):
                    s += d[q] * xc[q]
                partial[n, o, c] = s
        if need_dx:
            _mix(dy_planes, wt, planes)  # ∂x at the even pixels, in x's planes
            dxn = dx[n]
            dxn[:] = zero
            for i in range(0, H, 2):
                for j in range(0, W, 2):
                    q = (i // 2) * Wo + j // 2
                    for c in range(C):
                        dxn[i, j, c] = planes[c, q]


def conv1x1_stride2_forward(x, w):
    """y = conv2d(x, w), 1×1, stride 2, padding 0: (N, H, W, C), (O, C, 1, 1) -> (N, ⌈H/2⌉, ⌈W/2⌉, O)."""
    N, H, W, C = x.shape
    O = w.shape[0]
    y = np.empty((N, (H + 1) // 2, (W + 1) // 2, O), dtype=x.dtype)
    _forward1x1(np.ascontiguousarray(x), np.ascontiguousarray(w.reshape(O, C), dtype=x.dtype), y)
    return y


def conv1x1_stride2_backward(dy, x, w, need_dx: bool = True):
    """(∂L/∂x or None, ∂L/∂W) of :func:`conv1x1_stride2_forward` given dy = ∂L/∂y (N, Ho, Wo, O)."""
    N, _, _, C = x.shape
    O = w.shape[0]
    wt = np.ascontiguousarray(w.reshape(O, C).T, dtype=x.dtype)
    dx = np.empty(x.shape if need_dx else (1, 1, 1, 1), dtype=x.dtype)
    partial = np.empty((N, O, C), dtype=x.dtype)
    _backward1x1(np.ascontiguousarray(x), np.ascontiguousarray(dy), wt, bool(need_dx), dx, partial)
    dw = partial.sum(axis=0, dtype=np.float64)  # sample by sample, in order (NumPy's axis-0 sum)
    return (dx if need_dx else None), dw.astype(x.dtype).reshape(O, C, 1, 1)
