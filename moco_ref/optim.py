"""SGD with momentum and weight decay, and the official learning-rate schedules.

The update is ``torch.optim.SGD``'s (dampening 0), for every parameter p with
gradient g, momentum μ, weight decay λ and learning rate η:

    d = g + λ·p                 # weight decay on every parameter, BN and biases included
    b ← μ·b + d                 # momentum buffer (b starts at 0, so the first b is d)
    p ← p − η·(d + μ·b)   with Nesterov,   p ← p − η·b   without.
"""

from __future__ import annotations

import math

from backends import get_array_module, ops


class SGD:
    """Stochastic gradient descent over a ``{name: array}`` dict of parameters.

    Args:
        params: the parameters, updated in place by :meth:`step_`.
        lr, momentum, weight_decay, nesterov: as ``torch.optim.SGD``.

    Attributes:
        buffers: {name: momentum buffer}, the state to save for an exact resume.
    """

    def __init__(
        self, params: dict, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, nesterov: bool = False
    ):
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.params = params
        self.lr, self.momentum, self.weight_decay, self.nesterov = lr, momentum, weight_decay, nesterov
        self.buffers = {name: get_array_module(p).zeros_like(p) for name, p in params.items()}

    def step_(self, grads: dict, lr: float | None = None) -> None:
        """Applies one update to ``self.params`` in place, given ``{name: gradient}``, with this step's learning
        rate ``lr`` (default: the one given at construction)."""
        lr = float(self.lr if lr is None else lr)
        mu, wd = float(self.momentum), float(self.weight_decay)
        for name, p in self.params.items():
            ops.sgd_update_(p, grads[name], self.buffers[name], lr, mu, wd, self.nesterov)  # the update above

    def state_dict(self) -> dict:
        """``{momentum_buffer.<name>: buffer}`` (torch's name for the buffer), the arrays themselves."""
        return {f"momentum_buffer.{name}": b for name, b in self.buffers.items()}

    def load_state_dict(self, state: dict, to_device) -> None:
        """Copies the buffers of ``state`` (host arrays, moved with ``to_device``) into this optimiser's."""
        for name, b in self.buffers.items():
            b[...] = to_device(state[f"momentum_buffer.{name}"])


def learning_rate(base_lr: float, epoch: int, epochs: int, cos: bool = False, schedule: tuple = (120, 160)) -> float:
    """The official per-epoch schedule (main_moco.py's adjust_learning_rate).

    cosine: base_lr · 0.5 · (1 + cos(π · epoch / epochs));
    step: base_lr · 0.1^(number of milestones ≤ epoch).   ``epoch`` counts from 0.
    """
    if cos:
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    return base_lr * 0.1 ** sum(1 for milestone in schedule if epoch >= milestone)
