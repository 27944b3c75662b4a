"""Batch normalisation over channels, with MoCo's split ("shuffle") variant.

Notation: x is (N, H, W, C) channels last; statistics are per channel over
the M = N·H·W values of that channel (or, with S splits, over the M = N/S·H·W
values of each group).

Training forward, per channel (and per group):

    μ = mean(x)    σ² = mean((x − μ)²)    x̂ = (x − μ)/√(σ² + ε)    y = γ·x̂ + β

A BasicBlock's residual add and the ReLUs that follow a BatchNorm are folded into its output
(y = relu(γ·x̂ + β + shortcut)), so that each is one pass over memory on a fast path; the cache keeps
x and the ReLU's mask 1[y > 0] (one byte a value), and the backward recomputes x̂ from x.

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


def batchnorm_forward(
    x, gamma, beta, running_mean, running_var, training: bool, splits: int = 1, residual=None, relu: bool = False
):
    """Normalises x per channel (and per group of split BatchNorm); optionally adds a residual and
    applies the ReLU that follows (a BasicBlock's relu(bn2(·) + shortcut)): y = relu?(γ·x̂ + β + residual).

    Args:
        x: (N, H, W, C).
        gamma, beta: (C,) scale and shift.
        running_mean, running_var: (C,) running statistics (read, never written).
        training: batch statistics (True) or running statistics (False).
        splits: S, the number of interleaved groups normalised separately (training only).
        residual: (N, H, W, C) added after the affine step, or None.
        relu: apply max(·, 0) last.
    Returns:
        y (N, H, W, C), (new_running_mean, new_running_var) or None in eval mode, cache.
    """
    xp = get_array_module(x)
    N, H, W, C = x.shape
    if not training:  # y = relu?(γ·(x − r_μ)/√(r_σ² + ε) + β + residual)
        inv_std = 1.0 / xp.sqrt(running_var + BN_EPS)  # (C,)
        samples = x.reshape(N, 1, H * W, C)
        r = None if residual is None else residual.reshape(samples.shape)
        y, mask = ops.batchnorm_output(samples, running_mean, inv_std, gamma, beta, r, relu)
        return y.reshape(N, H, W, C), None, ("eval", samples, running_mean, inv_std, gamma, mask)
    if N % splits:
        raise ValueError(f"batch of {N} cannot be split into {splits} BatchNorm groups")
    S, M = splits, (N // splits) * H * W
    groups = x.reshape(N // S, S, H * W, C)  # sample n = a·S + g sits at [a, g]: group g = x[g::S]
    mean, var = ops.channel_moments(groups)  # μ, σ² = mean((x − μ)²), (S, C)
    inv_std = 1.0 / xp.sqrt(var + BN_EPS)  # 1/√(σ² + ε)
    r = None if residual is None else residual.reshape(groups.shape)
    y, mask = ops.batchnorm_output(groups, mean, inv_std, gamma, beta, r, relu)  # relu?(γ·(x − μ)/√(σ² + ε) + β + r)

    unbiased = var * (M / max(M - 1, 1))
    new_mean = (1.0 - BN_MOMENTUM) * running_mean + BN_MOMENTUM * mean.mean(axis=0)
    new_var = (1.0 - BN_MOMENTUM) * running_var + BN_MOMENTUM * unbiased.mean(axis=0)
    return y.reshape(N, H, W, C), (new_mean, new_var), ("train", groups, mean, inv_std, gamma, mask)


def batchnorm_backward(dy, cache):
    """Gradients of :func:`batchnorm_forward`, with g = ∂L/∂y · 1[y > 0] (just ∂L/∂y without the ReLU)
    and means over each group's M values:

        ∂L/∂γ = Σ g·x̂      ∂L/∂β = Σ g      ∂L/∂x = γ/√(σ² + ε) · (g − mean(g) − x̂·mean(g·x̂))
        ∂L/∂residual = g

    (x̂ depends on x through μ and σ too, hence the two mean terms); in eval mode the statistics are
    constants and ∂L/∂x = g·γ/√(r_σ² + ε).  x̂ = (x − μ)/√(σ² + ε) is recomputed from the cached x.

    Args:
        dy: (N, H, W, C) upstream gradient.
    Returns:
        dx (N, H, W, C), dgamma (C,), dbeta (C,), g (N, H, W, C): the gradient of the residual
        (use it only when the forward had one).
    """
    N, H, W, C = dy.shape
    mode, x, mean, inv_std, gamma, mask = cache
    g = dy if mask is None else ops.relu_backward(dy, mask.reshape(dy.shape))
    groups = g.reshape(x.shape)
    g_sum, gx_sum = ops.batchnorm_grad_sums(groups, x, mean, inv_std)  # Σ g, Σ g·x̂ per group, (S, C)
    if mode == "eval":
        return g * (gamma * inv_std), gx_sum[0], g_sum[0], g
    M = x.shape[0] * H * W
    dx = ops.batchnorm_input_grad(groups, x, mean, inv_std, g_sum * (1.0 / M), gx_sum * (1.0 / M), gamma * inv_std)
    return dx.reshape(N, H, W, C), gx_sum.sum(axis=0), g_sum.sum(axis=0), g
