"""MoCo: the query encoder, the momentum key encoder, the queue, and one training step.

The step is the paper's Algorithm 1 and the official builder, in order:

    θ_k ← m·θ_k + (1 − m)·θ_q                     # momentum update, before the keys
    q = normalize(f_q(x_q))                       # queries, (N, D)
    k = unshuffle(normalize(f_k(shuffle(x_k))))   # keys, (N, D), no gradient; shuffle BN
    logits = [q·k, q·queue] / T                   # (N, 1 + K), positive first
    loss = cross_entropy(logits, labels = 0)      # InfoNCE
    backward through normalize and f_q; SGD step on θ_q
    enqueue(k)                                    # after the logits: never its own negative

Symmetric mode (the CIFAR demo's option): the same for both directions,
loss = L(x₁, x₂) + L(x₂, x₁), both key sets enqueued, one momentum update per step.

Data parallel (``comm`` with W processes, moco_ref/parallel/communicator.py): each process holds n = N/W
of the batch's samples (shuffle.py says which) and computes its queries and loss on them; the keys
are shuffled across all processes; the gradients, summed over processes and divided by W, are the
gradient of the whole batch's mean loss, and the BatchNorm running statistics are averaged the same
way (as split BatchNorm averages its groups); every process enqueues the whole batch's keys.  So the
parameters and the queue stay identical everywhere, and W processes compute what one process
computes with ``bn_splits = W``.
"""

from __future__ import annotations

import numpy as np

from backends import get_backend
from moco_ref.loss import (
    info_nce_backward,
    info_nce_forward,
    instance_accuracy,
    normalize_backward,
    normalize_forward,
)
from moco_ref.models import build_encoder
from moco_ref.momentum import momentum_update_
from moco_ref.optim import SGD
from moco_ref.parallel.communicator import SingleProcess
from moco_ref.queue import KeyQueue
from moco_ref.shuffle import (
    batch_shuffle,
    batch_unshuffle,
    concat_all_gather,
    local_share,
)


