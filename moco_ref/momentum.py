"""The momentum (exponential moving average) update of the key encoder.

    θ_k ← m·θ_k + (1 − m)·θ_q        for every parameter (not the BatchNorm buffers)

m close to 1 makes the key encoder a slowly moving average of the query
encoder, which keeps the keys in the queue consistent with each other.  After
n updates toward a fixed θ_q, θ_k − θ_q = mⁿ·(θ_k⁰ − θ_q).  The expression is
evaluated as the official code does, ``θ_k·m + θ_q·(1 − m)``, so that the
result is bit-comparable; m = 1 leaves θ_k and m = 0 copies θ_q exactly.

With ``--moco-m-cos`` the momentum follows a schedule instead of staying fixed
(:func:`momentum_at_step`, as moco-v3 and BYOL): it rises from m₀ to 1 on a
half-cosine over training, so the key encoder moves less and less as training ends.
"""

from __future__ import annotations

import math

from backends import ops


def momentum_update_(params_k: dict, params_q: dict, m: float) -> None:
    """Updates the key parameters in place; ``params_q`` is only read.

    Args:
        params_k: {name: array} of the key encoder, overwritten.
        params_q: {name: array} of the query encoder, same names and shapes.
        m: momentum coefficient in [0, 1].
    """
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum m must lie in [0, 1], got {m}")
    m = float(m)  # a Python float keeps float32 arrays float32
    for name, theta_k in params_k.items():
        ops.ema_update_(theta_k, params_q[name], m)  # θ_k·m + θ_q·(1 − m), in place


def momentum_at_step(m0: float, step: int, total_steps: int, cos: bool) -> float:
    """The momentum m of the step that follows ``step`` completed steps.

        fixed (cos False):  m(t) = m₀ at every t
        half-cosine:        m(t) = 1 − (1 − m₀)·(cos(π·t/T_total) + 1)/2  =  m₀ + (1 − m₀)·(1 − cos(π·t/T_total))/2

    with t the global step (clipped to [0, T_total]) and T_total = epochs × steps per epoch: m(0) = m₀,
    m(T_total) = 1, non-decreasing in between (moco-v3's adjust_moco_momentum, per step).  The second
    form is the one evaluated, so that m(0) is m₀ exactly (1 − (1 − m₀) is not, in floating point); the
    result is kept in [m₀, 1] against rounding.  The schedule's only state is the global step.

    Args:
        m0: ``--moco-m``, in [0, 1].
        step: t, the number of steps done so far (the trainer's global step before the step).
        total_steps: T_total ≥ 1.
        cos: ``--moco-m-cos``; False returns m0 unchanged.
    """
    if not cos:
        return m0
    if total_steps < 1:
        raise ValueError(f"the momentum schedule needs total_steps >= 1, got {total_steps}")
    t = min(max(step, 0), total_steps)
    if t == total_steps:
        return 1.0
    m = m0 + (1.0 - m0) * (1.0 - math.cos(math.pi * t / total_steps)) * 0.5
    return min(max(m, m0), 1.0)
