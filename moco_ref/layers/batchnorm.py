"""Batch normalisation over channels, with MoCo's split ("shuffle") variant.

Notation: x is (N, H, W, C) channels last; statistics are per channel over
the M = N·H·W values of that channel (or, with S splits, over the M/S values
of each group).

Training forward, per channel (and per group):

    μ = mean(x)    σ² = mean((x − μ)²)    x̂ = (x − μ)/√(σ² + ε)    y = γ·x̂ + β

Running statistics are updated as PyTorch does, with momentum 0.1 and the
*unbiased* variance:  r_μ ← (1 − 0.1)·r_μ + 0.1·μ,  r_σ² ← (1 − 0.1)·r_σ² + 0.1·σ²·M/(M − 1).

Backward, with g = ∂L/∂y and means taken over the same M values:

    ∂L/∂γ = Σ g·x̂      ∂L/∂β = Σ g
    ∂L/∂x = γ/√(σ² + ε) · (g − mean(g) − x̂·mean(g·x̂))

Split BatchNorm (the MoCo CIFAR-10 demo's SplitBatchNorm) simulates S GPUs on
one: sample n belongs to group n mod S, each group is normalised with its own
batch statistics, and the running statistics become the mean over groups of
the per-group updates.  S = 1 is ordinary BatchNorm.  In eval mode both use
the running statistics.
"""

from __future__ import annotations

from backends import get_array_module

BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def group_channel_sums(a, b=None):
    """Σ a (or Σ a·b) over the samples and pixels of each group: (A, S, P, C) -> (S, C).

    NumPy: einsum, several times faster than ``.sum(axis=(0, 2))`` over a channels-last array, and the
    product form needs no full-size temporary.  CuPy: two matrix-vector products with a vector of ones
    (cuBLAS, bandwidth-bound); CuPy's einsum of this form was the slowest part of the GPU step
    (BatchNorm took 72 % of it on an H200).
    """
    xp = get_array_module(a)
    if xp.__name__ == "numpy":
        return xp.einsum("agpc->gc", a) if b is None else xp.einsum("agpc,agpc->gc", a, b)
    return sums_by_matvec(a if b is None else a * b)


def sums_by_matvec(a):
    """(A, S, P, C) -> (S, C): Σ over A, then over P, each as a product with a vector of ones."""
    xp = get_array_module(a)
    A, S, P, C = a.shape
    over_samples = xp.ones(A, dtype=a.dtype) @ a.reshape(A, S * P * C)        # (S·P·C,)
    return xp.matmul(xp.ones(P, dtype=a.dtype), over_samples.reshape(S, P, C))  # (S, C)


def _pixel_rows(splits: int, pixels: int, channels: int):
    """A function repeating a per-channel (C,) or per-group (1, S, 1, C) vector over the pixels: (1, S, P·C).

    Why: NumPy broadcasts a C-vector against a (…, P, C) array with an inner loop only C long, which for
    C = 16 made each BatchNorm pass about 3x slower than the same pass against a (…, P·C) row.  The
    repeated row is 1/(N/S) of the activation's size.
    """
    def rows(v):
        xp = get_array_module(v)
        return xp.broadcast_to(v, (1, splits, pixels, channels)).reshape(1, splits, pixels * channels)
    return rows