class MoCo:
    """MoCo v1/v2 with its own SGD optimiser.

    Args (the official names): arch, width, dim (feature dimension), K (queue size),
    m (key-encoder momentum), T (temperature), mlp (v2 head), symmetric (CIFAR demo loss),
    bn_splits (split BatchNorm groups per process, 1 = plain), shuffle_bn (shuffle the keys across
    the BatchNorm groups; False keeps every key in its query's group: the paper's control), lr, momentum, weight_decay,
    nesterov (SGD), backend, seed (weights, queue and shuffles all derive from it), dtype,
    comm (the communicator; default: a single process).
    """

    def __init__(
        self,
        arch="resnet18",
        width=64,
        dim=128,
        K=4096,
        m=0.99,
        T=0.1,
        mlp=False,
        symmetric=False,
        bn_splits=8,
        shuffle_bn=True,
        lr=0.06,
        momentum=0.9,
        weight_decay=5e-4,
        nesterov=False,
        backend="numpy",
        seed=0,
        dtype="float32",
        comm=None,
    ):
        self.backend = get_backend(backend)
        self.comm = comm or SingleProcess()
        self.K, self.m, self.T, self.symmetric, self.shuffle_bn = K, m, T, symmetric, shuffle_bn
        self.encoder_q = build_encoder(
            arch, dim=dim, width=width, mlp=mlp, bn_splits=bn_splits, backend=self.backend, seed=seed, dtype=dtype
        )
        self.encoder_k = self.encoder_q.copy()  # starts equal; its own arrays, never shared
        self.queue = KeyQueue(K, dim, backend=self.backend, seed=seed + 1, dtype=dtype)
        self.optimizer = SGD(self.encoder_q.params, lr, momentum, weight_decay, nesterov)
        self.shuffle_rng = np.random.default_rng(seed + 2)

    # ------------------------------------------------------------------ the step
    def step(self, x_q, x_k, m: float | None = None, lr: float | None = None) -> dict:
        """One training step (Algorithm 1) on two views of a batch.

        Args:
            x_q, x_k: (n, 3, H, W) images on the backend, two augmentations of the same n images
                (with W processes, this process's share of the batch).
            m: this step's key-encoder momentum (a schedule's value; default: the model's ``m``).
            lr: this step's learning rate (the epoch's; default: the one the model was built with).
        Returns:
            {"loss": 0-d array, "acc1": 0-d array}: this process's InfoNCE loss (summed over both
            directions in symmetric mode) and (K+1)-way instance accuracy.  They stay on the
            device; convert with ``float()`` only when logging.
        """
        m = self.m if m is None else m
        momentum_update_(self.encoder_k.params, self.encoder_q.params, m)  # θ_k ← m·θ_k + (1 − m)·θ_q
        directions = ((x_q, x_k), (x_k, x_q)) if self.symmetric else ((x_q, x_k),)
        grads: dict = {}  # Σ over directions
        loss, acc, keys = 0.0, 0.0, []
        for x_1, x_2 in directions:
            out, cache, self.encoder_q.buffers = self.encoder_q.forward(x_1, training=True)
            q, norm_cache = normalize_forward(out)  # queries, (n, D)
            k, k_all = self.encode_keys(x_2)  # keys, (n, D) and (N, D)
            l, logits, nce_cache = info_nce_forward(q, k, self.queue.keys, self.T)
            dq, _ = info_nce_backward(nce_cache)  # the keys get no gradient
            g = self.encoder_q.backward(normalize_backward(dq, norm_cache), cache)
            grads = {name: grads[name] + g[name] for name in grads} if grads else g
            loss, acc = loss + l, acc + instance_accuracy(logits) * (1.0 / len(directions))
            keys.append(k_all)
        self._average_over_processes_(grads)
        self.optimizer.step_(grads, lr)
        for k_all in reversed(keys):  # as the demo's torch.cat([k1, k2]): the keys of x_q (2nd direction) first
            self.queue.enqueue(k_all)
        return {"loss": loss, "acc1": acc}

    def encode_keys(self, x_k):
        """k = unshuffle(normalize(f_k(shuffle(x_k)))), training-mode BN, no gradient; without shuffle BN,
        k = normalize(f_k(x_k)), every key normalised in its query's BatchNorm group.

        Returns:
            (this process's keys (n, D), the whole batch's keys (N, D)); the same array with one process.
        """
        if not self.shuffle_bn:
            out, _, self.encoder_k.buffers = self.encoder_k.forward(x_k, training=True, keep_cache=False)
            k = normalize_forward(out)[0]
            return k, concat_all_gather(k, self.comm)
        x_shuffled, index_unshuffle = batch_shuffle(x_k, self.shuffle_rng, self.comm)
        out, _, self.encoder_k.buffers = self.encoder_k.forward(x_shuffled, training=True, keep_cache=False)
        k_all = batch_unshuffle(normalize_forward(out)[0], index_unshuffle, self.comm)
        return local_share(k_all, self.comm), k_all

    def _average_over_processes_(self, grads: dict) -> None:
        """Gradients and both encoders' running statistics become their means over the processes, in
        one collective (with one process they are left as they are).  (The integer batch counters are
        equal everywhere already.)"""
        floats = [
            b for encoder in (self.encoder_q, self.encoder_k) for b in encoder.buffers.values() if b.dtype.kind == "f"
        ]
        self.comm.average_(list(grads.values()) + floats)

    # ----------------------------------------------------------------- the state
    @property
    def queue_ptr(self) -> int:
        """The queue's write pointer: the slot the next key goes to (its oldest key)."""
        return self.queue.ptr

    def state_dict(self) -> dict:
        """Everything a step reads and changes, by the names of its owners (the arrays themselves, not copies):

        encoder_q.<name>, encoder_k.<name>   both encoders (the official names: PyTorch's)
        queue (D, K), queue_ptr (1,)         the key queue, the official form
        optimizer                            the SGD optimiser's own state_dict (its momentum buffers)
        shuffle_rng                          the shuffle generator's bit_generator state (a JSON-able dict)
        """
        state = {f"encoder_q.{n}": a for n, a in self.encoder_q.state_dict().items()}
        state.update({f"encoder_k.{n}": a for n, a in self.encoder_k.state_dict().items()})
        state.update(self.queue.state_dict())
        state["optimizer"] = self.optimizer.state_dict()
        state["shuffle_rng"] = self.shuffle_rng.bit_generator.state
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restores what :meth:`state_dict` gave (host or device arrays); KeyError or ValueError where the state
        is not of this model."""
        for prefix, encoder in (("encoder_q.", self.encoder_q), ("encoder_k.", self.encoder_k)):
            encoder.load_state_dict({n[len(prefix) :]: a for n, a in state.items() if n.startswith(prefix)})
        self.optimizer.params = self.encoder_q.params  # load replaced the arrays
        self.queue.load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"], self.backend.to_device)
        self.shuffle_rng.bit_generator.state = state["shuffle_rng"]
