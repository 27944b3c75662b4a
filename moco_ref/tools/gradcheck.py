"""Finite-difference checks of every hand-derived backward pass.

A backward pass is right when, for a random upstream gradient G and the scalar
L(x) = Σ G·f(x), its result matches central differences in float64:

    ∂L/∂x_i ≈ (L(x + ε·e_i) − L(x − ε·e_i)) / 2ε          (error O(ε²))

For the whole encoder, whose parameters are too many to perturb one by one, the
check runs along random directions v instead:  Σ ∇L·v ≈ (L(θ + εv) − L(θ − εv)) / 2ε.

The error reported is max_i |analytic_i − numeric_i| / max(max|analytic|, max|numeric|),
a relative error over the whole array, together with the worst element.
``moco-ref gradcheck`` prints the table of :func:`run_all`; the tests assert it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from backends import to_numpy
from moco_ref import loss as L
from moco_ref.layers import basic, batchnorm, conv
from moco_ref.models import build_encoder

LAYER_TOLERANCE = 1e-6
ENCODER_TOLERANCE = 1e-5


@dataclass
class CheckResult:
    name: str  # e.g. "conv2d 3×3 s2 p1 / dx"
    error: float  # relative error, see the module docstring
    worst_index: tuple  # index of the worst element
    analytic: float  # value at that element
    numeric: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(self.error <= self.tolerance)

    def describe(self) -> str:
        return (
            f"{self.name}: relative error {self.error:.2e} > {self.tolerance:.0e}; worst element "
            f"{self.worst_index}: analytic {self.analytic:.10g}, numeric {self.numeric:.10g}"
        )


def numerical_gradient(loss: Callable[[], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar ``loss()`` with respect to every element of ``x``.

    ``x`` is perturbed in place and restored; ``loss`` must read it afresh each call.
    """
    grad = np.zeros(x.shape, dtype=np.float64)
    flat, out = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + eps
        plus = float(loss())
        flat[i] = saved - eps
        minus = float(loss())
        flat[i] = saved
        out[i] = (plus - minus) / (2 * eps)
    return grad


def relative_error(actual, expected) -> tuple[float, tuple]:
    """max_i |a_i − e_i| / max(max|a|, max|e|) over whole arrays (host or device), and the worst index.

    The one error measure of the project: gradient checks, the PyTorch oracles and the GPU parity
    tests all use it.
    """
    a = np.asarray(to_numpy(actual), dtype=np.float64)
    e = np.asarray(to_numpy(expected), dtype=np.float64)
    if a.shape != e.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {e.shape}")
    diff = np.abs(a - e)
    scale = max(np.abs(a).max(initial=0.0), np.abs(e).max(initial=0.0), 1e-300)
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.size else ()
    return float(diff.max(initial=0.0) / scale), tuple(int(i) for i in worst)


def compare(name: str, analytic, numeric, tolerance: float = LAYER_TOLERANCE) -> CheckResult:
    """Relative error of two arrays, with the worst element."""
    a = np.asarray(to_numpy(analytic), dtype=np.float64)
    n = np.asarray(to_numpy(numeric), dtype=np.float64)
    if a.shape != n.shape:
        raise ValueError(f"{name}: shapes differ, {a.shape} vs {n.shape}")
    error, worst = relative_error(a, n)
    return CheckResult(
        name, error, worst, float(a[worst]) if a.size else 0.0, float(n[worst]) if n.size else 0.0, tolerance
    )


def check_function(
    name: str,
    forward: Callable[..., np.ndarray],
    backward: Callable[..., dict],
    inputs: dict,
    rng: np.random.Generator,
    tolerance: float = LAYER_TOLERANCE,
) -> list[CheckResult]:
    """Checks ``backward`` against central differences of ``forward``.

    Args:
        forward: (**inputs) -> output array y.
        backward: (G, **inputs) -> {input name: ∂(Σ G·y)/∂input} for the inputs to check.
        inputs: float64 host arrays, perturbed in place by the check and restored.
    """
    upstream = rng.standard_normal(np.shape(forward(**inputs)))
    analytic = backward(upstream, **inputs)
    results = []
    for key, grad in analytic.items():
        numeric = numerical_gradient(lambda: float(np.sum(upstream * forward(**inputs))), inputs[key])
        results.append(compare(f"{name} / d{key}", grad, numeric, tolerance))
    return results


