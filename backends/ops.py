"""The array primitives the layers are written on, and the one seam where speed work lives.

Each primitive below is its formula, written as a plain array expression that runs unchanged on
NumPy and CuPy.  That plain expression is the definition.  A backend may register a faster function
that computes the same thing (fewer passes over memory, a fused kernel, every core, a faster order of
a product); the primitive picks it by the *data's* array module, never by a global mode:

    backends/numpy_fast.py   NumPy: einsum for channel sums, BatchNorm passes on long rows
    backends/numba_fast.py   NumPy arrays with Numba (a dependency): each primitive one
                             compiled pass over memory, on every core; the thin 3×3 convolutions
                             computed directly, without an im2col matrix
    backends/cupy_fast.py    CuPy: channel sums as matrix-vector products, im2col as one kernel

What runs.  An array module's path is its modules in ``PATHS``, read left to right, each module's
functions (its ``FAST`` table) replacing those of the modules before it; a primitive no module on the
path registers runs its plain formula.  NumPy's path leaves numba_fast out where Numba cannot be
imported or MOCO_REF_NUMBA=0.  :func:`which` gives the module for one primitive, and this table is
what it gives (tests/test_fast_paths.py checks that the two agree):

    primitive              NumPy + Numba    NumPy, MOCO_REF_NUMBA=0   CuPy           other
    ---------------------  ---------------  ------------------------  -------------  -----
    channel_sums           numba_fast       numpy_fast                cupy_fast      plain
    channel_moments        numba_fast       numpy_fast                plain          plain
    batchnorm_output       numba_fast       numpy_fast                plain          plain
    batchnorm_grad_sums    numba_fast       numpy_fast                plain          plain
    batchnorm_input_grad   numba_fast       numpy_fast                plain          plain
    relu                   numpy_fast       numpy_fast                plain          plain
    relu_backward          numba_fast       plain                     plain          plain
    im2col                 numba_fast       plain                     cupy_fast[3]   plain
    col2im                 numba_fast       plain                     plain          plain
    conv2d_forward         numba_fast[1]    plain                     plain          plain
    conv2d_backward        numba_fast[1]    plain                     plain          plain
    conv_weight_grad       numpy_fast[4]    numpy_fast[4]             cupy_fast[4]   plain
    sgd_update_            numba_fast[2]    plain                     plain          plain
    ema_update_            numba_fast[2]    plain                     plain          plain

    [1] a direct kernel for the kernel sizes, strides, channel counts and image widths that
        ``numba_fast.DIRECT_RULE`` takes (``numba_fast.direct_conv_wanted``), the plain formula elsewhere.
    [2] the plain formula for arrays under ``numba_fast.SMALL`` values or not C-contiguous.
    [3] the plain formula for an im2col matrix of 2**31 elements or more (the kernel's indices are 32-bit).
    [4] (Xᵀ·G)ᵀ for weights of up to ``numpy_fast.SMALL_WEIGHT`` entries, the plain Gᵀ·X above; on CuPy
        numpy_fast's function, so that both backends multiply the same matrices.

"other" is any other array module.  A plain formula calls other primitives (channel_moments calls
channel_sums, conv2d_backward calls conv_weight_grad and col2im), and each of those runs as its own row
says.  A reader who skips the fast modules still reads the maths that runs.  tests/test_fast_paths.py
checks that every registered fast function equals its plain expression (NumPy here; the GPU tests do the
same for CuPy).

Shapes.  BatchNorm's primitives see activations grouped as (A, S, P, C): S groups of A samples
each (split BatchNorm; S = 1 is plain BatchNorm), P = H·W pixels, C channels; sample n = a·S + s
sits at [a, s].  Per-group vectors are (S, C); per-channel vectors (C,).
"""

from __future__ import annotations

import functools
import importlib
import os

from backends import get_array_module

# Each array module's path: the modules whose fast functions its arrays run, a later module's function replacing
# an earlier one's.  An array module not named here runs the plain formulas.
PATHS = {"numpy": ("backends.numpy_fast", "backends.numba_fast"), "cupy": ("backends.cupy_fast",)}
NUMBA = "backends.numba_fast"  # on NumPy's path where Numba can be imported and MOCO_REF_NUMBA is not 0
PRIMITIVES: list[str] = []  # the names of the primitives below, in order
# {array module name: {primitive name: fast function}}, filled on first use of each array module.
_FAST: dict[str, dict] = {}


def numba_wanted() -> bool:
    """False when the environment variable MOCO_REF_NUMBA is 0 (run NumPy's path without Numba)."""
    return os.environ.get("MOCO_REF_NUMBA", "1").strip() not in ("0", "false", "no", "off")


