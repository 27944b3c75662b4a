"""NumPy's faster versions of the primitives in backends/ops.py (each computes exactly its formula).

Two habits of NumPy make the plain expressions slow on channels-last activations:

- ``a.sum(axis=(0, 2))`` over an (A, S, P, C) array walks it in a poor order; ``einsum`` is several
  times faster, and its two-operand form Σ a·b needs no full-size temporary.
- broadcasting a C-vector against (…, P, C) runs an inner loop only C long, which for C = 16 made
  each BatchNorm pass about 3x slower than the same pass against one row of P·C values.  So the
  vectors are repeated into rows of (1, S, P·C) first (1/A of the activation's size), and the passes
  are done in place on arrays this module allocated itself.
- ``x * (x > 0)`` was measured 2x faster than ``maximum(x, 0)`` (negatives become −0.0, equal to 0).

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


def channel_sums(a, b=None):
    xp = get_array_module(a)
    return xp.einsum("agpc->gc", a) if b is None else xp.einsum("agpc,agpc->gc", a, b)


def centre(x, mean):
    xp = get_array_module(x)
    d = (_flat(x) - _rows(mean, x.shape)).reshape(x.shape)
    return d, xp.einsum("agpc,agpc->gc", d, d)


def scale_shift_(centred, inv_std, gamma, beta):
    x_hat = _flat(centred)
    x_hat *= _rows(inv_std, centred.shape)       # over the centred array, as the primitive allows
    y = x_hat * _rows(gamma, centred.shape)
    y += _rows(beta, centred.shape)              # in place on the array made just above
    return x_hat.reshape(centred.shape), y.reshape(centred.shape)


def batchnorm_input_grad(g, x_hat, g_mean, gx_mean, scale):
    dx = _flat(x_hat) * _rows(-gx_mean, g.shape)
    dx += _flat(g)
    dx -= _rows(g_mean, g.shape)
    dx *= _rows(scale, g.shape)
    return dx.reshape(g.shape)


def relu(x):
    mask = x > 0
    return x * mask, mask


FAST = {f.__name__: f for f in (channel_sums, centre, scale_shift_, batchnorm_input_grad, relu)}
