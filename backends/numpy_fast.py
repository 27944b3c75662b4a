"""NumPy's faster versions of the primitives in backends/ops.py (each computes exactly its formula).

This is NumPy's path when Numba is not installed (backends/numba_fast.py replaces most of it where it
is; backends/ops.py's table says which function runs); it runs on one core.  Three habits of NumPy make
the plain expressions slow on channels-last activations, and the products of ∂L/∂W have a faster order
(figures in benchmarks/RESULTS.md):

- ``a.sum(axis=(0, 2))`` over an (A, S, P, C) array walks it in a poor order; ``einsum`` is faster,
  and its two-operand form Σ a·b needs no full-size temporary; both add in float64.
- broadcasting a C-vector against (…, P, C) runs an inner loop only C long.  So the vectors are
  repeated into rows of (1, S, P·C) first (1/A of the activation's size), and the passes are done in
  place on arrays this module allocated itself.
- ``x * (x > 0)`` runs faster than ``maximum(x, 0)`` (negatives become −0.0, equal to 0).
- ∂L/∂W of a convolution with a small weight is (Xᵀ·G)ᵀ: the product with more rows than columns.

Written with ``xp = get_array_module(x)`` rather than ``numpy.``, so stand-in array modules (the
tests' strict device arrays) can run exactly this path.
"""

from __future__ import annotations

from backends import get_array_module, ops


def _rows(v, shape):
    """A (S, C) or (C,) vector repeated over the pixels of (A, S, P, C): a (1, S, P·C) row."""
    xp = get_array_module(v)
    _, S, P, C = shape
    return xp.broadcast_to(ops.per_group(v), (1, S, P, C)).reshape(1, S, P * C)


def _flat(a):
    A, S, P, C = a.shape
    return a.reshape(A, S, P * C)


def _x_hat(x, mean, inv_std):
    """(x − μ)·(1/σ) as a new (A, S, P·C) array."""
    x_hat = _flat(x) - _rows(mean, x.shape)
    x_hat *= _rows(inv_std, x.shape)
    return x_hat


def channel_sums(a, b=None):  # added in float64, as the formula's
    xp = get_array_module(a)
    sums = (
        xp.einsum("agpc->gc", a, dtype=xp.float64) if b is None else xp.einsum("agpc,agpc->gc", a, b, dtype=xp.float64)
    )
    return sums.astype(a.dtype)


def channel_moments(x):
    A, _, P, _ = x.shape
    mean = channel_sums(x) * (1.0 / (A * P))
    d = (_flat(x) - _rows(mean, x.shape)).reshape(x.shape)
    return mean, channel_sums(d, d) * (1.0 / (A * P))


def batchnorm_output(x, mean, inv_std, gamma, beta, residual=None, relu=False):
    y = _x_hat(x, mean, inv_std)
    y *= _rows(gamma, x.shape)  # in place on the array made just above
    y += _rows(beta, x.shape)
    if residual is not None:
        y += _flat(residual)
    y = y.reshape(x.shape)
    if not relu:
        return y, None
    mask = y > 0
    y *= mask
    return y, mask


def batchnorm_grad_sums(g, x, mean, inv_std):
    return channel_sums(g), channel_sums(g, _x_hat(x, mean, inv_std).reshape(x.shape))


def batchnorm_input_grad(g, x, mean, inv_std, g_mean, gx_mean, scale):
    dx = _x_hat(x, mean, inv_std)
    dx *= _rows(-gx_mean, g.shape)
    dx += _flat(g)
    dx -= _rows(g_mean, g.shape)
    dx *= _rows(scale, g.shape)
    return dx.reshape(g.shape)


def relu(x):
    return x * (x > 0)


SMALL_WEIGHT = 1 << 18  # entries of W up to which ∂L/∂W is computed as (Xᵀ·G)ᵀ


def conv_weight_grad(G, cols, w_shape):
    """(Xᵀ·G)ᵀ where W has at most SMALL_WEIGHT entries, the formula's Gᵀ·X where it has more (reordering a
    large (kh·kw·C, O) result costs more than the product saves)."""
    O, C, kh, kw = w_shape
    if O * C * kh * kw > SMALL_WEIGHT:
        return ops.conv_weight_grad.plain(G, cols, w_shape)
    xp = get_array_module(G)
    return xp.ascontiguousarray((cols.T @ G).reshape(kh, kw, C, O).transpose(3, 2, 0, 1))  # (Xᵀ·G)ᵀ as (O, C, kh, kw)


FAST = {
    f.__name__: f
    for f in (
        channel_sums,
        channel_moments,
        batchnorm_output,
        batchnorm_grad_sums,
        batchnorm_input_grad,
        relu,
        conv_weight_grad,
    )
}