def _importable(source: str):
    """The fast-path module ``source``, or None where its library is not installed here."""
    try:
        return importlib.import_module(source)
    except ImportError as error:
        if (error.name or "").split(".")[0] in ("backends", "moco_ref"):
            raise  # a fault of ours, not a library that is not installed
        return None


def path(xp_name: str, numba: bool | None = None) -> list:
    """The fast-path modules that arrays of the module called ``xp_name`` run, in ``PATHS``' order: those that
    can be imported here, numba_fast only where ``numba`` (by default: unless MOCO_REF_NUMBA=0)."""
    numba = numba_wanted() if numba is None else numba
    sources = [s for s in PATHS.get(xp_name, ()) if numba or s != NUMBA]
    return [module for module in map(_importable, sources) if module is not None]


def which(primitive_name: str, xp_name: str, numba: bool | None = None) -> str:
    """Where the function that ``primitive_name`` runs on arrays of module ``xp_name`` lives: the last module on
    the array module's :func:`path` whose ``FAST`` table has it ("numba_fast", "numpy_fast", "cupy_fast"), or
    "plain" (the primitive's formula).  The table in this module's docstring, one cell."""
    for module in reversed(path(xp_name, numba)):
        if primitive_name in module.FAST:
            return module.__name__.rsplit(".", 1)[-1]
    return "plain"


def _load_table(xp_name: str, numba: bool | None = None) -> dict:
    """{primitive name: fast function} for arrays of module ``xp_name``, as :func:`which` resolves each."""
    modules = {module.__name__.rsplit(".", 1)[-1]: module for module in path(xp_name, numba)}
    table = {}
    for name in PRIMITIVES:
        where = which(name, xp_name, numba)
        if where != "plain":
            table[name] = modules[where].FAST[name]
    return table


def _fast_table(xp) -> dict:
    name = xp.__name__
    if name not in _FAST:
        _FAST[name] = _load_table(name)
    return _FAST[name]


def fast_path_modules(xp) -> list:
    """The modules whose fast functions arrays of ``xp`` run (for the benchmarks' header)."""
    return [module.__name__ for module in path(xp.__name__)]


def use_fast_paths_of(xp, like: str) -> None:
    """Lets arrays of module ``xp`` run the fast functions of ``like`` (a module name of PATHS,
    e.g. "backends.numpy_fast").

    For stand-in array modules such as the tests' strict device arrays, which should run exactly
    the array code a real backend runs.
    """
    _FAST[xp.__name__] = dict(importlib.import_module(like).FAST)


def primitive(plain):
    """Marks ``plain`` as a primitive: calls run the fast function registered for the first
    argument's array module (given by position or by name), or ``plain`` where none is.
    ``primitive.plain`` is always the formula."""
    first = plain.__code__.co_varnames[0]

    @functools.wraps(plain)
    def dispatch(*args, **kwargs):
        xp = get_array_module(args[0] if args else kwargs[first])
        return _fast_table(xp).get(plain.__name__, plain)(*args, **kwargs)

    dispatch.plain = plain
    PRIMITIVES.append(plain.__name__)
    return dispatch


def per_group(v):
    """A per-group (S, C) or per-channel (C,) vector as (1, S or 1, 1, C), broadcastable against (A, S, P, C)."""
    return v.reshape(1, -1, 1, v.shape[-1])


# ------------------------------------------------------------------ reductions
@primitive
def channel_sums(a, b=None):
    """Σ a (or Σ a·b) over the samples and pixels of each group: (A, S, P, C) -> (S, C).

    Multiplied and added in float64, then rounded once to a's dtype, as PyTorch's CPU BatchNorm adds: a
    gradient's Σ g nearly cancels, and tens of thousands of float32 additions would leave it few correct digits.
    """
    xp = get_array_module(a)
    terms = a if b is None else xp.multiply(a, b, dtype=xp.float64)
    return terms.sum(axis=(0, 2), dtype=xp.float64).astype(a.dtype)


@primitive
def channel_moments(x):
    """The mean μ and the biased variance σ² = mean((x − μ)²) of each group and channel.

    Args:
        x: (A, S, P, C).
    Returns:
        (μ (S, C), σ² (S, C)).
    """
    A, _, P, _ = x.shape
    mean = channel_sums(x) * (1.0 / (A * P))
    d = x - per_group(mean)
    return mean, channel_sums(d, d) * (1.0 / (A * P))


