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

The plain expressions of these steps are backends/ops.py's primitives ``conv2d_forward`` and
``conv2d_backward`` (and the ``im2col``, ``conv_weight_grad`` and ``col2im`` they call), so that a backend
may register a faster function computing the same thing (backends/ops.py's table says which runs).
"""

from __future__ import annotations

from backends import ops
from backends.ops import conv_output_size

__all__ = ["conv2d_backward", "conv2d_forward", "conv_output_size"]


def conv2d_forward(x, w, stride: int = 1, padding: int = 0):
    """y = conv2d(x, w), no bias:  Y = X·Wmᵀ with X = im2col(x).

    Args:
        x: (N, H, W, C) input, channels last.
        w: (O, C, kh, kw) weight, PyTorch layout.
    Returns:
        y: (N, Ho, Wo, O) and the cache for :func:`conv2d_backward`.
    """
    if w.shape[1] != x.shape[3]:
        raise ValueError(f"conv2d: input has {x.shape[3]} channels, weight expects {w.shape[1]}")
    return ops.conv2d_forward(x, w, stride, padding)


# ∂L/∂W = reorder(Gᵀ·X) and ∂L/∂x = col2im(G·Wm): conv2d_backward(dy, cache, need_dx=True) -> (dx or None, dw),
# the primitive itself (need_dx=False skips ∂L/∂x: the first layer's input needs none).
conv2d_backward = ops.conv2d_backward