def check_directions(
    name: str,
    loss: Callable[[], float],
    params: dict,
    grads: dict,
    rng: np.random.Generator,
    directions: int = 3,
    eps: float = 1e-6,
    tolerance: float = ENCODER_TOLERANCE,
) -> list[CheckResult]:
    """Checks Σ ∇L·v against (L(θ + εv) − L(θ − εv)) / 2ε along random unit directions v.

    ``params`` are float64 host arrays that ``loss`` reads; they are restored afterwards.
    """
    results = []
    for d in range(directions):
        v = {k: rng.standard_normal(p.shape) for k, p in params.items()}
        norm = np.sqrt(sum(float(np.sum(x * x)) for x in v.values()))
        v = {k: x / norm for k, x in v.items()}
        saved = {k: p.copy() for k, p in params.items()}
        for k in params:
            params[k][...] = saved[k] + eps * v[k]
        plus = float(loss())
        for k in params:
            params[k][...] = saved[k] - eps * v[k]
        minus = float(loss())
        for k in params:
            params[k][...] = saved[k]
        numeric = (plus - minus) / (2 * eps)
        analytic = sum(float(np.sum(to_numpy(grads[k]) * v[k])) for k in params)
        results.append(compare(f"{name} / direction {d}", np.array([analytic]), np.array([numeric]), tolerance))
    return results