# ------------------------------------------------------------------ BatchNorm's element-wise passes
@primitive
def batchnorm_output(x, mean, inv_std, gamma, beta, residual=None, relu: bool = False):
    """y = γ·(x − μ)·(1/σ) + β, plus ``residual`` if given, then max(·, 0) if ``relu``.

    BatchNorm's output with the residual add and the ReLU that may follow it (a BasicBlock ends in
    relu(bn2(·) + shortcut)).

    Args:
        x: (A, S, P, C).  mean, inv_std: (S, C) or (C,).  gamma, beta: (C,).  residual: like x, or None.
    Returns:
        (y, like x; the ReLU's mask 1[y > 0] as booleans when ``relu``, else None).
    """
    xp = get_array_module(x)
    y = (x - per_group(mean)) * per_group(inv_std) * gamma + beta
    if residual is not None:
        y = y + residual
    if not relu:
        return y, None
    return xp.maximum(y, 0), y > 0


@primitive
def batchnorm_grad_sums(g, x, mean, inv_std):
    """Σ g and Σ g·x̂ over each group's samples and pixels, x̂ = (x − μ)·(1/σ).

    Args:
        g, x: (A, S, P, C).  mean, inv_std: (S, C) or (C,).
    Returns:
        (Σ g (S, C), Σ g·x̂ (S, C)).
    """
    x_hat = (x - per_group(mean)) * per_group(inv_std)
    return channel_sums(g), channel_sums(g, x_hat)


@primitive
def batchnorm_input_grad(g, x, mean, inv_std, g_mean, gx_mean, scale):
    """∂L/∂x = (γ/σ)·(g − mean(g) − x̂·mean(g·x̂)), per group and channel, x̂ = (x − μ)·(1/σ).

    Args:
        g, x: (A, S, P, C).  mean, inv_std, g_mean, gx_mean, scale (= γ/σ): (S, C).
    Returns:
        (A, S, P, C).
    """
    x_hat = (x - per_group(mean)) * per_group(inv_std)
    return (g - per_group(g_mean) - x_hat * per_group(gx_mean)) * per_group(scale)


# ------------------------------------------------------------------ ReLU
@primitive
def relu(x):
    """y = max(x, 0)."""
    xp = get_array_module(x)
    return xp.maximum(x, 0)


@primitive
def relu_backward(dy, y):
    """∂L/∂x = ∂L/∂y · 1[y > 0], with y = max(x, 0) the forward's output (y > 0 exactly where x > 0), or
    the mask 1[y > 0] itself."""
    return dy * (y > 0)


# ------------------------------------------------------------------ im2col and col2im
def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


@primitive
def im2col(x, kh: int, kw: int, stride: int, padding: int):
    """Unfolds patches: (N, H, W, C) -> (N·Ho·Wo, kh·kw·C); row (n, i, j) holds x_pad[n, i·s + a, j·s + b, c]
    at column (a, b, c), x_pad being x with a zero border of ``padding``.

    The patches are a strided *view* of the padded input, shape (N, Ho, Wo, kh, kw, C), and one reshape
    copies them out.
    """
    xp = get_array_module(x)
    N, H, W, C = x.shape
    Ho, Wo = conv_output_size(H, kh, stride, padding), conv_output_size(W, kw, stride, padding)
    padded = xp.ascontiguousarray(x)
    if padding:
        padded = xp.zeros((N, H + 2 * padding, W + 2 * padding, C), dtype=x.dtype)
        padded[:, padding : padding + H, padding : padding + W, :] = x
    sN, sH, sW, sC = padded.strides
    patches = xp.lib.stride_tricks.as_strided(
        padded, shape=(N, Ho, Wo, kh, kw, C), strides=(sN, sH * stride, sW * stride, sH, sW, sC)
    )
    return patches.reshape(N * Ho * Wo, kh * kw * C)


@primitive
def col2im(dcols, x_shape, kh: int, kw: int, stride: int, padding: int):
    """Folds patch gradients back, the adjoint of :func:`im2col`: (N·Ho·Wo, kh·kw·C) -> (N, H, W, C),
    ∂x[n, y, x, c] = Σ over the patches (i, j, a, b) with i·s + a − p = y and j·s + b − p = x of ∂cols.

    A loop over the kh·kw kernel offsets, each adding one strided slice (no scatter, so it runs the
    same on NumPy and CuPy).
    """
    xp = get_array_module(dcols)
    N, H, W, C = x_shape
    Ho, Wo = conv_output_size(H, kh, stride, padding), conv_output_size(W, kw, stride, padding)
    dcols = dcols.reshape(N, Ho, Wo, kh, kw, C)
    dx = xp.zeros((N, H + 2 * padding, W + 2 * padding, C), dtype=dcols.dtype)
    for i in range(kh):
        for j in range(kw):
            dx[:, i : i + stride * Ho : stride, j : j + stride * Wo : stride, :] += dcols[:, :, :, i, j, :]
    return dx[:, padding : padding + H, padding : padding + W, :]


