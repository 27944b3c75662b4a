"""Direct 3×3 convolutions (stride 1, padding 1) in Numba, without an im2col matrix: the prototype of issue 27.

Notation: N batch, H×W image, C input channels, O output channels, Hp = H + 2, Wp = W + 2 (the padded
plane), P = Hp·Wp, t = 3·a + b the kernel tap at row offset a and column offset b (0, 1, 2).

Two families, kept side by side because the first is the design oneDNN uses and the second is the one
LLVM vectorises from Numba:

* NHWC, channels innermost (``nhwc_*``): y[n, i, j, :] = Σ_{a,b,c} x[n, i+a−1, j+b−1, c] · W[:, c, a, b],
  a vector of O output channels updated by one broadcast input value.  Numba leaves the 16-channel loop
  scalar: a loop of a constant 16 trips is unrolled before the vectoriser sees it and its accumulators
  become 16 scalar registers; with the trip count a runtime value the vectoriser's body is 32 or 64
  channels wide (vector width × interleave) and a 16-channel row never enters it.
* Padded planes (``make_stencil``, ``make_weight_grad``, ``weight_grad_by_output``; ``make_fused`` does the same
  one sample per task, its planes in buffers of the task): each (sample, channel) image stored as a zero-bordered
  Hp×Wp plane, flattened, so that the 3×3 stencil at flat position p reads p + (a−1)·Wp + (b−1).  The innermost loop
  runs over ~H·Wp contiguous positions with nine scalar weights: LLVM vectorises it (8 or 16 lanes). Rows are
  computed whole, their two border columns included (junk, never read back).

    forward     y_o = Σ_c Σ_t W[o, c, t] · shift_t(x_c)
    ∂L/∂x       dx_c = Σ_o Σ_t W[o, c, 8 − t] · shift_t(dy_o)        (the same stencil, kernel flipped and transposed)
    ∂L/∂W       dW[o, c, t] = Σ_n Σ_p dy_o[p] · x_c[p + offset_t]    (dy's zero border kills the junk columns)

∂L/∂W is summed per sample (each task owns its sample's partial), then over the samples in a fixed order:
the same bits with any number of threads.

Indexing note: every index inside a vectorised loop is a loop counter plus a non-negative constant, on
views taken outside the loop.  An index that may be negative (p − Wp − 1) makes Numba emit its
negative-index wraparound (a compare and a conditional move per load), which stops the vectoriser.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

FLAGS = {"fastmath": True, "error_model": "numpy"}


# ------------------------------------------------------------------ layout conversions
@njit(parallel=True, **FLAGS)
def to_planes(x, planes):
    """(N, H, W, C) channels last -> (N, C, Hp·Wp) zero-bordered planes."""
    N, H, W, C = x.shape
    Wp = W + 2
    zero = planes.dtype.type(0)
    for n in prange(N):
        target = planes[n]
        for c in range(C):
            plane = target[c]
            for p in range(Wp):  # top border row
                plane[p] = zero
            for p in range((H + 1) * Wp, (H + 2) * Wp):  # bottom border row
                plane[p] = zero
        for i in range(H):
            row = (i + 1) * Wp
            for c in range(C):
                target[c, row] = zero
                target[c, row + W + 1] = zero
            for j in range(W):
                source = x[n, i, j]
                for c in range(C):
                    target[c, row + j + 1] = source[c]


@njit(parallel=True, **FLAGS)
def from_planes(planes, y):
    """(N, O, Hp·Wp) planes (borders ignored) -> (N, H, W, O) channels last."""
    N, H, W, O = y.shape
    Wp = W + 2
    for n in prange(N):
        source = planes[n]
        for i in range(H):
            row = (i + 1) * Wp + 1
            for j in range(W):
                target = y[n, i, j]
                for o in range(O):
                    target[o] = source[o, row + j]


# ------------------------------------------------------------------ padded planes: the stencil
def _stencil_source(block: int) -> str:
    """Source of a kernel computing ``block`` output planes per task (they share the nine input loads)."""
    k = range(block)
    lines = [
        "def stencil(xp, w9, yp, Wp, H):",
        "    N, C, P = xp.shape",
        "    O = w9.shape[0]",
        f"    tasks = O // {block}",
        "    L = H * Wp - 2                                  # flat positions p = q + Wp + 1, rows 1..H",
        "    zero = yp.dtype.type(0)",
        "    for task in prange(N * tasks):",
        "        n = task // tasks",
        f"        o = {block} * (task - n * tasks)",
    ]
    for i in k:
        lines += [
            f"        plane{i} = yp[n, o + {i}]",
            "        for p in range(P):",
            f"            plane{i}[p] = zero",
            f"        out{i} = plane{i}[Wp + 1:]",
        ]
    lines += [
        "        for c in range(C):",
        "            x = xp[n, c]",
        "            r0, r1, r2 = x[0:], x[Wp:], x[Wp + Wp:]",
    ]
    for i in k:
        lines.append(
            "            "
            + ", ".join(f"w{i}_{t}" for t in range(9))
            + " = "
            + ", ".join(f"w9[o + {i}, c, {t}]" for t in range(9))
        )
    lines += [
        "            for q in range(L):",
        "                x0, x1, x2 = r0[q], r0[q + 1], r0[q + 2]",
        "                x3, x4, x5 = r1[q], r1[q + 1], r1[q + 2]",
        "                x6, x7, x8 = r2[q], r2[q + 1], r2[q + 2]",
    ]
    for i in k:
        lines.append(
            f"                out{i}[q] += ((w{i}_0 * x0 + w{i}_1 * x1 + w{i}_2 * x2)"
            f" + (w{i}_3 * x3 + w{i}_4 * x4 + w{i}_5 * x5)"
            f" + (w{i}_6 * x6 + w{i}_7 * x7 + w{i}_8 * x8))"
        )
    return "\n".join(lines)


def make_stencil(block: int):
    """A compiled stencil kernel with ``block`` output planes per task (O must be a multiple of block)."""
    namespace = {"prange": prange, "np": np}
    exec(_stencil_source(block), namespace)
    return njit(parallel=True, **FLAGS)(namespace["stencil"])


def _sample_stencil_source(block: int) -> str:
    """Source of a serial kernel: one sample's C input planes -> its O output planes, ``block`` outputs at a
    time (the nine input loads shared), the remaining O mod block one at a time."""
    lines = [
        "def sample_stencil(xin, w9, yout, Wp, H):",
        "    C, P = xin.shape",
        "    O = yout.shape[0]",
        "    L = H * Wp - 2",
        "    zero = yout.dtype.type(0)",
        f"    whole = O - O % {block}",
        "    o = 0",
        "    while o < O:",
        "        if o < whole:",
    ]
    for branch, width in (("if", block), ("else", 1)):
        pad = "            "
        if branch == "else":
            lines.append("        else:")
        for i in range(width):
            lines += [
                f"{pad}plane{i} = yout[o + {i}]",
                f"{pad}for p in range(P):",
                f"{pad}    plane{i}[p] = zero",
                f"{pad}out{i} = plane{i}[Wp + 1:]",
            ]
        lines += [
            f"{pad}for c in range(C):",
            f"{pad}    x = xin[c]",
            f"{pad}    r0, r1, r2 = x[0:], x[Wp:], x[Wp + Wp:]",
        ]
        for i in range(width):
            lines.append(
                f"{pad}    "
                + ", ".join(f"w{i}_{t}" for t in range(9))
                + " = "
                + ", ".join(f"w9[o + {i}, c, {t}]" for t in range(9))
            )
        lines += [
            f"{pad}    for q in range(L):",
            f"{pad}        x0, x1, x2 = r0[q], r0[q + 1], r0[q + 2]",
            f"{pad}        x3, x4, x5 = r1[q], r1[q + 1], r1[q + 2]",
            f"{pad}        x6, x7, x8 = r2[q], r2[q + 1], r2[q + 2]",
        ]
        for i in range(width):
            lines.append(
                f"{pad}        out{i}[q] += ((w{i}_0 * x0 + w{i}_1 * x1 + w{i}_2 * x2)"
                f" + (w{i}_3 * x3 + w{i}_4 * x4 + w{i}_5 * x5)"
                f" + (w{i}_6 * x6 + w{i}_7 * x7 + w{i}_8 * x8))"
            )
        lines.append(f"{pad}o += {width}")
    return "\n".join(lines)


def make_sample_stencil(block: int):
    namespace = {"np": np}
    exec(_sample_stencil_source(block), namespace)
    return njit(**FLAGS)(namespace["sample_stencil"])


@njit(**FLAGS)
def sample_to_planes(x, planes):
    """One sample (H, W, C) -> its (C, Hp·Wp) zero-bordered planes."""
    H, W, C = x.shape
    Wp = W + 2
    zero = planes.dtype.type(0)
    for c in range(C):
        plane = planes[c]
        for p in range(Wp):
            plane[p] = zero
        for p in range((H + 1) * Wp, (H + 2) * Wp):
            plane[p] = zero
    for i in range(H):
        row = (i + 1) * Wp
        for c in range(C):
            planes[c, row] = zero
            planes[c, row + W + 1] = zero
        for j in range(W):
            source = x[i, j]
            for c in range(C):
                planes[c, row + j + 1] = source[c]


@njit(**FLAGS)
def sample_from_planes(planes, y):
    """One sample's (O, Hp·Wp) planes -> (H, W, O)."""
    H, W, O = y.shape
    Wp = W + 2
    for i in range(H):
        row = (i + 1) * Wp + 1
        for j in range(W):
            target = y[i, j]
            for o in range(O):
                target[o] = planes[o, row + j]


