"""The small layers: ReLU, global average pooling, linear.

Each is a forward/backward pair; the forward returns its output and the cache
the backward needs.  (The residual add y = a + b and the ReLU after it are part
of a block's last BatchNorm, layers/batchnorm.py; the add's backward hands ∂L/∂y
to both branches unchanged, see models/resnet.py.)
Notation: N batch, H×W spatial size, C channels, D_in/D_out features.
"""

from __future__ import annotations

from backends import get_array_module, ops

# y = max(x, 0), any shape, and ∂L/∂x = ∂L/∂y · 1[y > 0] (a new array; dy is not touched): the primitives
# themselves.  The backward needs only the forward's output y (y > 0 exactly where x > 0).
relu_forward = ops.relu
relu_backward = ops.relu_backward


def global_avg_pool_forward(x):
    """(N, H, W, C) -> (N, C), the mean over the H·W positions; the cache is x's shape."""
    return x.mean(axis=(1, 2)), x.shape


def global_avg_pool_backward(dy, x_shape):
    """∂L/∂x[n, h, w, c] = ∂L/∂y[n, c] / (H·W)."""
    xp = get_array_module(dy)
    N, H, W, C = x_shape
    dx = dy.reshape(N, 1, 1, C) * (1.0 / (H * W))
    return xp.broadcast_to(dx, x_shape).copy()


def linear_forward(x, w, b):
    """y = x·wᵀ + b.

    Args:
        x: (N, D_in); w: (D_out, D_in) PyTorch layout; b: (D_out,).
    Returns:
        y (N, D_out), cache.
    """
    return x @ w.T + b, (x, w)


def linear_backward(dy, cache):
    """∂L/∂x = dy·w,  ∂L/∂w = dyᵀ·x,  ∂L/∂b = Σ_n dy.  Returns (dx, dw, db)."""
    x, w = cache
    return dy @ w, dy.T @ x, dy.sum(axis=0)
