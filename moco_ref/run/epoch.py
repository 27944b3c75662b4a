"""One epoch's inputs, and where a run ends: what ``moco-ref train`` (moco_ref/run/trainer.py) and ``moco-ref
bench learn``'s paired loop (moco_ref/bench/learn.py) share, so that both train on the same steps.

    order    ← epoch_order(seed, epoch, N): a permutation of the N training images, from a generator
               derived from (seed, epoch) alone; full batches of it, the last partial one dropped
    x_q, x_k ← two_views(images, index, …): the batch's two augmented views, their parameters drawn from
               the run's augmentation generator, default_rng([seed, 11])
    the end  ← end_step(config, steps per epoch): the global step after the last epoch, or --max-steps if sooner

An epoch's order depends on nothing but the seed and the epoch: a run resumed mid-epoch draws the same
order again and skips the batches it has done, with no generator state to save.
"""

from __future__ import annotations

import numpy as np

from moco_ref.run.config import TrainConfig
from moco_ref.shuffle import local_share


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the n training images in epoch ``epoch`` (0-based) of the run of ``seed``: (n,) int64, a
    permutation from ``default_rng([seed, 10, epoch])``."""
    return np.random.default_rng([seed, 10, epoch]).permutation(n)


def two_views(images, index, augment, aug_rng, backend, comm):
    """The two augmented views (x_q, x_k), each (n, 3, S, S) on the backend, of this process's share of the
    batch ``images[index]`` ((N, H, W, 3) uint8 rows): the augmentation parameters of the whole batch are drawn
    from ``aug_rng``, for x_q then x_k, and the process takes its share of the images and of the parameters
    (``local_share``; with one process, SingleProcess, all of them)."""
    batch = local_share(images[index], comm)
    height, width = images.shape[1:3]
    draws = [local_share(augment.draw(aug_rng, len(index), height, width), comm) for _ in "qk"]
    return tuple(augment.apply(batch, d, backend) for d in draws)


def end_step(config: TrainConfig, steps_per_epoch: int) -> int:
    """The global step at which the run ends: the last epoch's end (epochs × steps per epoch), or --max-steps
    if that comes sooner (0: no limit).  Training is over once the global step reaches it."""
    last_epoch_end = config.epochs * steps_per_epoch
    return min(last_epoch_end, config.max_steps) if config.max_steps else last_epoch_end
