"""Batch normalisation over channels, with MoCo's split ("shuffle") variant.

Notation: x is (N, H, W, C) channels last; statistics are per channel over
the M = N·H·W values of that channel (or, with S splits, over the M = N/S·H·W
values of each group).

Training forward, per channel (and per group):

    μ = mean(x)    σ² = mean((x − μ)²)    x̂ = (x − μ)/√(σ² + ε)    y = γ·x̂ + β

Running statistics are updated as PyTorch does, with momentum 0.1 and the
*unbiased* variance:  r_μ ← (1 − 0.1)·r_μ + 0.1·μ,  r_σ² ← (1 − 0.1)·r_σ² + 0.1·σ²·M/(M − 1).

Split BatchNorm (the MoCo CIFAR-10 demo's SplitBatchNorm) simulates S GPUs on
one: sample n belongs to group n mod S, each group is normalised with its own
batch statistics, and the running statistics become the mean over groups of
the per-group updates.  S = 1 is ordinary BatchNorm.  In eval mode both use
the running statistics.

The sums and element-wise passes are the primitives of backends/ops.py, each its
formula; a backend may run a faster equal version of them.
"""

from __future__ import annotations

from backends import get_array_module, ops

BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def batchnorm_forward(x, gamma, beta, running_mean, running_var, training: bool, splits: int = 1):
    """Normalises x per channel (and per group of split BatchNorm).

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
    if not training:  # y = γ·(x − r_μ)/√(r_σ² + ε) + β
        inv_std = 1.0 / xp.sqrt(running_var + BN_EPS)                              # (C,)
        centred, _ = ops.centre(x.reshape(N, 1, H * W, C), running_mean)          # x − r_μ
        x_hat, y = ops.scale_shift_(centred, inv_std, gamma, beta)
        return y.reshape(N, H, W, C), None, ("eval", x_hat, gamma * inv_std)
    if N % splits:
        raise ValueError(f"batch of {N} cannot be split into {splits} BatchNorm groups")
    S, M = splits, (N // splits) * H * W
    groups = x.reshape(N // S, S, H * W, C)      # sample n = a·S + g sits at [a, g]: group g = x[g::S]
    mean = ops.channel_sums(groups) * (1.0 / M)                     # μ, (S, C)
    centred, square_sums = ops.centre(groups, mean)                 # x − μ and Σ (x − μ)²
    var = square_sums * (1.0 / M)                                   # σ² = mean((x − μ)²)
    inv_std = 1.0 / xp.sqrt(var + BN_EPS)                           # 1/√(σ² + ε)
    x_hat, y = ops.scale_shift_(centred, inv_std, gamma, beta)       # x̂ = (x − μ)/√(σ² + ε), y = γ·x̂ + β

    unbiased = var * (M / max(M - 1, 1))
    new_mean = (1.0 - BN_MOMENTUM) * running_mean + BN_MOMENTUM * mean.mean(axis=0)
    new_var = (1.0 - BN_MOMENTUM) * running_var + BN_MOMENTUM * unbiased.mean(axis=0)
    return y.reshape(N, H, W, C), (new_mean, new_var), ("train", x_hat, inv_std, gamma)


def batchnorm_backward(dy, cache):
    """Gradients of :func:`batchnorm_forward`, with g = ∂L/∂y and means over each group's M values:

        ∂L/∂γ = Σ g·x̂      ∂L/∂β = Σ g      ∂L/∂x = γ/√(σ² + ε) · (g − mean(g) − x̂·mean(g·x̂))

    (x̂ depends on x through μ and σ too, hence the two mean terms); in eval mode the statistics are
    constants and ∂L/∂x = g·γ/√(r_σ² + ε).

    Args:
        dy: (N, H, W, C) upstream gradient.
    Returns:
        dx (N, H, W, C), dgamma (C,), dbeta (C,).
    """
    N, H, W, C = dy.shape
    if cache[0] == "eval":
        _, x_hat, scale = cache
        g = dy.reshape(N, 1, H * W, C)
        return dy * scale, ops.channel_sums(g, x_hat)[0], ops.channel_sums(g)[0]
    _, x_hat, inv_std, gamma = cache
    S = x_hat.shape[1]
    M = (N // S) * H * W
    g = dy.reshape(N // S, S, H * W, C)
    g_sum = ops.channel_sums(g)                          # Σ g per group, (S, C)
    gx_sum = ops.channel_sums(g, x_hat)                  # Σ g·x̂ per group, (S, C)
    dx = ops.batchnorm_input_grad(g, x_hat, g_sum * (1.0 / M), gx_sum * (1.0 / M), gamma * inv_std)
    return dx.reshape(N, H, W, C), gx_sum.sum(axis=0), g_sum.sum(axis=0)
