"""The paper's Algorithm 1, one line at a time, on a toy batch.

MoCo (He et al., "Momentum Contrast for Unsupervised Visual Representation
Learning", CVPR 2020) gives its training loop as PyTorch-like pseudo-code,
Algorithm 1; the tutorial this project started from (not part of the repository) walks
through it line by line.  This script runs each line with the pieces of
moco_ref and prints every quantity with its shape and meaning:

    f_k.params = f_q.params                       # initialize
    for x in loader:                              # a minibatch x of N samples
        x_q = aug(x); x_k = aug(x)                # two random augmentations
        q = f_q.forward(x_q)                      # queries: N×C
        k = f_k.forward(x_k); k = k.detach()      # keys: N×C, no gradient
        l_pos = bmm(q.view(N,1,C), k.view(N,C,1)) # positive logits: N×1
        l_neg = mm(q.view(N,C), queue.view(C,K))  # negative logits: N×K
        logits = cat([l_pos, l_neg], dim=1)       # N×(1+K)
        labels = zeros(N)                         # positives are the 0-th
        loss = CrossEntropyLoss(logits/t, labels) # InfoNCE, eq. (1)
        loss.backward(); update(f_q.params)       # SGD update: query network
        f_k.params = m*f_k.params+(1-m)*f_q.params  # momentum update: key network
        enqueue(queue, k); dequeue(queue)         # update the dictionary

C in the paper is the feature dimension, D here.  q and k are L2-normalised
(the official code does it; the pseudo-code leaves it implicit).  At the end,
one ``MoCo.step`` on the same batch does all of it.

Sizes are toys (ResNet-10 of width 4, N = 8, K = 32, D = 16, 16×16 random
images), so the script runs in a second or two on a CPU::

    python examples/algorithm1.py
"""

from __future__ import annotations

import numpy as np

from moco_ref.loss import (
    info_nce_backward,
    info_nce_forward,
    instance_accuracy,
    log_softmax,
    normalize_backward,
    normalize_forward,
)
from moco_ref.moco import MoCo
from moco_ref.models import build_encoder
from moco_ref.momentum import momentum_update_
from moco_ref.optim import SGD
from moco_ref.queue import KeyQueue

N, K, D, SIZE = 8, 32, 16, 16  # batch, queue length, feature dimension (the paper's C), image side
ARCH, WIDTH = "resnet10", 4
m, T = 0.99, 0.07  # momentum and temperature (the paper's m and t)
LR, SGD_MOMENTUM, WEIGHT_DECAY = 0.03, 0.9, 1e-4
SEED = 0


def show(name: str, value, meaning: str) -> None:
    """Prints one quantity: name, shape (or value, for a scalar) and what it is."""
    value = np.asarray(value)
    described = f"= {float(value):.6g}" if value.ndim == 0 else str(tuple(value.shape))
    print(f"    {name:<12} {described:<18} {meaning}")


def line(code: str) -> None:
    """Prints one line of Algorithm 1."""
    print(f"\n>>> {code}")


def aug(x, rng):
    """A toy augmentation: a random horizontal flip per image, then Gaussian noise (σ = 0.1)."""
    flip = rng.random(x.shape[0]) < 0.5
    out = np.where(flip[:, None, None, None], x[..., ::-1], x)  # (N, 3, H, W)
    return out + 0.1 * rng.standard_normal(x.shape)


def max_difference(a: dict, b: dict) -> float:
    return max(float(np.abs(a[name] - b[name]).max()) for name in a)


