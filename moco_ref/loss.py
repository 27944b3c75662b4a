"""L2 normalisation, the temperature softmax and the InfoNCE loss, with their gradients.

Notation: N queries, D feature dimension, K keys in the queue, T temperature.

InfoNCE (the paper's eq. 1), for unit vectors q (N, D), positive keys k₊ (N, D)
and the queue of negatives (K, D):

    logits = [q·k₊, q·queue₁, …, q·queue_K] / T        # (N, 1 + K), positive in column 0
    L = mean_n ( logsumexp(logits_n) − logits_n0 )     # cross-entropy with every label 0

Gradient: with P = softmax(logits) row-wise and Y the one-hot of column 0,

    ∂L/∂logits = (P − Y) / N          (each row sums to zero)
    ∂L/∂q = (∂L/∂logits₀ · k₊ + ∂L/∂logits₁..K · queue) / T
    ∂L/∂k₊ = ∂L/∂logits₀ · q / T

L2 normalisation y = x/‖x‖ has the Jacobian (I − y·yᵀ)/‖x‖, so
∂L/∂x = (g − y·(y·g)) / ‖x‖ for the upstream gradient g.
"""

from __future__ import annotations

from backends import get_array_module

NORMALIZE_EPS = 1e-12  # as torch.nn.functional.normalize


def normalize_forward(x):
    """y = x / max(‖x‖, eps) along the last axis; (N, D) -> (N, D), cache."""
    xp = get_array_module(x)
    norm = xp.sqrt((x * x).sum(axis=-1, keepdims=True))
    norm = xp.maximum(norm, NORMALIZE_EPS)
    y = x / norm
    return y, (y, norm)


def normalize_backward(dy, cache):
    """∂L/∂x = (g − y·(y·g)) / ‖x‖ (rows whose norm fell below eps are treated as constant-norm)."""
    y, norm = cache
    return (dy - y * (y * dy).sum(axis=-1, keepdims=True)) / norm


def log_softmax(logits):
    """log softmax over the last axis, stable for any finite logits (max subtracted first)."""
    xp = get_array_module(logits)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(logits, T: float = 1.0):
    """Temperature softmax over the last axis: exp(zᵢ/T) / Σⱼ exp(zⱼ/T).

    Small T sharpens toward the one-hot argmax, large T flattens toward uniform.
    Stable for any finite logits (the row maximum is subtracted before exp).
    """
    xp = get_array_module(logits)
    scaled = logits * (1.0 / T)
    shifted = scaled - scaled.max(axis=-1, keepdims=True)
    e = xp.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def contrastive_logits(q, k, queue, T: float):
    """[q·k₊, q·queue] / T: (N, D), (N, D), (K, D) -> (N, 1 + K), the positive in column 0."""
    xp = get_array_module(q)
    l_pos = (q * k).sum(axis=1, keepdims=True)            # (N, 1)
    l_neg = q @ queue.T                                   # (N, K)
    return xp.concatenate([l_pos, l_neg], axis=1) * (1.0 / T)


def info_nce_forward(q, k, queue, T: float):
    """The InfoNCE loss.

    Args:
        q: (N, D) unit-norm queries; k: (N, D) unit-norm positive keys;
        queue: (K, D) unit-norm negative keys, one per row; T: temperature.
    Returns:
        loss (0-d array on the backend), logits (N, 1 + K), cache for :func:`info_nce_backward`.
    """
    logits = contrastive_logits(q, k, queue, T)
    log_p = log_softmax(logits)
    loss = -log_p[:, 0].mean()
    return loss, logits, (q, k, queue, T, log_p)


def info_nce_backward(cache):
    """Returns (∂L/∂q, ∂L/∂k), both (N, D); see the module docstring for the formulas."""
    q, k, queue, T, log_p = cache
    xp = get_array_module(q)
    N = q.shape[0]
    d_logits = xp.exp(log_p)                             # P, (N, 1 + K)
    d_logits[:, 0] -= 1.0                                # P − Y
    d_logits *= 1.0 / (N * T)                            # chain through the mean and the 1/T
    dq = d_logits[:, :1] * k + d_logits[:, 1:] @ queue   # (N, D)
    dk = d_logits[:, :1] * q                             # (N, D)
    return dq, dk


def info_nce(q, k, queue, T: float):
    """InfoNCE loss and its gradients in one call: returns (loss, ∂L/∂q, ∂L/∂k)."""
    loss, _, cache = info_nce_forward(q, k, queue, T)
    dq, dk = info_nce_backward(cache)
    return loss, dq, dk


def instance_accuracy(logits):
    """Fraction of rows whose largest logit is the positive (column 0): (K+1)-way top-1, 0-d array."""
    return (logits.argmax(axis=1) == 0).mean()