@njit(**FLAGS)
def sample_weight_grad(xin, dyin, partial, Wp, H):
    """One sample's ∂W: partial[o, c, t] = Σ_p dy_o[p] · x_c[p + offset_t], one input channel at a time."""
    C = xin.shape[0]
    O = dyin.shape[0]
    L = H * Wp - 2
    zero = partial.dtype.type(0)
    for c in range(C):
        x = xin[c]
        r0, r1, r2 = x[0:], x[Wp:], x[Wp + Wp :]
        for o in range(O):
            d = dyin[o][Wp + 1 :]
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
            partial[o, c, 0], partial[o, c, 1], partial[o, c, 2] = s0, s1, s2
            partial[o, c, 3], partial[o, c, 4], partial[o, c, 5] = s3, s4, s5
            partial[o, c, 6], partial[o, c, 7], partial[o, c, 8] = s6, s7, s8


def make_fused(block: int):
    """Forward and backward with one task per sample, its planes in buffers of the task (L2-sized), read
    from and written to NHWC directly: no N-sized plane arrays, no separate conversion passes."""
    stencil = make_sample_stencil(block)

    @njit(parallel=True, **FLAGS)
    def forward(x, w9, y):  # x (N, H, W, C), w9 (O, C, 9), y (N, H, W, O)
        N, H, W, C = x.shape
        O = y.shape[3]
        Wp = W + 2
        P = (H + 2) * Wp
        for n in prange(N):
            xin = np.empty((C, P), dtype=x.dtype)
            yout = np.empty((O, P), dtype=x.dtype)
            sample_to_planes(x[n], xin)
            stencil(xin, w9, yout, Wp, H)
            sample_from_planes(yout, y[n])

    @njit(parallel=True, **FLAGS)
    def backward(x, dy, w9_flip, dx, partial):  # dx (N, H, W, C), partial (N, O, C, 9)
        N, H, W, C = x.shape
        O = dy.shape[3]
        Wp = W + 2
        P = (H + 2) * Wp
        for n in prange(N):
            xin = np.empty((C, P), dtype=x.dtype)
            dyin = np.empty((O, P), dtype=x.dtype)
            dxout = np.empty((C, P), dtype=x.dtype)
            sample_to_planes(x[n], xin)
            sample_to_planes(dy[n], dyin)
            stencil(dyin, w9_flip, dxout, Wp, H)
            sample_from_planes(dxout, dx[n])
            sample_weight_grad(xin, dyin, partial[n], Wp, H)

    @njit(parallel=True, **FLAGS)
    def weight_grad(x, dy, partial):
        N, H, W, C = x.shape
        O = dy.shape[3]
        Wp = W + 2
        P = (H + 2) * Wp
        for n in prange(N):
            xin = np.empty((C, P), dtype=x.dtype)
            dyin = np.empty((O, P), dtype=x.dtype)
            sample_to_planes(x[n], xin)
            sample_to_planes(dy[n], dyin)
            sample_weight_grad(xin, dyin, partial[n], Wp, H)

    @njit(parallel=True, **FLAGS)
    def input_grad(dy, w9_flip, dx):
        N, H, W, O = dy.shape
        C = dx.shape[3]
        Wp = W + 2
        P = (H + 2) * Wp
        for n in prange(N):
            dyin = np.empty((O, P), dtype=dy.dtype)
            dxout = np.empty((C, P), dtype=dy.dtype)
            sample_to_planes(dy[n], dyin)
            stencil(dyin, w9_flip, dxout, Wp, H)
            sample_from_planes(dxout, dx[n])

    return forward, backward, input_grad, weight_grad