def main() -> None:
    rng = np.random.default_rng(SEED + 10)  # images and augmentations
    print(f"MoCo Algorithm 1 on a toy batch: {ARCH} width {WIDTH}, N={N}, K={K}, D={D}, m={m}, T={T}")

    # ------------------------------------------------------------- the set-up
    line("f_q, f_k: encoder networks for query and key")
    f_q = build_encoder(ARCH, dim=D, width=WIDTH, bn_splits=1, seed=SEED, dtype="float64")
    f_k = build_encoder(ARCH, dim=D, width=WIDTH, bn_splits=1, seed=SEED + 100, dtype="float64")
    show("f_q.params", len(f_q.params), "parameter arrays of the query encoder (trained by SGD)")
    show("f_k.params", len(f_k.params), "parameter arrays of the key encoder (never gets gradients)")

    line("f_k.params = f_q.params  # initialize")
    f_k.load_state_dict(f_q.state_dict())  # copies every array: f_k owns its weights
    show("|θ_k − θ_q|", max_difference(f_k.params, f_q.params), "largest difference: f_k starts as an exact copy")

    line("queue: dictionary as a queue of K keys (C×K)")
    queue = KeyQueue(K, D, seed=SEED + 1, dtype="float64")
    show("queue", queue.state_dict()["queue"], "C×K, one unit-norm key per column (random at the start)")
    show("queue_ptr", queue.ptr, "the next slot to overwrite = the oldest key")
    optimizer = SGD(f_q.params, LR, SGD_MOMENTUM, WEIGHT_DECAY)

    # ------------------------------------------------------------- one iteration
    line("for x in loader:  # load a minibatch x with N samples")
    x = rng.random((N, 3, SIZE, SIZE))
    show("x", x, "N random RGB images, NCHW")

    line("x_q = aug(x)  # a randomly augmented version")
    x_q = aug(x, rng)
    show("x_q", x_q, "query view: random flip + noise")
    line("x_k = aug(x)  # another randomly augmented version")
    x_k = aug(x, rng)
    show("x_k", x_k, "key view: the same images, augmented independently (the positive pairs)")

    line("q = f_q.forward(x_q)  # queries: N×C")
    out, f_q_cache, f_q.buffers = f_q.forward(x_q, training=True)  # forward, its cache, new BN statistics
    q, q_cache = normalize_forward(out)  # (N, D)
    show("q", q, "queries, L2-normalised along C")

    line("k = f_k.forward(x_k)  # keys: N×C")
    out, _, f_k.buffers = f_k.forward(x_k, training=True, keep_cache=False)
    k, _ = normalize_forward(out)  # (N, D)
    show("k", k, "keys, L2-normalised; MoCo.step also shuffles the batch around f_k (shuffle BN)")
    line("k = k.detach()  # no gradient to keys")
    print("    (nothing to do: moco_ref has no autograd, and the backward below never reaches f_k)")

    line("l_pos = bmm(q.view(N,1,C), k.view(N,C,1))  # positive logits: N×1")
    l_pos = (q.reshape(N, 1, D) @ k.reshape(N, D, 1)).reshape(N, 1)  # (N, 1)
    show("l_pos", l_pos, "q_n·k_n, cosine similarity of each query with its own key")

    line("l_neg = mm(q.view(N,C), queue.view(C,K))  # negative logits: N×K")
    l_neg = q @ queue.state_dict()["queue"]  # (N, D) @ (D, K) -> (N, K)
    show("l_neg", l_neg, "q_n·queue_j, similarity with every key of the dictionary")

    line("logits = cat([l_pos, l_neg], dim=1)  # logits: Nx(1+K)")
    logits = np.concatenate([l_pos, l_neg], axis=1)  # (N, 1 + K)
    show("logits", logits, "the positive in column 0, then the K negatives")

    line("labels = zeros(N)  # positives are the 0-th")
    labels = np.zeros(N, dtype=np.int64)
    show("labels", labels, "the class of every query is 0: a (K+1)-way classification")

    line("loss = CrossEntropyLoss(logits/t, labels)  # contrastive loss, Eqn. (1)")
    loss = -log_softmax(logits / T)[np.arange(N), labels].mean()
    show("loss", loss, f"InfoNCE; a random guess scores log(K+1) = {np.log(K + 1):.4f}")
    loss_ref, logits_ref, loss_cache = info_nce_forward(q, k, queue.keys, T)
    show("info_nce", loss_ref, "the same loss from moco_ref.loss.info_nce_forward(q, k, queue, T)")
    show("acc@1", instance_accuracy(logits_ref), "fraction of queries whose own key scores highest")

    line("loss.backward()  # SGD update: query network")
    dq, _ = info_nce_backward(loss_cache)  # ∂L/∂q = ((P − Y)/N)·[k, queue] / T; ∂L/∂k is dropped
    grads = f_q.backward(normalize_backward(dq, q_cache), f_q_cache)
    show("∂L/∂q", dq, "gradient with respect to the normalised queries")
    show("grads", len(grads), "gradient arrays, one per parameter of f_q")

    line("update(f_q.params)")
    before = {name: p.copy() for name, p in f_q.params.items()}
    optimizer.step_(grads)  # SGD, momentum 0.9, weight decay
    show("|Δθ_q|", max_difference(f_q.params, before), "largest change of a query parameter")

    line("f_k.params = m*f_k.params+(1-m)*f_q.params  # momentum update: key network")
    show("|θ_k − θ_q|", max_difference(f_k.params, f_q.params), "before: f_k still holds the initial weights")
    momentum_update_(f_k.params, f_q.params, m)
    show("|θ_k − θ_q|", max_difference(f_k.params, f_q.params), f"after: m = {m} shrinks the gap by a factor m")

    line("enqueue(queue, k); dequeue(queue)  # update dictionary")
    queue.enqueue(k)  # writes k over the N oldest keys: enqueue and dequeue at once
    show("queue_ptr", queue.ptr, "advanced by N (mod K)")
    newest = queue.ordered()[-N:]
    show("|newest − k|", np.abs(newest - k).max(), "the N newest keys of the queue are this batch's k")

    # ------------------------------------------------------------- all at once
    line("model.step(x_q, x_k)  # MoCo.step: the whole iteration in one call")
    model = MoCo(
        arch=ARCH,
        width=WIDTH,
        dim=D,
        K=K,
        m=m,
        T=T,
        bn_splits=1,
        lr=LR,
        momentum=SGD_MOMENTUM,
        weight_decay=WEIGHT_DECAY,
        seed=SEED,
        dtype="float64",
    )  # same seeds: same f_q and queue
    out = model.step(x_q, x_k)
    show("loss", out["loss"], "the loss MoCo.step returns")
    show("|Δ loss|", abs(float(out["loss"]) - float(loss)), "against the loss by hand (rounding only)")
    show("|Δ θ_q|", max_difference(model.encoder_q.params, f_q.params), "encoder_q against f_q after SGD")
    show("|Δ queue|", np.abs(model.queue.ordered() - queue.ordered()).max(), "queue against the queue by hand")
    # MoCo.step, like the official code, runs the momentum update at the START of a step, with the θ_q
    # of the previous SGD step; the paper runs it at the end.  The keys of every step are the same
    # either way; only the moment differs, so right after one step encoder_k still holds θ_k⁰ ...
    show("|θ_k − θ_k⁰|", max_difference(model.encoder_k.params, before), "encoder_k after one step: not updated yet")
    caught_up = {name: p.copy() for name, p in model.encoder_k.params.items()}
    momentum_update_(caught_up, model.encoder_q.params, m)  # ... until the next step begins
    show("|Δ θ_k|", max_difference(caught_up, f_k.params), "after the next step's momentum update: f_k")


if __name__ == "__main__":
    main()
