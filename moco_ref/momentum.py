"""The momentum (exponential moving average) update of the key encoder.

    θ_k ← m·θ_k + (1 − m)·θ_q        for every parameter (not the BatchNorm buffers)

m close to 1 makes the key encoder a slowly moving average of the query
encoder, which keeps the keys in the queue consistent with each other.  After
n updates toward a fixed θ_q, θ_k − θ_q = mⁿ·(θ_k⁰ − θ_q).  The expression is
evaluated as the official code does, ``θ_k·m + θ_q·(1 − m)``, so that the
result is bit-comparable; m = 1 leaves θ_k and m = 0 copies θ_q exactly.
"""

from __future__ import annotations


def momentum_update_(params_k: dict, params_q: dict, m: float) -> None:
    """Updates the key parameters in place; ``params_q`` is only read.

    Args:
        params_k: {name: array} of the key encoder, overwritten.
        params_q: {name: array} of the query encoder, same names and shapes.
        m: momentum coefficient in [0, 1].
    """
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum m must lie in [0, 1], got {m}")
    m = float(m)                     # a Python float keeps float32 arrays float32
    for name, theta_k in params_k.items():
        theta_k *= m
        theta_k += params_q[name] * (1.0 - m)