def batchnorm_forward(x, gamma, beta, running_mean, running_var, training: bool, splits: int = 1):
    """Normalises x per channel.

    Args:
        x: (N, H, W, C).
        gamma, beta: (C,) scale and shift.
        running_mean, running_var: (C,) running statistics (read, never written).
        training: batch statistics (True) or running statistics (False).
        splits: S, the number of interleaved groups normalised separately (training only).
    Returns:
        y (N, H, W, C), (new_running_mean, new_running_var) or None in eval mode, cache.
    """
    xp = get_array_module(x)
    N, H, W, C = x.shape
    if not training:
        inv_std = 1.0 / xp.sqrt(running_var + BN_EPS)
        x_hat = (x - running_mean) * inv_std
        y = x_hat * gamma + beta
        return y, None, ("eval", x_hat, gamma * inv_std)
    if N % splits:
        raise ValueError(f"batch of {N} cannot be split into {splits} BatchNorm groups")
    # (N, H, W, C) -> (N/S, S, H·W, C): sample n = a·S + g sits at [a, g], so group g = x[g::S].
    groups = x.reshape(N // splits, splits, H * W, C)
    count = (N // splits) * H * W
    mean = group_channel_sums(groups).reshape(1, splits, 1, C) * (1.0 / count)   # (1, S, 1, C)
    if xp.__name__ == "cupy":  # the same maths in two fused passes (backends/cupy_kernels.py)
        from backends import cupy_kernels

        var = sums_by_matvec(cupy_kernels.centred_square(groups, mean)).reshape(1, splits, 1, C) * (1.0 / count)
        inv_std = 1.0 / xp.sqrt(var + BN_EPS)
        x_hat, y = cupy_kernels.normalize_affine(groups, mean, inv_std, gamma, beta)
    else:
        rows = _pixel_rows(splits, H * W, C)                     # (…, C) vectors as (1, S, H·W·C) rows
        flat = groups.reshape(N // splits, splits, H * W * C)
        x_hat = flat - rows(mean)                                # centred; a fresh array we may overwrite
        var = group_channel_sums(x_hat.reshape(groups.shape), x_hat.reshape(groups.shape))
        var = var.reshape(1, splits, 1, C) * (1.0 / count)       # Σ (x − μ)² / M
        inv_std = 1.0 / xp.sqrt(var + BN_EPS)
        x_hat *= rows(inv_std)
        y = x_hat * rows(gamma)
        y += rows(beta)                                          # in place: one temporary fewer
        x_hat = x_hat.reshape(groups.shape)                      # (N/S, S, H·W, C)
    y = y.reshape(N, H, W, C)

    unbiased = var.reshape(splits, C) * (count / max(count - 1, 1))
    new_mean = (1.0 - BN_MOMENTUM) * running_mean + BN_MOMENTUM * mean.reshape(splits, C).mean(axis=0)
    new_var = (1.0 - BN_MOMENTUM) * running_var + BN_MOMENTUM * unbiased.mean(axis=0)
    cache = ("train", x_hat, inv_std, gamma, splits)
    return y, (new_mean, new_var), cache


def batchnorm_backward(dy, cache):
    """Gradients of :func:`batchnorm_forward`.

    Args:
        dy: (N, H, W, C) upstream gradient.
    Returns:
        dx (N, H, W, C), dgamma (C,), dbeta (C,).
    """
    if cache[0] == "eval":  # constant statistics: y = x̂·γ + β with x̂ affine in x
        _, x_hat, scale = cache
        C = dy.shape[-1]
        return dy * scale, (dy * x_hat).reshape(-1, C).sum(axis=0), dy.reshape(-1, C).sum(axis=0)
    _, x_hat, inv_std, gamma, splits = cache
    N, H, W, C = dy.shape
    count = (N // splits) * H * W
    g = dy.reshape(N // splits, splits, H * W, C)
    g_sum = group_channel_sums(g)                                     # (S, C)
    gx_sum = group_channel_sums(g, x_hat)                             # (S, C), Σ g·x̂
    dbeta, dgamma = g_sum.sum(axis=0), gx_sum.sum(axis=0)
    # dx = γ/σ · (g − mean(g) − x̂·mean(g·x̂)), evaluated with as few full-size passes as possible.
    scale = gamma * inv_std                                           # (1, S, 1, C)
    g_mean = g_sum.reshape(1, splits, 1, C) * (1.0 / count)
    gx_mean = gx_sum.reshape(1, splits, 1, C) * (1.0 / count)
    if get_array_module(dy).__name__ == "cupy":  # one fused pass (backends/cupy_kernels.py)
        from backends import cupy_kernels

        return cupy_kernels.bn_input_grad(g, x_hat, g_mean, gx_mean, scale).reshape(N, H, W, C), dgamma, dbeta
    rows, flat = _pixel_rows(splits, H * W, C), (N // splits, splits, H * W * C)
    dx = x_hat.reshape(flat) * rows(-gx_mean)
    dx += g.reshape(flat)
    dx -= rows(g_mean)
    dx *= rows(scale)
    return dx.reshape(N, H, W, C), dgamma, dbeta
