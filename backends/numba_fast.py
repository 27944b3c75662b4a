"""NumPy's fast path on every core: the primitives of backends/ops.py as Numba-compiled loops.

Numba is one of moco-ref's dependencies; where it cannot be imported, or with the
environment variable MOCO_REF_NUMBA=0, NumPy arrays run backends/numpy_fast.py instead (backends/ops.py's
table says which function runs for each primitive).  Each
function computes exactly its primitive's formula (tests/test_fast_paths.py), in one pass over
memory where NumPy needs several, with the batch split over the threads (``prange`` over samples).

Why it is faster.  NumPy runs each element-wise step of a formula as its own pass over the whole
array, on one core, with inner loops as short as the channel count: a BatchNorm forward is about
seven passes over the activation, im2col a strided copy with 16-element inner loops.  Here a
BatchNorm forward reads its input twice (the moments, then the output with the residual add and the
ReLU folded in) and writes once; im2col writes each patch row once; every loop runs on all cores.
The thin convolutions skip im2col altogether: direct kernels (backends/numba_direct_conv.py for 3×3 at stride 1,
backends/numba_direct_conv_stride2.py for 3×3 at stride 2 and the 1×1 downsample) compute them from the image
itself, chosen by the layer's shape (``direct_conv_wanted``).

Determinism.  Every reduction is split into fixed pieces (one per sample) that do not depend on the
thread count, and the pieces are summed in a fixed order: the same inputs give the same bits with
any number of threads.  Sums run in float64.

Threads.  As many as NumPy's BLAS runs (``backends.cpu.blas_threads``), so ``mpiexec -n W`` gives
each process its share; :func:`set_threads` sets them when the NumPy backend is created
(``backends.get_backend``).  They are GNU OpenMP's (Numba's "omp" layer) where Numba can load libgomp, else
Numba's own "workqueue", unless NUMBA_THREADING_LAYER says otherwise (:func:`threading_layer`).  A training step
launches about 150 kernels; workqueue's threads sleep between them and take about 120 µs to wake for each
(measured on the 2-core VM of benchmarks/RESULTS.md, against 2 µs for OpenMP's), about 15 % of the reference
step.  OpenMP's idle threads spin a moment (GOMP_SPINCOUNT, set by ``import moco_ref``:
moco_ref/run/runtime.py, ``brief_openmp_waits``) and then sleep, so they do not keep the cores from the BLAS.
Both layers give the same bits: every reduction is split by sample, not by thread.
The kernels are compiled on first use and cached on disk (``cache=True``).
"""

from __future__ import annotations

import os

import numba
import numpy as np
from numba import njit, prange

from backends import BackendUnavailable, numba_direct_conv, numba_direct_conv_stride2, ops
from backends.cpu import blas_threads


def threading_layer() -> str:
    """Numba's threading layer for the kernels: "omp" where Numba's OpenMP pool loads (GNU libgomp, which
    Linux distributions and PyTorch's wheels ship), else "workqueue", Numba's own (always there)."""
    try:
        import numba.np.ufunc.omppool  # noqa: F401  (loads libgomp)
    except (ImportError, OSError):
        return "workqueue"
    return "omp"


if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = threading_layer()


def set_threads(count: int | None = None) -> int:
    """Runs the kernels on ``count`` threads (default: as many as the BLAS); returns the count set.
    BackendUnavailable when Numba's threading layer cannot start (NUMBA_THREADING_LAYER names an unknown
    layer, or one whose library is not installed)."""
    count = blas_threads() if count is None else count
    count = max(1, min(int(count), numba.config.NUMBA_NUM_THREADS))
    try:
        numba.set_num_threads(count)  # the first call starts the threading layer
    except ValueError as error:
        reason = " ".join(str(error).split("HINT:")[0].split())
        raise BackendUnavailable(
            f"Numba's threading layer {numba.config.THREADING_LAYER!r} (NUMBA_THREADING_LAYER) "
            f"cannot start: {reason} Unset NUMBA_THREADING_LAYER, or set it to workqueue, "
            f"or run without Numba (MOCO_REF_NUMBA=0)"
        ) from None
    return count


