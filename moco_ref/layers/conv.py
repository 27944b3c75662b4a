"""2-D convolution without bias, by im2col and one matrix product.

Notation: N batch, H×W input size, C input channels, O output channels,
kh×kw kernel, s stride, p zero padding, Ho = (H + 2p − kh) // s + 1 (same for Wo).

Activations are NHWC inside moco-ref (channels last), which makes im2col a
plain copy of strided slices; weights keep PyTorch's layout (O, C, kh, kw)
so that ``state_dict`` moves to PyTorch unchanged.

Forward, with X the im2col matrix of shape (N·Ho·Wo, kh·kw·C) whose row r
holds the input patch under output pixel r, and Wm = W reordered to (O, kh·kw·C):

    Y = X · Wmᵀ                                  # (N·Ho·Wo, O)

Backward, given G = ∂L/∂Y:

    ∂L/∂Wm = Gᵀ · X        ∂L/∂X = G · Wm        ∂L/∂x = col2im(∂L/∂X)

col2im adds every patch gradient back to the pixels it came from
(backends/ops.py: a loop over the kh·kw kernel offsets with strided slices, no
scatter, so it runs the same on NumPy and CuPy).

The order of each product is the one OpenBLAS runs fastest, shape by shape (``moco-ref
bench parts`` times every shape; benchmarks/RESULTS.md): Y = X·Wmᵀ on Wm's transposed view; ∂L/∂Wm
as (Xᵀ·G)ᵀ where the weight is small (then the product with more rows than columns is
the faster one) and as Gᵀ·X where it is large (reordering a large (kh·kw·C, O) result to
PyTorch's layout costs more than the product saves).
"""

from __future__ import annotations

from backends import get_array_module, ops
from backends.ops import conv_output_size


def im2col(x, kh: int, kw: int, stride: int, padding: int):
    """(N, H, W, C) -> (N·Ho·Wo, kh·kw·C), columns ordered (kh, kw, C); see backends.ops.im2col."""
    return ops.im2col(x, kh, kw, stride, padding)


def col2im(dcols, x_shape, kh: int, kw: int, stride: int, padding: int):
    """Folds patch gradients back: (N·Ho·Wo, kh·kw·C) -> (N, H, W, C), summing overlaps; see backends.ops.col2im."""
    return ops.col2im(dcols, x_shape, kh, kw, stride, padding)


def conv2d_forward(x, w, stride: int = 1, padding: int = 0):
    """y = conv2d(x, w), no bias:  Y = X·Wmᵀ with X = im2col(x).

    Args:
        x: (N, H, W, C) input, channels last.
        w: (O, C, kh, kw) weight, PyTorch layout.
    Returns:
        y: (N, Ho, Wo, O) and the cache for :func:`conv2d_backward`.
    """
    N, H, W, C = x.shape
    O, Cw, kh, kw = w.shape
    if Cw != C:
        raise ValueError(f"conv2d: input has {C} channels, weight expects {Cw}")
    Ho = conv_output_size(H, kh, stride, padding)
    Wo = conv_output_size(W, kw, stride, padding)
    cols = im2col(x, kh, kw, stride, padding)  # X, (N·Ho·Wo, kh·kw·C)
    w_mat = w.transpose(0, 2, 3, 1).reshape(O, kh * kw * C)  # Wm, (O, kh·kw·C), columns (kh, kw, C)
    y = (cols @ w_mat.T).reshape(N, Ho, Wo, O)
    return y, (cols, w_mat, x.shape, w.shape, stride, padding)


SMALL_WEIGHT = 1 << 18  # entries of Wm below which ∂L/∂Wm is computed as (Xᵀ·G)ᵀ


def conv2d_backward(dy, cache, need_dx: bool = True):
    """∂L/∂W = reorder(Gᵀ·X) and ∂L/∂x = col2im(G·Wm), with G = ∂L/∂y as (N·Ho·Wo, O).

    Args:
        dy: (N, Ho, Wo, O) upstream gradient ∂L/∂y.
        cache: from :func:`conv2d_forward`.
        need_dx: False skips ∂L/∂x (the first layer's input needs none).
    Returns:
        (dx, dw): dx (N, H, W, C) or None, dw (O, C, kh, kw).
    """
    xp = get_array_module(dy)
    cols, w_mat, x_shape, w_shape, stride, padding = cache
    O, C, kh, kw = w_shape
    G = dy.reshape(-1, O)  # (N·Ho·Wo, O)
    if w_mat.size <= SMALL_WEIGHT:
        dw = (cols.T @ G).reshape(kh, kw, C, O).transpose(3, 2, 0, 1)  # (Xᵀ·G)ᵀ as (O, C, kh, kw)
    else:
        dw = (G.T @ cols).reshape(O, kh, kw, C).transpose(0, 3, 1, 2)  # Gᵀ·X as (O, C, kh, kw)
    dw = xp.ascontiguousarray(dw)
    if not need_dx:
        return None, dw
    return col2im(G @ w_mat, x_shape, kh, kw, stride, padding), dw
