"""CuPy's faster versions of the primitives in backends/ops.py: kernels where plain array
expressions waste the GPU's bandwidth.

Each function computes exactly its primitive's formula; only the number of passes over memory
changes.  Imported only when CuPy arrays first reach a primitive.  BatchNorm's channel sums run as
products with vectors of ones, on cuBLAS, where CuPy's ``einsum`` and axis sums are slower (figures in
benchmarks/RESULTS.md).  im2col is one kernel per convolution shape.  ∂L/∂W is NumPy's path's function
(backends/numpy_fast.py), so both backends multiply the same matrices.  The other primitives
(BatchNorm's output and gradient passes, ReLU) run their plain formulas on CuPy, whose element-wise
expressions are GPU kernels already; the kernels are compiled by CuPy on first use and cached on disk.
"""

from __future__ import annotations

import functools

import cupy

from backends import numpy_fast, ops


def channel_sums(a, b=None):
    """(A, S, P, C) -> (S, C): Σ over A, then over P, each as a product with a vector of ones (cuBLAS)."""
    terms = a if b is None else a * b
    A, S, P, C = terms.shape
    over_samples = cupy.ones(A, dtype=a.dtype) @ terms.reshape(A, S * P * C)  # (S·P·C,)
    return cupy.matmul(cupy.ones(P, dtype=a.dtype), over_samples.reshape(S, P, C))  # (S, C)


@functools.cache
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
    if N * Ho * Wo * K >= 2**31:  # too large for the kernel's 32-bit indices
        return ops.im2col.plain(x, kh, kw, stride, padding)
    cols = cupy.empty((N * Ho * Wo, K), dtype=x.dtype)
    _im2col_kernel(H, W, C, Ho, Wo, kw, K, stride, padding)(cupy.ascontiguousarray(x), cols)
    return cols


FAST = {f.__name__: f for f in (channel_sums, im2col, numpy_fast.conv_weight_grad)}