# ------------------------------------------------------------------ kernels (x as (N, P, C); group of sample n = n % S)
# The per-sample sums below add four pixels' rows at a time: a channel's running sum then waits on
# memory once per four rows instead of once per row.
@njit(parallel=True, cache=True)
def _sample_sums(a, b, has_b):  # per-sample Σ_p a (or Σ_p a·b): (N, C) float64
    N, P, C = a.shape
    out = np.empty((N, C))
    for n in prange(N):
        s = np.zeros(C)
        p = 0
        while p + 4 <= P:
            for c in range(C):
                if has_b:
                    s[c] += (np.float64(a[n, p, c]) * b[n, p, c] + np.float64(a[n, p + 1, c]) * b[n, p + 1, c]) + (
                        np.float64(a[n, p + 2, c]) * b[n, p + 2, c] + np.float64(a[n, p + 3, c]) * b[n, p + 3, c]
                    )
                else:
                    s[c] += (np.float64(a[n, p, c]) + a[n, p + 1, c]) + (np.float64(a[n, p + 2, c]) + a[n, p + 3, c])
            p += 4
        for q in range(p, P):
            for c in range(C):
                s[c] += np.float64(a[n, q, c]) * b[n, q, c] if has_b else a[n, q, c]
        out[n] = s
    return out


@njit(parallel=True, cache=True)
def _sample_moments(x):  # per-sample mean and Σ (x − mean)²: (N, C) float64 each
    N, P, C = x.shape
    means, squares = np.empty((N, C)), np.empty((N, C))
    for n in prange(N):
        s = np.zeros(C)
        p = 0
        while p + 4 <= P:
            for c in range(C):
                s[c] += (np.float64(x[n, p, c]) + x[n, p + 1, c]) + (np.float64(x[n, p + 2, c]) + x[n, p + 3, c])
            p += 4
        for r in range(p, P):
            for c in range(C):
                s[c] += x[n, r, c]
        s /= P
        q = np.zeros(C)
        p = 0
        while p + 4 <= P:
            for c in range(C):
                d0, d1 = x[n, p, c] - s[c], x[n, p + 1, c] - s[c]
                d2, d3 = x[n, p + 2, c] - s[c], x[n, p + 3, c] - s[c]
                q[c] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
            p += 4
        for r in range(p, P):
            for c in range(C):
                d = x[n, r, c] - s[c]
                q[c] += d * d
        means[n] = s
        squares[n] = q
    return means, squares


@njit(parallel=True, cache=True)
def _scale_shift(x, mean, scale, beta, residual, has_residual, relu, y, mask):
    """y = relu?((x − μ)·scale + β (+ r)), and the ReLU's mask 1[y > 0] when relu."""
    N, P, C = x.shape
    S = mean.shape[0]
    zero = y.dtype.type(0)
    for n in prange(N):
        g = n % S
        for p in range(P):
            for c in range(C):
                v = (x[n, p, c] - mean[g, c]) * scale[g, c] + beta[c]
                if has_residual:
                    v += residual[n, p, c]
                if relu:
                    positive = v > zero
                    mask[n, p, c] = positive
                    if not positive:
                        v = zero
                y[n, p, c] = v


@njit(parallel=True, cache=True)
def _grad_sums(g, x, mean, inv_std):  # per-sample Σ g and Σ g·x̂: (N, C) float64 each
    N, P, C = g.shape
    S = mean.shape[0]
    sums, x_hat_sums = np.empty((N, C)), np.empty((N, C))
    for n in prange(N):
        k = n % S
        s, t = np.zeros(C), np.zeros(C)
        p = 0
        while p + 4 <= P:
            for c in range(C):
                g0, g1, g2, g3 = np.float64(g[n, p, c]), np.float64(g[n, p + 1, c]), g[n, p + 2, c], g[n, p + 3, c]
                s[c] += (g0 + g1) + (g2 + g3)
                t[c] += (g0 * (x[n, p, c] - mean[k, c]) + g1 * (x[n, p + 1, c] - mean[k, c])) + (
                    g2 * (x[n, p + 2, c] - mean[k, c]) + g3 * (x[n, p + 3, c] - mean[k, c])
                )
            p += 4
        for r in range(p, P):
            for c in range(C):
                v = np.float64(g[n, r, c])
                s[c] += v
                t[c] += v * (x[n, r, c] - mean[k, c])
        sums[n] = s
        x_hat_sums[n] = t * inv_std[k]
    return sums, x_hat_sums


@njit(parallel=True, cache=True)
def _input_grad(g, x, g_mean, mean, scale, slope, out):  # out = scale·(g − g_mean) − slope·(x − μ)
    N, P, C = g.shape
    S = mean.shape[0]
    for n in prange(N):
        s = n % S
        for p in range(P):
            for c in range(C):
                out[n, p, c] = scale[s, c] * (g[n, p, c] - g_mean[s, c]) - slope[s, c] * (x[n, p, c] - mean[s, c])