def _weight_grad_source(block: int) -> str:
    """Source of ∂W per (sample, block of input channels): nine dot products per (o, c) over the planes."""
    k = range(block)
    lines = [
        "def weight_grad(xp, dyp, partial, Wp, H):",
        "    N, C, P = xp.shape",
        "    O = dyp.shape[1]",
        f"    tasks = C // {block}",
        "    L = H * Wp - 2",
        "    for task in prange(N * tasks):",
        "        n = task // tasks",
        f"        c = {block} * (task - n * tasks)",
    ]
    for i in k:
        lines += [f"        x{i} = xp[n, c + {i}]", f"        a{i}, b{i}, e{i} = x{i}[0:], x{i}[Wp:], x{i}[Wp + Wp:]"]
    lines += ["        for o in range(O):", "            d = dyp[n, o][Wp + 1:]"]
    for i in k:
        lines.append(
            "            "
            + ", ".join(f"s{i}_{t}" for t in range(9))
            + " = "
            + ", ".join("partial.dtype.type(0)" for _ in range(9))
        )
    lines.append("            for q in range(L):")
    lines.append("                g = d[q]")
    for i in k:
        rows = (f"a{i}", f"b{i}", f"e{i}")
        for t in range(9):
            lines.append(f"                s{i}_{t} += g * {rows[t // 3]}[q + {t % 3}]")
    for i in k:
        for t in range(9):
            lines.append(f"            partial[n, o, c + {i}, {t}] = s{i}_{t}")
    return "\n".join(lines)


