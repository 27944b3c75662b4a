"""Fused CuPy kernels for the few places where plain array expressions waste the GPU's bandwidth.

Each kernel computes exactly what the NumPy expression beside its caller computes; only the number of
passes over memory changes.  NumPy never imports this module.  Measured on an H200 (resnet18 width 64,
batch 512; benchmarks/RESULTS.md, "The GPU"): CuPy's ``einsum`` of BatchNorm's channel sums took 72 % of
the step; with these kernels BatchNorm went from 51 to 32 ms a step and im2col from 37.3 to 31.5 ms.
The kernels are compiled by CuPy on first use and cached on disk.
"""

from __future__ import annotations

import functools

import cupy

# BatchNorm forward, 2nd pass: (x − μ)², summed afterwards (two-pass variance, as the NumPy code).
centred_square = cupy.ElementwiseKernel(
    "T x, T mean", "T out", "T d = x - mean; out = d * d", "moco_bn_centred_square")

# BatchNorm forward, 3rd pass: x̂ = (x − μ)/σ (kept for the backward) and y = γ·x̂ + β, in one pass.
normalize_affine = cupy.ElementwiseKernel(
    "T x, T mean, T inv_std, T gamma, T beta", "T x_hat, T y",
    "x_hat = (x - mean) * inv_std; y = x_hat * gamma + beta", "moco_bn_normalize_affine")

# BatchNorm backward: ∂L/∂x = γ/σ · (g − mean(g) − x̂·mean(g·x̂)) in one pass.
bn_input_grad = cupy.ElementwiseKernel(
    "T g, T x_hat, T g_mean, T gx_mean, T scale", "T dx",
    "dx = (g - g_mean - x_hat * gx_mean) * scale", "moco_bn_input_grad")


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


def im2col(x, kh: int, kw: int, stride: int, padding: int, Ho: int, Wo: int):
    """(N, H, W, C) -> (N·Ho·Wo, kh·kw·C), the same matrix as ``moco_ref.layers.conv.im2col``;
    None when the matrix is too large for 32-bit indices (the caller then uses the strided copy)."""
    N, H, W, C = x.shape
    K = kh * kw * C
    if N * Ho * Wo * K >= 2**31:
        return None
    cols = cupy.empty((N * Ho * Wo, K), dtype=x.dtype)
    _im2col_kernel(H, W, C, Ho, Wo, kw, K, stride, padding)(cupy.ascontiguousarray(x), cols)
    return cols