@njit(parallel=True, cache=True)
def _relu_backward(dy, y, out):  # flat arrays: out = dy·1[y > 0] (y the output or the mask)
    zero = out.dtype.type(0)
    for i in prange(dy.size):
        out[i] = dy[i] if y[i] > 0 else zero


@njit(parallel=True, cache=True)
def _im2col(x, kh, kw, stride, padding, Ho, Wo, cols):
    N, H, W, C = x.shape
    zero = cols.dtype.type(0)
    for n in prange(N):
        for i in range(Ho):
            for j in range(Wo):
                r = (n * Ho + i) * Wo + j
                for a in range(kh):
                    yy = i * stride + a - padding
                    for b in range(kw):
                        xx = j * stride + b - padding
                        q = (a * kw + b) * C
                        if 0 <= yy < H and 0 <= xx < W:
                            for c in range(C):
                                cols[r, q + c] = x[n, yy, xx, c]
                        else:
                            for c in range(C):
                                cols[r, q + c] = zero


@njit(parallel=True, cache=True)
def _col2im(dcols, kh, kw, stride, padding, dx):  # dcols (N·Ho·Wo, kh·kw·C), dx (N, H, W, C)
    """Each sample's patch rows read in order and added to the pixels they came from (the sample's image
    stays in cache; no two threads write the same sample)."""
    N, H, W, C = dx.shape
    Ho = (H + 2 * padding - kh) // stride + 1
    Wo = (W + 2 * padding - kw) // stride + 1
    zero = dx.dtype.type(0)
    for n in prange(N):
        for yy in range(H):
            for xx in range(W):
                for c in range(C):
                    dx[n, yy, xx, c] = zero
        for i in range(Ho):
            for j in range(Wo):
                r = (n * Ho + i) * Wo + j
                for a in range(kh):
                    yy = i * stride + a - padding
                    if yy < 0 or yy >= H:
                        continue
                    for b in range(kw):
                        xx = j * stride + b - padding
                        if xx < 0 or xx >= W:
                            continue
                        q = (a * kw + b) * C
                        for c in range(C):
                            dx[n, yy, xx, c] += dcols[r, q + c]


@njit(parallel=True, cache=True)
def _sgd(p, g, b, lr, momentum, weight_decay, nesterov):  # flat arrays; scalars already of p's dtype
    for i in prange(p.size):
        d = g[i] + weight_decay * p[i] if weight_decay != 0 else g[i]
        if momentum != 0:
            b[i] = b[i] * momentum + d
            d = d + momentum * b[i] if nesterov else b[i]
        p[i] = p[i] - lr * d


@njit(parallel=True, cache=True)
def _ema(theta_k, theta_q, m, one_minus_m):  # flat arrays; scalars already of theta_k's dtype
    for i in prange(theta_k.size):
        theta_k[i] = theta_k[i] * m + theta_q[i] * one_minus_m


# ------------------------------------------------------------------ the primitives
def _samples(a):
    """(A, S, P, C) -> the same memory as (A·S, P, C), C-contiguous."""
    A, S, P, C = a.shape
    return np.ascontiguousarray(a).reshape(A * S, P, C)


def _group_table(v, S, dtype):
    """A (S, C) or (C,) vector as a C-contiguous (S, C) table."""
    return np.ascontiguousarray(np.broadcast_to(np.asarray(v).reshape(-1, v.shape[-1]), (S, v.shape[-1])), dtype=dtype)


def _per_group(per_sample, A, S):
    """(A·S, C) per-sample sums -> (S, C) per-group sums, added in sample order."""
    return per_sample.reshape(A, S, -1).sum(axis=0)


def channel_sums(a, b=None):
    A, S, _, _ = a.shape
    x = _samples(a)
    sums = _sample_sums(x, x if b is None else _samples(b), b is not None)
    return _per_group(sums, A, S).astype(a.dtype)


def channel_moments(x):
    """Per sample: the mean and Σ (x − mean)² (two reads of one sample's P·C values, in cache); per
    group, Chan's combination: σ² = (Σ_a M2_a + P·Σ_a (mean_a − μ)²) / (A·P)."""
    A, S, P, _ = x.shape
    means, squares = _sample_moments(_samples(x))
    means, squares = means.reshape(A, S, -1), squares.reshape(A, S, -1)
    mean = means.mean(axis=0)
    var = (squares.sum(axis=0) + P * ((means - mean) ** 2).sum(axis=0)) / (A * P)
    return mean.astype(x.dtype), var.astype(x.dtype)