# ------------------------------------------------------------------ the suite
def _layer_checks(rng: np.random.Generator) -> list[CheckResult]:
    results = []
    x = rng.standard_normal((2, 5, 5, 3))

    for k, s, p in ((3, 1, 1), (3, 2, 1), (1, 2, 0), (1, 1, 0)):
        w = rng.standard_normal((4, 3, k, k))
        results += check_function(
            f"conv2d {k}x{k} s{s} p{p}",
            lambda x, w: conv.conv2d_forward(x, w, s, p)[0],
            lambda g, x, w: dict(zip(("x", "w"), conv.conv2d_backward(g, conv.conv2d_forward(x, w, s, p)[1]))),
            {"x": x.copy(), "w": w},
            rng,
        )

    gamma, beta = rng.standard_normal(3) + 1.0, rng.standard_normal(3)
    stats = (rng.standard_normal(3), rng.uniform(0.5, 2.0, 3))
    xb = rng.standard_normal((4, 3, 3, 3))
    for training, splits in ((True, 1), (True, 2), (False, 1)):

        def bn_forward(x, gamma, beta):
            return batchnorm.batchnorm_forward(x, gamma, beta, *stats, training, splits)[0]

        def bn_backward(g, x, gamma, beta):
            cache = batchnorm.batchnorm_forward(x, gamma, beta, *stats, training, splits)[2]
            return dict(zip(("x", "gamma", "beta"), batchnorm.batchnorm_backward(g, cache)))

        label = f"batchnorm {'train' if training else 'eval'} splits={splits}"
        results += check_function(
            label, bn_forward, bn_backward, {"x": xb.copy(), "gamma": gamma.copy(), "beta": beta.copy()}, rng
        )

        def bn_add_relu_forward(x, gamma, beta, residual):  # a BasicBlock's end: relu(bn(x) + residual)
            return batchnorm.batchnorm_forward(x, gamma, beta, *stats, training, splits, residual, True)[0]

        def bn_add_relu_backward(g, x, gamma, beta, residual):
            cache = batchnorm.batchnorm_forward(x, gamma, beta, *stats, training, splits, residual, True)[2]
            return dict(zip(("x", "gamma", "beta", "residual"), batchnorm.batchnorm_backward(g, cache)))

        results += check_function(
            label + " + residual + relu",
            bn_add_relu_forward,
            bn_add_relu_backward,
            {"x": xb.copy(), "gamma": gamma.copy(), "beta": beta.copy(), "residual": rng.standard_normal(xb.shape)},
            rng,
        )

    results += check_function(
        "relu",
        basic.relu_forward,
        lambda g, x: {"x": basic.relu_backward(g, basic.relu_forward(x))},
        {"x": rng.standard_normal((3, 7))},
        rng,
    )
    results += check_function(
        "global avg pool",
        lambda x: basic.global_avg_pool_forward(x)[0],
        lambda g, x: {"x": basic.global_avg_pool_backward(g, x.shape)},
        {"x": rng.standard_normal((2, 3, 4, 5))},
        rng,
    )
    results += check_function(
        "linear",
        lambda x, w, b: basic.linear_forward(x, w, b)[0],
        lambda g, x, w, b: dict(zip(("x", "w", "b"), basic.linear_backward(g, (x, w)))),
        {"x": rng.standard_normal((4, 5)), "w": rng.standard_normal((3, 5)), "b": rng.standard_normal(3)},
        rng,
    )

    def mlp_forward(x, w0, b0, w2, b2):
        h = basic.relu_forward(basic.linear_forward(x, w0, b0)[0])
        return basic.linear_forward(h, w2, b2)[0]

    def mlp_backward(g, x, w0, b0, w2, b2):
        h0, c0 = basic.linear_forward(x, w0, b0)
        h = basic.relu_forward(h0)
        dh, dw2, db2 = basic.linear_backward(g, (h, w2))
        dx, dw0, db0 = basic.linear_backward(basic.relu_backward(dh, h), c0)
        return {"x": dx, "w0": dw0, "b0": db0, "w2": dw2, "b2": db2}

    results += check_function(
        "mlp head",
        mlp_forward,
        mlp_backward,
        {
            "x": rng.standard_normal((4, 6)),
            "w0": rng.standard_normal((6, 6)),
            "b0": rng.standard_normal(6),
            "w2": rng.standard_normal((3, 6)),
            "b2": rng.standard_normal(3),
        },
        rng,
    )

    results += check_function(
        "l2 normalize",
        lambda x: L.normalize_forward(x)[0],
        lambda g, x: {"x": L.normalize_backward(g, L.normalize_forward(x)[1])},
        {"x": rng.standard_normal((4, 6))},
        rng,
    )

    def unit(shape):
        v = rng.standard_normal(shape)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    queue = unit((7, 6))
    results += check_function(
        "info_nce T=0.2",
        lambda q, k: L.info_nce(q, k, queue, 0.2)[0],
        lambda g, q, k: dict(zip(("q", "k"), (g * d for d in L.info_nce(q, k, queue, 0.2)[1:]))),
        {"q": unit((4, 6)), "k": unit((4, 6))},
        rng,
    )
    return results


def encoder_check(
    rng: np.random.Generator, arch="resnet10", width=2, mlp=True, bn_splits=2, directions: int = 3
) -> list[CheckResult]:
    """The whole encoder, float64, along random directions in parameter space."""
    encoder = build_encoder(
        arch,
        dim=5,
        width=width,
        mlp=mlp,
        bn_splits=bn_splits,
        backend="numpy",
        seed=int(rng.integers(1 << 31)),
        dtype="float64",
    )
    x = rng.standard_normal((4, 3, 8, 8))
    upstream = rng.standard_normal((4, 5))

    def loss():
        return float(np.sum(upstream * encoder.forward(x, training=True).out))

    grads = encoder.backward(upstream, encoder.forward(x, training=True).cache)
    name = f"encoder {arch} w{width}{' mlp' if mlp else ''} splits={bn_splits}"
    return check_directions(name, loss, encoder.params, grads, rng, directions)


def run_all(seed: int = 0) -> list[CheckResult]:
    """Every layer, then the whole encoder; float64 throughout."""
    rng = np.random.default_rng(seed)
    return _layer_checks(rng) + encoder_check(rng)
