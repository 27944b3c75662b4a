"""Shuffle BN on one process: gather, shuffle, encode, unshuffle.

With several GPUs, the official code gathers the key batch from all of them,
permutes it with a random permutation broadcast from rank 0, lets each GPU
encode its slice (so each GPU's BatchNorm sees a random mix of samples), and
un-permutes the keys.  This prevents BatchNorm statistics from leaking which
key is the positive of which query.  On one process the three functions below
do the same with the permutation alone; split BatchNorm (``bn_splits``)
stands in for the per-GPU statistics.  A multi-process version replaces
these functions without touching the MoCo step.
"""

from __future__ import annotations

import numpy as np

from backends import get_array_module


def concat_all_gather(x):
    """All-gather along the batch axis; one process holds the whole batch already."""
    return x


def batch_shuffle(x, rng: np.random.Generator):
    """Permutes the batch randomly.

    Args:
        x: (N, ...) batch on any backend.
        rng: host generator that draws the permutation.
    Returns:
        (x[perm], index_unshuffle) with index_unshuffle the inverse permutation, on x's backend.
    """
    xp = get_array_module(x)
    x_all = concat_all_gather(x)
    perm = rng.permutation(x_all.shape[0])
    index_unshuffle = np.argsort(perm)
    return x_all[xp.asarray(perm)], xp.asarray(index_unshuffle)


def batch_unshuffle(x, index_unshuffle):
    """Undoes :func:`batch_shuffle`: returns rows in the original batch order."""
    return concat_all_gather(x)[index_unshuffle]