def batchnorm_output(x, mean, inv_std, gamma, beta, residual=None, relu=False):
    """y = (x − μ)·(γ/σ) + β (+ r), the ReLU folded in: one pass."""
    A, S, P, C = x.shape
    samples = _samples(x)
    y = np.empty_like(samples)
    mask = np.empty(samples.shape if relu else (1, 1, 1), dtype=np.bool_)
    _scale_shift(
        samples,
        _group_table(mean, S, x.dtype),
        _group_table(inv_std * gamma, S, x.dtype),
        np.ascontiguousarray(beta, dtype=x.dtype),
        samples if residual is None else _samples(residual),
        residual is not None,
        bool(relu),
        y,
        mask,
    )
    return y.reshape(x.shape), (mask.reshape(x.shape) if relu else None)


def batchnorm_grad_sums(g, x, mean, inv_std):
    A, S, _, C = g.shape
    sums, x_hat_sums = _grad_sums(
        _samples(g), _samples(x), _group_table(mean, S, np.float64), _group_table(inv_std, S, np.float64)
    )
    return _per_group(sums, A, S).astype(g.dtype), _per_group(x_hat_sums, A, S).astype(g.dtype)


def batchnorm_input_grad(g, x, mean, inv_std, g_mean, gx_mean, scale):
    """scale·(g − g_mean − x̂·gx_mean) = scale·(g − g_mean) − (scale·inv_std·gx_mean)·(x − μ): one pass."""
    A, S, P, C = g.shape
    slope = (
        _group_table(scale, S, np.float64) * _group_table(inv_std, S, np.float64) * _group_table(gx_mean, S, np.float64)
    )
    out = np.empty((A * S, P, C), dtype=g.dtype)
    _input_grad(
        _samples(g),
        _samples(x),
        _group_table(g_mean, S, g.dtype),
        _group_table(mean, S, g.dtype),
        _group_table(scale, S, g.dtype),
        slope.astype(g.dtype),
        out,
    )
    return out.reshape(g.shape)


def relu_backward(dy, y):
    dy, y = np.ascontiguousarray(dy), np.ascontiguousarray(y)
    out = np.empty_like(dy)
    _relu_backward(dy.reshape(-1), y.reshape(-1), out.reshape(-1))
    return out


def im2col(x, kh, kw, stride, padding):
    N, H, W, C = x.shape
    Ho, Wo = ops.conv_output_size(H, kh, stride, padding), ops.conv_output_size(W, kw, stride, padding)
    cols = np.empty((N * Ho * Wo, kh * kw * C), dtype=x.dtype)
    _im2col(np.ascontiguousarray(x), kh, kw, stride, padding, Ho, Wo, cols)
    return cols


def col2im(dcols, x_shape, kh, kw, stride, padding):
    dx = np.empty(x_shape, dtype=dcols.dtype)
    _col2im(np.ascontiguousarray(dcols), kh, kw, stride, padding, dx)
    return dx


# The direct kernels, by (kernel, stride, padding): 3×3 at stride 1 (backends/numba_direct_conv.py), 3×3 at stride 2
# and the 1×1 downsample (backends/numba_direct_conv_stride2.py), each a (forward, backward) pair.
DIRECT_KERNELS = {
    (3, 1, 1): (numba_direct_conv.conv3x3_forward, numba_direct_conv.conv3x3_backward),
    (3, 2, 1): (numba_direct_conv_stride2.conv3x3_stride2_forward, numba_direct_conv_stride2.conv3x3_stride2_backward),
    (1, 2, 0): (numba_direct_conv_stride2.conv1x1_stride2_forward, numba_direct_conv_stride2.conv1x1_stride2_backward),
}
# Where each runs, by (kernel, stride, padding): (the most C·O, C input and O output channels; the narrowest input
# image).  A kernel without an entry runs on no layer, and every other convolution runs im2col + GEMM.  Read off
# every layer of the project's networks (benchmarks/direct_conv/shapes.py; figures in benchmarks/RESULTS.md,
# "Direct convolutions behind the seam"): on narrow images the kernels' vector loops are short, and with more
# channels GEMM runs closer to the machine's peak.  The stride-2 kernels were not faster than im2col + GEMM on the
# layers measured, so they have no entry: registered and tested, for a machine whose table says otherwise.
DIRECT_RULE = {(3, 1, 1): (32 * 32, 16)}


