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

Chance: with equal logits L = ln(K+1) and the positive is ranked first with probability 1/(K+1); a run
learns when its loss falls below ln(K+1) (:func:`chance_loss`, :func:`chance_accuracy`).
"""

from __future__ import annotations

import math

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


def cross_entropy_forward(logits, labels):
    """Softmax cross-entropy, the mean over the batch:  L = mean_n ( logsumexp(logits_n) − logits_n,y_n ).

    Args:
        logits: (N, C).  labels: (N,) int in [0, C), on the same backend.
    Returns:
        loss (0-d array), cache for :func:`cross_entropy_backward`.
    """
    xp = get_array_module(logits)
    log_p = log_softmax(logits)  # (N, C)
    loss = -xp.take_along_axis(log_p, labels[:, None], axis=1).mean()
    return loss, (log_p, labels)


def cross_entropy_backward(cache):
    """∂L/∂logits = (softmax(logits) − onehot(y)) / N, (N, C); each row sums to zero."""
    log_p, labels = cache
    xp = get_array_module(log_p)
    N, C = log_p.shape
    one_hot = xp.arange(C)[None, :] == labels[:, None]  # (N, C), no scatter
    return (xp.exp(log_p) - one_hot) * (1.0 / N)


def contrastive_logits(q, k, queue, T: float):
    """[q·k₊, q·queue] / T: (N, D), (N, D), (K, D) -> (N, 1 + K), the positive in column 0."""
    xp = get_array_module(q)
    l_pos = (q * k).sum(axis=1, keepdims=True)  # (N, 1)
    l_neg = q @ queue.T  # (N, K)
    return xp.concatenate([l_pos, l_neg], axis=1) * (1.0 / T)


def info_nce_forward(q, k, queue, T: float):
    """The InfoNCE loss: cross-entropy of the contrastive logits with every label 0 (the positive).

    Args:
        q: (N, D) unit-norm queries; k: (N, D) unit-norm positive keys;
        queue: (K, D) unit-norm negative keys, one per row; T: temperature.
    Returns:
        loss (0-d array on the backend), logits (N, 1 + K), cache for :func:`info_nce_backward`.
    """
    xp = get_array_module(q)
    logits = contrastive_logits(q, k, queue, T)
    loss, ce_cache = cross_entropy_forward(logits, xp.zeros(q.shape[0], dtype=xp.int64))
    return loss, logits, (q, k, queue, T, ce_cache)


def info_nce_backward(cache):
    """(∂L/∂q, ∂L/∂k), both (N, D), through logits = [q·k₊, q·queue]/T:

    ∂L/∂q = (∂L/∂logits₀ · k₊ + ∂L/∂logits₁..K · queue) / T        ∂L/∂k₊ = ∂L/∂logits₀ · q / T
    """
    q, k, queue, T, ce_cache = cache
    d_logits = cross_entropy_backward(ce_cache) * (1.0 / T)  # (N, 1 + K), the 1/T chained in
    dq = d_logits[:, :1] * k + d_logits[:, 1:] @ queue  # (N, D)
    dk = d_logits[:, :1] * q  # (N, D)
    return dq, dk


def info_nce(q, k, queue, T: float):
    """InfoNCE loss and its gradients in one call: returns (loss, ∂L/∂q, ∂L/∂k)."""
    loss, _, cache = info_nce_forward(q, k, queue, T)
    dq, dk = info_nce_backward(cache)
    return loss, dq, dk


def chance_loss(K: int, terms: int = 1) -> float:
    """InfoNCE at chance, ln(K+1) per term: the loss when the K+1 logits are equal (the positive stands out from
    no negative).  ``terms``: the loss terms summed (2 for the symmetric loss).  A run whose loss stays there
    has not learned."""
    return terms * math.log(K + 1)


def chance_accuracy(K: int) -> float:
    """The (K+1)-way instance accuracy at chance, 1/(K+1), as a fraction."""
    return 1.0 / (K + 1)


def instance_accuracy(logits):
    """Fraction of rows whose largest logit is the positive (column 0): (K+1)-way top-1, 0-d array."""
    return (logits.argmax(axis=1) == 0).mean()
