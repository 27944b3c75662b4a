"""CuPy's faster versions of the primitives in backends/ops.py: fused kernels where plain array
expressions waste the GPU's bandwidth.

Each function computes exactly its primitive's formula; only the number of passes over memory
changes.  Imported only when CuPy arrays first reach a primitive.  Measured on an H200 (resnet18
width 64, batch 512; benchmarks/RESULTS.md, "The GPU"): CuPy's ``einsum`` of BatchNorm's channel
sums took 72 % of the step (12.2 ms for one sum over 512×32×32×64, 0.10 ms as products with a
vector of ones); with the fused kernels BatchNorm went from 51 to 32 ms a step and im2col from
37.3 to 31.5 ms.  (Those kernels fused x − μ into the normalisation pass; since the layers were rewritten
on these primitives, x − μ is written once and reused, one more pass over memory on the GPU, not yet
measured there.)  The kernels are compiled by CuPy on first use and cached on disk.
"""

from __future__ import annotations

import functools

import cupy

from backends import ops

# x − μ and (x − μ)² in one pass; the squares are summed afterwards (the two-pass variance).
_centre = cupy.ElementwiseKernel(
    "T x, T mean", "T d, T d2", "d = x - mean; d2 = d * d", "moco_bn_centre")

# x̂ = (x − μ)/σ (kept for the backward) and y = γ·x̂ + β in one pass.
_scale_shift = cupy.ElementwiseKernel(
    "T d, T inv_std, T gamma, T beta", "T x_hat, T y",
    "x_hat = d * inv_std; y = x_hat * gamma + beta", "moco_bn_scale_shift")

# ∂L/∂x = γ/σ · (g − mean(g) − x̂·mean(g·x̂)) in one pass.
_bn_input_grad = cupy.ElementwiseKernel(
    "T g, T x_hat, T g_mean, T gx_mean, T scale", "T dx",
    "dx = (g - g_mean - x_hat * gx_mean) * scale", "moco_bn_input_grad")


def _sums_by_matvec(a):
    """(A, S, P, C) -> (S, C): Σ over A, then over P, each as a product with a vector of ones (cuBLAS)."""
    A, S, P, C = a.shape
    over_samples = cupy.ones(A, dtype=a.dtype) @ a.reshape(A, S * P * C)              # (S·P·C,)
    return cupy.matmul(cupy.ones(P, dtype=a.dtype), over_samples.reshape(S, P, C))    # (S, C)


def channel_sums(a, b=None):
    return _sums_by_matvec(a if b is None else a * b)


def centre(x, mean):
    d, d2 = _centre(x, ops.per_group(mean))
    return d, _sums_by_matvec(d2)


def scale_shift_(centred, inv_std, gamma, beta):
    return _scale_shift(centred, ops.per_group(inv_std), gamma, beta)


def batchnorm_input_grad(g, x_hat, g_mean, gx_mean, scale):
    return _bn_input_grad(g, x_hat, ops.per_group(g_mean), ops.per_group(gx_mean), ops.per_group(scale))


@functools.lru_cache(maxsize=None)
def _im2col_kernel(H: int, W: int, C: int, Ho: int, Wo: int, kw: int, K: int, stride: int, padding: int):
    """One kernel per convolution shape: with the sizes written into the source as constants the
    compiler can turn every division below into a multiply and shift.  Output element i is col[r, q]
    with r = (n, oi, oj) the output pixel and q = (a, b, c) the kernel offset and channel; outside the
    image it is the zero padding."""
    body = f"""
    const int j = (int)i;   // 32-bit arithmetic: the caller checks that the matrix has < 2**31 elements
    const int q = j % {K}, r = j / {K};
    const int c = q % {C}, ab = q / {C};
    const int a = ab / {kw}, b = ab % {kw};
    const int oj = r % {Wo}, t = r / {Wo};
    const int oi = t % {Ho}, n = t / {Ho};
    const int y = oi * {stride} + a - {padding}, x = oj * {stride} + b - {padding};
    col = (y >= 0 && y < {H} && x >= 0 && x < {W}) ? src[((n * {H} + y) * {W} + x) * {C} + c] : (T)0;
    """
    return cupy.ElementwiseKernel("raw T src", "T col", body, "moco_im2col")


def im2col(x, kh: int, kw: int, stride: int, padding: int):
    N, H, W, C = x.shape
    Ho, Wo = (H + 2 * padding - kh) // stride + 1, (W + 2 * padding - kw) // stride + 1
    K = kh * kw * C
    if N * Ho * Wo * K >= 2**31:           # too large for the kernel's 32-bit indices
        return ops.im2col.plain(x, kh, kw, stride, padding)
    cols = cupy.empty((N * Ho * Wo, K), dtype=x.dtype)
    _im2col_kernel(H, W, C, Ho, Wo, kw, K, stride, padding)(cupy.ascontiguousarray(x), cols)
    return cols


# ReLU stays the plain maximum(x, 0): one CuPy kernel already.
FAST = {f.__name__: f for f in (channel_sums, centre, scale_shift_, batchnorm_input_grad, im2col)}