def direct_conv_wanted(x_shape, w_shape, stride, padding) -> bool:
    """True where :func:`conv2d_forward` runs a direct kernel (``DIRECT_KERNELS``): a kernel, stride and padding
    it has, C·O at most and the image at least as wide as ``DIRECT_RULE`` says for them.

    A fixed rule on the shape alone, never a timing taken in the process: a choice by timing would make the
    float32 results (which round differently on the two paths) depend on timing noise, so that the same seed
    would not give the same bits.  With the rule, every process, with any number of threads, runs the same
    kernel on the same layer, and a run resumed from a checkpoint gives the same bits.
    """
    O, C, kh, kw = w_shape
    rule = DIRECT_RULE.get((kh, stride, padding)) if kh == kw else None
    return rule is not None and C * O <= rule[0] and x_shape[2] >= rule[1]


def conv2d_forward(x, w, stride, padding):
    """A direct kernel where :func:`direct_conv_wanted`, im2col + GEMM elsewhere.  The direct path's cache
    keeps x and a copy of w in the places of X and Wm (no im2col matrix is made).  Mixed dtypes are computed
    in the one NumPy's products would give (float32 images with float64 weights: float64)."""
    if not direct_conv_wanted(x.shape, w.shape, stride, padding):
        return ops.conv2d_forward.plain(x, w, stride, padding)
    forward, _ = DIRECT_KERNELS[w.shape[2], stride, padding]
    y = forward(x.astype(np.result_type(x, w), copy=False), w)
    return y, (x, w.copy(), x.shape, w.shape, stride, padding)


def keeps_im2col(x_shape, w_shape, stride, padding) -> bool:
    """What :func:`conv2d_forward` keeps, for memory estimates (backends.ops.conv2d_keeps_im2col)."""
    return not direct_conv_wanted(x_shape, w_shape, stride, padding)


conv2d_forward.keeps_im2col = keeps_im2col  # type: ignore[attr-defined]  # a function attribute ops reads


def conv2d_backward(dy, cache, need_dx=True):
    """∂L/∂x and ∂L/∂W by the direct kernel where the forward took it, in the dtypes of the plain formula's
    products (∂L/∂x: dy's and w's; ∂L/∂W: x's and dy's)."""
    x, w, x_shape, w_shape, stride, padding = cache
    if not direct_conv_wanted(x_shape, w_shape, stride, padding):
        return ops.conv2d_backward.plain(dy, cache, need_dx)
    _, backward = DIRECT_KERNELS[w_shape[2], stride, padding]
    dtype = np.result_type(dy, x, w)
    dx, dw = backward(dy.astype(dtype, copy=False), x.astype(dtype, copy=False), w, need_dx)
    dw = dw.astype(np.result_type(x, dy), copy=False)
    return (None if dx is None else dx.astype(np.result_type(dy, w), copy=False)), dw


# Below this many values a parameter is updated by NumPy's expressions: a threaded pass costs more to start.
SMALL = 1 << 15


def sgd_update_(p, g, b, lr, momentum, weight_decay, nesterov):
    """The same float operations, in the same order and precision, as NumPy's evaluation of the formula
    (scalars rounded to the array's dtype, no fused multiply-add): bit for bit the same result."""
    if p.size < SMALL or not (p.flags.c_contiguous and g.flags.c_contiguous and b.flags.c_contiguous):
        return ops.sgd_update_.plain(p, g, b, lr, momentum, weight_decay, nesterov)
    scalar = p.dtype.type
    _sgd(
        p.reshape(-1), g.reshape(-1), b.reshape(-1), scalar(lr), scalar(momentum), scalar(weight_decay), bool(nesterov)
    )


def ema_update_(theta_k, theta_q, m):
    if theta_k.size < SMALL or not (theta_k.flags.c_contiguous and theta_q.flags.c_contiguous):
        return ops.ema_update_.plain(theta_k, theta_q, m)
    scalar = theta_k.dtype.type
    _ema(theta_k.reshape(-1), theta_q.reshape(-1), scalar(m), scalar(1.0 - m))


FAST = {
    f.__name__: f
    for f in (
        channel_sums,
        channel_moments,
        batchnorm_output,
        batchnorm_grad_sums,
        batchnorm_input_grad,
        relu_backward,
        im2col,
        col2im,
        conv2d_forward,
        conv2d_backward,
        sgd_update_,
        ema_update_,
    )
}
