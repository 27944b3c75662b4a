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

col2im adds every patch gradient back to the pixels it came from; it loops
over the kh·kw kernel offsets with strided slices (no scatter, so it runs the
same on NumPy and CuPy).
"""

from __future__ import annotations

from backends import get_array_module


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def zero_pad(x, padding: int):
    """(N, H, W, C) -> (N, H + 2p, W + 2p, C) with a zero border (faster than xp.pad for this case)."""
    if not padding:
        return x
    xp = get_array_module(x)
    N, H, W, C = x.shape
    out = xp.zeros((N, H + 2 * padding, W + 2 * padding, C), dtype=x.dtype)
    out[:, padding:padding + H, padding:padding + W, :] = x
    return out


def im2col(x, kh: int, kw: int, stride: int, padding: int):
    """Unfolds patches: (N, H, W, C) -> (N·Ho·Wo, kh·kw·C), columns ordered (kh, kw, C).

    The patches are first a strided *view* of the padded input, shape (N, Ho, Wo, kh, kw, C) — element
    [n, i, j, a, b, c] is x_pad[n, i·s + a, j·s + b, c] — and one reshape copies them out.  A single copy
    is several times faster in NumPy than kh·kw slice assignments of C-long pieces.
    """
    xp = get_array_module(x)
    N, H, W, C = x.shape
    Ho = conv_output_size(H, kh, stride, padding)
    Wo = conv_output_size(W, kw, stride, padding)
    if xp.__name__ == "cupy":  # one kernel, also doing the zero padding (im2col 37.3 -> 31.5 ms a step, H200)
        from backends import cupy_kernels

        cols = cupy_kernels.im2col(x, kh, kw, stride, padding, Ho, Wo)
        if cols is not None:
            return cols
    x = xp.ascontiguousarray(zero_pad(x, padding))
    sN, sH, sW, sC = x.strides
    patches = xp.lib.stride_tricks.as_strided(
        x, shape=(N, Ho, Wo, kh, kw, C), strides=(sN, sH * stride, sW * stride, sH, sW, sC))
    return patches.reshape(N * Ho * Wo, kh * kw * C)


def col2im(dcols, x_shape, kh: int, kw: int, stride: int, padding: int):
    """Folds patch gradients back: (N·Ho·Wo, kh·kw·C) -> (N, H, W, C), summing overlaps.

    A loop over the kh·kw kernel offsets, each adding one strided slice (no scatter, so it runs the
    same on NumPy and CuPy).
    """
    xp = get_array_module(dcols)
    N, H, W, C = x_shape
    Ho = conv_output_size(H, kh, stride, padding)
    Wo = conv_output_size(W, kw, stride, padding)
    dcols = dcols.reshape(N, Ho, Wo, kh, kw, C)
    dx = xp.zeros((N, H + 2 * padding, W + 2 * padding, C), dtype=dcols.dtype)
    for i in range(kh):
        for j in range(kw):
            dx[:, i:i + stride * Ho:stride, j:j + stride * Wo:stride, :] += dcols[:, :, :, i, j, :]
    if padding:
        dx = dx[:, padding:padding + H, padding:padding + W, :]
    return dx


def conv2d_forward(x, w, stride: int = 1, padding: int = 0):
    """y = conv2d(x, w), no bias.

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
    cols = im2col(x, kh, kw, stride, padding)            # (N·Ho·Wo, kh·kw·C)
    w_mat = w.transpose(0, 2, 3, 1).reshape(O, kh * kw * C)  # (O, kh·kw·C), columns (kh, kw, C)
    y = (cols @ w_mat.T).reshape(N, Ho, Wo, O)
    cache = (cols, w_mat, x.shape, w.shape, stride, padding)
    return y, cache


def conv2d_backward(dy, cache, need_dx: bool = True):
    """Gradients of conv2d.

    Args:
        dy: (N, Ho, Wo, O) upstream gradient ∂L/∂y.
        cache: from :func:`conv2d_forward`.
        need_dx: False skips ∂L/∂x (the first layer's input needs none).
    Returns:
        (dx, dw): dx (N, H, W, C) or None, dw (O, C, kh, kw).
    """
    cols, w_mat, x_shape, w_shape, stride, padding = cache
    O, C, kh, kw = w_shape
    dy_mat = dy.reshape(-1, O)                                  # (N·Ho·Wo, O)
    dw = (dy_mat.T @ cols).reshape(O, kh, kw, C).transpose(0, 3, 1, 2)  # (O, C, kh, kw)
    dw = get_array_module(dw).ascontiguousarray(dw)
    dx = None
    if need_dx and stride == 1 and padding <= min(kh, kw) - 1:
        # Stride 1: ∂L/∂x is the "full" convolution of dy with the kernel flipped in space and with
        # in/out channels swapped, padding kh − 1 − p.  im2col + GEMM is faster than GEMM + col2im.
        w = w_mat.reshape(O, kh, kw, C).transpose(3, 0, 1, 2)[:, :, ::-1, ::-1]   # (C, O, kh, kw) flipped
        dx = conv2d_forward(dy, get_array_module(w).ascontiguousarray(w), 1, kh - 1 - padding)[0]
    elif need_dx:
        dcols = dy_mat @ w_mat                                   # (N·Ho·Wo, kh·kw·C)
        if kh == 1 and kw == 1 and padding == 0:
            dx = _scatter_1x1(dcols, x_shape, stride)
        else:
            dx = col2im(dcols, x_shape, kh, kw, stride, padding)
    return dx, dw


def _scatter_1x1(dcols, x_shape, stride: int):
    """col2im for a 1×1 kernel: the gradient lands on every stride-th pixel."""
    xp = get_array_module(dcols)
    N, H, W, C = x_shape
    if stride == 1:
        return dcols.reshape(N, H, W, C)
    dx = xp.zeros((N, H, W, C), dtype=dcols.dtype)
    strided = dx[:, ::stride, ::stride, :]        # a view: writing it writes dx
    strided[...] = dcols.reshape(strided.shape)
    return dx
