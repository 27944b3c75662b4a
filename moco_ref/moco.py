"""MoCo: the query encoder, the momentum key encoder, the queue, and one training step.

The step follows the paper's Algorithm 1 and the official builder, in order:

    q = normalize(f_q(x_q))                       # queries, (N, D)
    θ_k ← m·θ_k + (1 − m)·θ_q                     # momentum update, before the keys
    x_k, unshuffle = batch_shuffle(x_k)           # shuffle BN
    k = batch_unshuffle(normalize(f_k(x_k)))      # keys, (N, D), no gradient
    logits = [q·k, q·queue] / T                   # (N, 1 + K), positive first
    loss = cross_entropy(logits, labels = 0)      # InfoNCE
    backward through normalize and f_q; SGD step on θ_q
    enqueue(k)                                    # after the logits: never its own negative

Symmetric mode (the CIFAR demo's option): loss = L(x₁, x₂) + L(x₂, x₁), both
key sets enqueued (k₁ then k₂), one momentum update per step.
"""

from __future__ import annotations

import copy

import numpy as np

from backends import get_backend
from moco_ref.loss import info_nce_backward, info_nce_forward, instance_accuracy, normalize_backward, normalize_forward
from moco_ref.models import build_encoder
from moco_ref.momentum import momentum_update_
from moco_ref.optim import SGD
from moco_ref.queue import KeyQueue
from moco_ref.shuffle import batch_shuffle, batch_unshuffle


class MoCo:
    """MoCo v1/v2 with its own SGD optimiser.

    Args (the official names): arch, width, dim (feature dimension), K (queue size),
    m (key-encoder momentum), T (temperature), mlp (v2 head), symmetric (CIFAR demo loss),
    bn_splits (split BatchNorm groups, 1 = plain), lr, momentum, weight_decay, nesterov
    (SGD), backend, seed (weights, queue and shuffles all derive from it), dtype.
    """

    def __init__(self, arch="resnet18", width=64, dim=128, K=4096, m=0.99, T=0.1, mlp=False,
                 symmetric=False, bn_splits=8, lr=0.06, momentum=0.9, weight_decay=5e-4,
                 nesterov=False, backend="numpy", seed=0, dtype="float32"):
        self.backend = get_backend(backend)
        self.K, self.m, self.T, self.symmetric = K, m, T, symmetric
        self.encoder_q = build_encoder(arch, dim=dim, width=width, mlp=mlp, bn_splits=bn_splits,
                                       backend=self.backend, seed=seed, dtype=dtype)
        # The key encoder starts as an exact copy (its own arrays, never shared).
        self.encoder_k = copy.copy(self.encoder_q)
        self.encoder_k.params = {n: p.copy() for n, p in self.encoder_q.params.items()}
        self.encoder_k.buffers = {n: b.copy() for n, b in self.encoder_q.buffers.items()}
        self.queue = KeyQueue(K, dim, backend=self.backend, seed=seed + 1, dtype=dtype)
        self.optimizer = SGD(self.encoder_q.params, lr, momentum, weight_decay, nesterov)
        self.shuffle_rng = np.random.default_rng(seed + 2)

    @property
    def lr(self) -> float:
        return self.optimizer.lr

    @lr.setter
    def lr(self, value: float) -> None:
        self.optimizer.lr = value

    # ------------------------------------------------------------------ the step
    def step(self, x_q, x_k) -> dict:
        """One training step on two views of a batch.

        Args:
            x_q, x_k: (N, 3, H, W) images on the backend, two augmentations of the same N images.
        Returns:
            {"loss": 0-d array, "acc1": 0-d array}: the InfoNCE loss (summed over both
            directions in symmetric mode) and the (K+1)-way instance accuracy.  They stay
            on the device; convert with ``float()`` only when logging.
        """
        momentum_update_(self.encoder_k.params, self.encoder_q.params, self.m)
        if self.symmetric:
            loss_12, acc_12, grads, k2 = self._contrastive(x_q, x_k)
            loss_21, acc_21, grads_21, k1 = self._contrastive(x_k, x_q)
            for name in grads:
                grads[name] += grads_21[name]
            loss, acc, keys = loss_12 + loss_21, (acc_12 + acc_21) * 0.5, (k1, k2)
        else:
            loss, acc, grads, k = self._contrastive(x_q, x_k)
            keys = (k,)
        self.optimizer.step_(grads)
        for k in keys:
            self.queue.enqueue(k)
        return {"loss": loss, "acc1": acc}

    def _contrastive(self, x_q, x_k):
        """Loss, accuracy, query-encoder gradients and keys for queries x_q against keys of x_k."""
        q, q_cache = normalize_forward(self.encoder_q.forward(x_q, training=True))   # (N, D)
        k = self.encode_keys(x_k)                                                      # (N, D)
        loss, logits, loss_cache = info_nce_forward(q, k, self.queue.keys, self.T)
        dq, _ = info_nce_backward(loss_cache)          # the keys get no gradient
        grads = self.encoder_q.backward(normalize_backward(dq, q_cache))
        return loss, instance_accuracy(logits), grads, k

    def encode_keys(self, x_k):
        """k = unshuffle(normalize(f_k(shuffle(x_k)))): (N, 3, H, W) -> (N, D), training-mode BN."""
        x_shuffled, index_unshuffle = batch_shuffle(x_k, self.shuffle_rng)
        k, _ = normalize_forward(self.encoder_k.forward(x_shuffled, training=True, keep_cache=False))
        return batch_unshuffle(k, index_unshuffle)

    # ----------------------------------------------------------------- the state
    def state_dict(self) -> dict:
        """The official names: ``encoder_q.*``, ``encoder_k.*``, ``queue`` (D, K), ``queue_ptr``."""
        state = {f"encoder_q.{n}": a for n, a in self.encoder_q.state_dict().items()}
        state.update({f"encoder_k.{n}": a for n, a in self.encoder_k.state_dict().items()})
        state.update(self.queue.state_dict())
        return state

    def load_state_dict(self, state: dict) -> None:
        for prefix, encoder in (("encoder_q.", self.encoder_q), ("encoder_k.", self.encoder_k)):
            encoder.load_state_dict({n[len(prefix):]: a for n, a in state.items() if n.startswith(prefix)})
        self.optimizer.params = self.encoder_q.params  # load replaced the arrays
        self.queue.load_state_dict(state)