# ------------------------------------------------------------------ convolution: im2col, a product, col2im
@primitive
def conv2d_forward(x, w, stride: int, padding: int):
    """y = conv2d(x, w), no bias:  Y = X·Wmᵀ with X = im2col(x) and Wm = w as (O, kh·kw·C), columns (kh, kw, C).

    Args:
        x: (N, H, W, C).  w: (O, C, kh, kw).
    Returns:
        (y (N, Ho, Wo, O), cache): the cache is what :func:`conv2d_backward` reads, (X, Wm, x's shape, w's
        shape, stride, padding); a fast function may keep other arrays in its first two places.
    """
    N, H, W, C = x.shape
    O, _, kh, kw = w.shape
    Ho, Wo = conv_output_size(H, kh, stride, padding), conv_output_size(W, kw, stride, padding)
    cols = im2col(x, kh, kw, stride, padding)  # X, (N·Ho·Wo, kh·kw·C)
    w_mat = w.transpose(0, 2, 3, 1).reshape(O, kh * kw * C)  # Wm, (O, kh·kw·C)
    y = (cols @ w_mat.T).reshape(N, Ho, Wo, O)
    return y, (cols, w_mat, x.shape, w.shape, stride, padding)


@primitive
def conv2d_backward(dy, cache, need_dx: bool = True):
    """∂L/∂W = reorder(Gᵀ·X) and ∂L/∂x = col2im(G·Wm), with G = ∂L/∂y as (N·Ho·Wo, O).

    Args:
        dy: (N, Ho, Wo, O).  cache: from :func:`conv2d_forward`.  need_dx: False skips ∂L/∂x.
    Returns:
        (dx (N, H, W, C) or None, dw (O, C, kh, kw)).
    """
    cols, w_mat, x_shape, w_shape, stride, padding = cache
    O, C, kh, kw = w_shape
    G = dy.reshape(-1, O)  # (N·Ho·Wo, O)
    dw = conv_weight_grad(G, cols, w_shape)
    if not need_dx:
        return None, dw
    return col2im(G @ w_mat, x_shape, kh, kw, stride, padding), dw


@primitive
def conv_weight_grad(G, cols, w_shape):
    """∂L/∂W = Gᵀ·X, reordered from (O, kh·kw·C) to w's layout (O, C, kh, kw).

    Args:
        G: ∂L/∂Y, (N·Ho·Wo, O).  cols: X, the im2col matrix (N·Ho·Wo, kh·kw·C).  w_shape: (O, C, kh, kw).
    Returns:
        (O, C, kh, kw), C-contiguous.
    """
    xp = get_array_module(G)
    O, C, kh, kw = w_shape
    return xp.ascontiguousarray((G.T @ cols).reshape(O, kh, kw, C).transpose(0, 3, 1, 2))


def conv2d_keeps_im2col(xp, x_shape, w_shape, stride: int, padding: int) -> bool:
    """Whether :func:`conv2d_forward` on arrays of module ``xp`` keeps the im2col matrix X for its backward (the
    plain formula does), for memory estimates made before any array exists.  A fast function that computes
    some convolutions without X says which by its attribute ``keeps_im2col(x_shape, w_shape, stride, padding)``."""
    keeps = getattr(_fast_table(xp).get("conv2d_forward"), "keeps_im2col", None)
    return True if keeps is None else bool(keeps(x_shape, w_shape, stride, padding))


# ------------------------------------------------------------------ the optimiser's and the momentum update's passes
@primitive
def sgd_update_(p, g, b, lr: float, momentum: float, weight_decay: float, nesterov: bool):
    """One SGD step in place on the parameter p and its momentum buffer b (torch.optim.SGD, dampening 0):

        d = g + λ·p      b ← μ·b + d      p ← p − η·(d + μ·b) with Nesterov, p ← p − η·b without

    (with μ = 0 there is no buffer: p ← p − η·d).  p and b are overwritten, g is only read.
    """
    d = g + weight_decay * p if weight_decay else g
    if momentum:
        b *= momentum
        b += d
        d = d + momentum * b if nesterov else b
    p -= lr * d


@primitive
def ema_update_(theta_k, theta_q, m: float):
    """θ_k ← θ_k·m + θ_q·(1 − m) in place (the official code's order of operations)."""
    theta_k *= m
    theta_k += theta_q * (1.0 - m)