def make_weight_grad(block: int):
    namespace = {"prange": prange, "np": np}
    exec(_weight_grad_source(block), namespace)
    return njit(parallel=True, **FLAGS)(namespace["weight_grad"])


@njit(parallel=True, **FLAGS)
def weight_grad_by_output(xp, dyp, partial, Wp, H):
    """∂W with one task per (sample, output channel): dy's plane read once, nine sums per input channel."""
    N, C, P = xp.shape
    O = dyp.shape[1]
    L = H * Wp - 2
    zero = partial.dtype.type(0)
    for task in prange(N * O):
        n = task // O
        o = task - n * O
        d = dyp[n, o][Wp + 1 :]
        for c in range(C):
            x = xp[n, c]
            r0, r1, r2 = x[0:], x[Wp:], x[Wp + Wp :]
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
            partial[n, o, c, 0], partial[n, o, c, 1], partial[n, o, c, 2] = s0, s1, s2
            partial[n, o, c, 3], partial[n, o, c, 4], partial[n, o, c, 5] = s3, s4, s5
            partial[n, o, c, 6], partial[n, o, c, 7], partial[n, o, c, 8] = s6, s7, s8


def sum_samples(partial):
    """(N, O, C, 9) per-sample partials -> (O, C, 3, 3), added in sample order in float64."""
    N, O, C, _ = partial.shape
    total = np.zeros((O, C, 9))
    for n in range(N):
        total += partial[n]
    return total.astype(partial.dtype).reshape(O, C, 3, 3)


def weights_forward(w):
    """(O, C, 3, 3) -> (O, C, 9)."""
    O, C = w.shape[:2]
    return np.ascontiguousarray(w.reshape(O, C, 9))


def weights_input_grad(w):
    """(O, C, 3, 3) -> (C, O, 9) with tap t holding W[o, c, 8 − t]: the flipped, transposed kernel."""
    O, C = w.shape[:2]
    return np.ascontiguousarray(w.reshape(O, C, 9)[:, :, ::-1].transpose(1, 0, 2))


# ------------------------------------------------------------------ NHWC, channels innermost (not vectorised)
@njit(parallel=True, **FLAGS)
def nhwc_tile8(xp, wt, y):
    """xp (N, Hp, Wp, C) padded, wt (3, 3, C, 16), y (N, H, W, 16): a tile of 8 pixels × 16 channels."""
    N, H, W, O = y.shape
    C = xp.shape[3]
    for task in prange(N * H):
        n = task // H
        i = task - n * H
        for j0 in range(0, W, 8):
            acc = np.zeros((8, 16), dtype=y.dtype)
            for a in range(3):
                row = xp[n, i + a]
                for b in range(3):
                    pixels = row[j0 + b :]
                    wab = wt[a, b]
                    for c in range(C):
                        wc = wab[c]
                        for t in range(8):
                            value = pixels[t, c]
                            for o in range(16):
                                acc[t, o] += value * wc[o]
            for t in range(8):
                for o in range(16):
                    y[n, i, j0 + t, o] = acc[t, o]


@njit(**FLAGS)
def _row_runtime_channels(out, pixels, wab, W):  # out (W, O) += pixels[j, :] @ wab (C, O), O a runtime count
    C, O = wab.shape
    for j in range(W):
        target = out[j]
        source = pixels[j]
        for c in range(C):
            value = source[c]
            wc = wab[c]
            for o in range(O):
                target[o] += value * wc[o]


@njit(parallel=True, **FLAGS)
def nhwc_runtime_channels(xp, wt, y):
    """The same product with the channel loop's trip count unknown at compile time."""
    N, H, W, O = y.shape
    for task in prange(N * H):
        n = task // H
        i = task - n * H
        out = y[n, i]
        out[:] = 0
        for a in range(3):
            for b in range(3):
                _row_runtime_channels(out, xp[n, i + a][b:], wt[a, b], W)
