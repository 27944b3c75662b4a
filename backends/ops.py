"""The array primitives the layers are written on, and the one seam where speed work lives.

Each primitive below is its formula, written as a plain array expression that runs unchanged on
NumPy and CuPy.  That plain expression is the definition.  A backend may register a faster function
that computes the same thing (fewer passes over memory, a fused kernel, a better-suited library
call); the primitive picks it by the *data's* array module, never by a global mode:

    backends/numpy_fast.py   NumPy: einsum for channel sums, BatchNorm passes on long rows
    backends/cupy_fast.py    CuPy: fused element-wise kernels, channel sums as matrix-vector products,
                             im2col as one kernel per convolution shape

A reader who skips those two files still reads the maths that runs.  tests/test_fast_paths.py
checks that every registered fast function equals its plain expression (NumPy here; the GPU
tests do the same for CuPy).

Shapes.  BatchNorm's primitives see activations grouped as (A, S, P, C): S groups of A samples
each (split BatchNorm; S = 1 is plain BatchNorm), P = H·W pixels, C channels.  Per-group
vectors are (S, C); per-channel vectors (C,).
"""

from __future__ import annotations

import functools
import importlib

from backends import get_array_module

# {array module name: {primitive name: faster function}}, filled on first use of each module.
_FAST: dict[str, dict] = {}
# Where each array module's fast functions live; a module not named here runs the plain expressions.
FAST_MODULES = {"numpy": "backends.numpy_fast", "cupy": "backends.cupy_fast"}


def _fast_table(xp) -> dict:
    name = xp.__name__
    if name not in _FAST:
        source = FAST_MODULES.get(name)
        _FAST[name] = dict(importlib.import_module(source).FAST) if source else {}
    return _FAST[name]


def use_fast_paths_of(xp, like: str) -> None:
    """Lets arrays of module ``xp`` run the fast functions registered for ``like`` ("numpy", "cupy").

    For stand-in array modules such as the tests' strict device arrays, which should run exactly
    the path a real backend runs.
    """
    _FAST[xp.__name__] = dict(importlib.import_module(FAST_MODULES[like]).FAST)


def primitive(plain):
    """Marks ``plain`` as a primitive: calls run the fast function registered for the first
    argument's array module, or ``plain`` where none is.  ``primitive.plain`` is always the formula."""
    @functools.wraps(plain)
    def dispatch(*args, **kwargs):
        return _fast_table(get_array_module(args[0])).get(plain.__name__, plain)(*args, **kwargs)

    dispatch.plain = plain
    return dispatch


def per_group(v):
    """A per-group (S, C) or per-channel (C,) vector as (1, S or 1, 1, C), broadcastable against (A, S, P, C)."""
    return v.reshape(1, -1, 1, v.shape[-1])


# ------------------------------------------------------------------ reductions
@primitive
def channel_sums(a, b=None):
    """Σ a (or Σ a·b) over the samples and pixels of each group: (A, S, P, C) -> (S, C)."""
    return (a if b is None else a * b).sum(axis=(0, 2))


# ------------------------------------------------------------------ BatchNorm's element-wise passes
@primitive
def centre(x, mean):
    """x − μ per group and channel, and Σ (x − μ)² over each group's samples and pixels.

    Args:
        x: (A, S, P, C).  mean: (S, C) or (C,).
    Returns:
        (x − μ (A, S, P, C), Σ (x − μ)² (S, C)).
    """
    d = x - per_group(mean)
    return d, (d * d).sum(axis=(0, 2))


@primitive
def scale_shift_(centred, inv_std, gamma, beta):
    """x̂ = (x − μ)·(1/σ) and y = γ·x̂ + β, per group and channel; x̂ may be written over ``centred``
    (the trailing underscore: the caller hands that array over and does not use it again).

    Args:
        centred: x − μ, (A, S, P, C).  inv_std: (S, C) or (C,).  gamma, beta: (C,).
    Returns:
        (x̂, y), both (A, S, P, C).
    """
    x_hat = centred
    x_hat *= per_group(inv_std)
    return x_hat, x_hat * gamma + beta


@primitive
def batchnorm_input_grad(g, x_hat, g_mean, gx_mean, scale):
    """∂L/∂x = (γ/σ)·(g − mean(g) − x̂·mean(g·x̂)), per group and channel.

    Args:
        g, x_hat: (A, S, P, C).  g_mean, gx_mean, scale (= γ/σ): (S, C).
    Returns:
        (A, S, P, C).
    """
    return (g - per_group(g_mean) - x_hat * per_group(gx_mean)) * per_group(scale)


# ------------------------------------------------------------------ ReLU
@primitive
def relu(x):
    """y = max(x, 0) and the mask 1[x > 0] its backward needs."""
    xp = get_array_module(x)
    return xp.maximum(x, 0), x > 0


# ------------------------------------------------------------------ im2col
@primitive
def im2col(x, kh: int, kw: int, stride: int, padding: int):
    """Unfolds patches: (N, H, W, C) -> (N·Ho·Wo, kh·kw·C); row (n, i, j) holds x_pad[n, i·s + a, j·s + b, c]
    at column (a, b, c), x_pad being x with a zero border of ``padding``.

    The patches are a strided *view* of the padded input, shape (N, Ho, Wo, kh, kw, C), and one reshape
    copies them out.
    """
    xp = get_array_module(x)
    N, H, W, C = x.shape
    Ho, Wo = (H + 2 * padding - kh) // stride + 1, (W + 2 * padding - kw) // stride + 1
    padded = xp.ascontiguousarray(x)
    if padding:
        padded = xp.zeros((N, H + 2 * padding, W + 2 * padding, C), dtype=x.dtype)
        padded[:, padding:padding + H, padding:padding + W, :] = x
    sN, sH, sW, sC = padded.strides
    patches = xp.lib.stride_tricks.as_strided(
        padded, shape=(N, Ho, Wo, kh, kw, C), strides=(sN, sH * stride, sW * stride, sH, sW, sC))
    return patches.reshape(N * Ho * Wo, kh * kw * C)
