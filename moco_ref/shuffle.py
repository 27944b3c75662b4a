"""Shuffle BN: gather the key batch, permute it, encode a slice per process, gather and unshuffle.

With several processes (GPUs), the official code gathers the key images from all of them, permutes
the whole batch with one random permutation (broadcast from rank 0), lets each process encode its
slice of the permuted batch (so each BatchNorm sees a random mix of samples), gathers the keys and
un-permutes them.  This prevents BatchNorm statistics from leaking which key is the positive of
which query.  On one process the same functions reduce to the permutation alone, and split
BatchNorm (``bn_splits``) stands in for the per-process statistics.

Which samples a process holds.  Of a global batch of N = W·n samples, process r holds samples
r, r + W, r + 2W, … (``batch[r::W]``).  That is exactly group r of split BatchNorm with S = W
(sample i is in group i mod S), so W processes with plain BatchNorm compute what one process
computes with ``bn_splits = W``.

``comm`` is a communicator of moco_ref/parallel/communicator.py; its ``allgather`` concatenates the
processes' arrays in rank order.
"""

from __future__ import annotations

import numpy as np

from backends import get_array_module


def concat_all_gather(x, comm):
    """Every process's share (n, ...) -> the whole batch (W·n, ...), in global sample order (with one
    process, x itself)."""
    W, n = comm.size, x.shape[0]
    blocks = comm.allgather(x)  # (W·n, ...): rank 0's n rows, then rank 1's, ...
    return blocks.reshape(W, n, *x.shape[1:]).swapaxes(0, 1).reshape(W * n, *x.shape[1:])


def local_share(x_all, comm):
    """This process's samples of a whole batch: rows rank, rank + W, ... (a view)."""
    return x_all[comm.rank :: comm.size]


def batch_shuffle(x, rng: np.random.Generator, comm):
    """This process's slice of the randomly permuted whole batch.

    Args:
        x: (n, ...) this process's share of the batch, any backend.
        rng: host generator that draws the permutation (the same state on every process).
        comm: the communicator.
    Returns:
        (slice of x_all[perm] for this process, index_unshuffle), index_unshuffle the inverse
        permutation of the whole batch, on x's backend.
    """
    xp = get_array_module(x)
    x_all = concat_all_gather(x, comm)  # (N, ...)
    perm = comm.bcast_host(rng.permutation(x_all.shape[0]))  # rank 0's permutation, as the official code
    index_unshuffle = np.argsort(perm)
    return local_share(x_all[xp.asarray(perm)], comm), xp.asarray(index_unshuffle)


def batch_unshuffle(x, index_unshuffle, comm):
    """Undoes :func:`batch_shuffle`: (n, ...) slices -> the whole batch (N, ...) in its original order."""
    return concat_all_gather(x, comm)[index_unshuffle]
