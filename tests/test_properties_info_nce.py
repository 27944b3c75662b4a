"""Properties of the InfoNCE loss and its gradients.

Notation: N queries q (N, D), their positive keys k (N, D), a queue of K negative keys (K, D),
temperature T; logits = [q·k, q·queue] / T, (N, 1 + K), the positive in column 0.
"""

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from moco_ref.loss import chance_loss, info_nce, info_nce_backward, info_nce_forward
from moco_ref.tools.gradcheck import compare, numerical_gradient


def unit_rows(rng, rows, D, dtype=np.float64):
    v = rng.standard_normal((rows, D))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(dtype)


def draw_problem(data, T_range=(0.05, 10.0), dtype=np.float64, min_D=1):
    """Draws unit-norm q, k, queue and a temperature."""
    N = data.draw(st.integers(1, 4), label="N")
    D = data.draw(st.integers(min_D, 6), label="D")
    K = data.draw(st.integers(1, 8), label="K")
    T = data.draw(st.floats(*T_range), label="T")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    return unit_rows(rng, N, D, dtype), unit_rows(rng, N, D, dtype), unit_rows(rng, K, D, dtype), T


@given(data=st.data())
def test_info_nce_is_non_negative(data):
    """The InfoNCE loss is ≥ 0: the positive's probability never exceeds 1."""
    q, k, queue, T = draw_problem(data, T_range=(1e-3, 100.0))
    loss = float(info_nce_forward(q, k, queue, T)[0])
    assert loss >= 0.0, f"loss {loss!r} < 0 at T={T!r}"


@given(data=st.data())
def test_info_nce_is_log_K_plus_one_when_all_logits_are_equal(data):
    """When q is orthogonal to its positive and to every queued key, all logits are 0 and the loss is chance, ln(K + 1).

    q lives on a random subset of the coordinates and all keys on the rest, so every
    dot product is exactly 0 whatever the temperature.
    """
    N = data.draw(st.integers(1, 4), label="N")
    K = data.draw(st.integers(1, 8), label="K")
    D = data.draw(st.integers(2, 6), label="D")
    split = data.draw(st.integers(1, D - 1), label="coordinates of q")
    T = data.draw(st.floats(1e-3, 100.0), label="T")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    coordinates = rng.permutation(D)
    q_part, key_part = coordinates[:split], coordinates[split:]
    q, k, queue = np.zeros((N, D)), np.zeros((N, D)), np.zeros((K, D))
    q[:, q_part] = unit_rows(rng, N, split)
    k[:, key_part] = unit_rows(rng, N, D - split)
    queue[:, key_part] = unit_rows(rng, K, D - split)
    loss, logits, _ = info_nce_forward(q, k, queue, T)
    assert (logits == 0).all()
    assert math.isclose(float(loss), chance_loss(K), rel_tol=1e-12), (
        f"loss {float(loss)!r}, ln(K + 1) = {chance_loss(K)!r}"
    )


@given(data=st.data())
def test_info_nce_falls_when_positive_similarity_rises(data):
    """Raising every positive similarity q·k, with q and the queue fixed, strictly lowers the loss.

    The raised keys are normalize(k + t·q), t > 0, which turn k toward q.
    """
    q, k, queue, T = draw_problem(data, T_range=(0.1, 10.0), min_D=2)
    t = data.draw(st.floats(0.1, 5.0), label="t")
    raised = k + t * q
    raised /= np.linalg.norm(raised, axis=1, keepdims=True)
    assume(((q * raised).sum(axis=1) - (q * k).sum(axis=1) > 1e-6).all())
    lower = float(info_nce_forward(q, raised, queue, T)[0])
    higher = float(info_nce_forward(q, k, queue, T)[0])
    assert lower < higher, f"loss {lower!r} with the raised positives is not below {higher!r}"


@given(data=st.data())
def test_info_nce_equals_naive_formula(data):
    """The loss equals mean_n −log(exp(l₊/T) / Σ_j exp(l_j/T)) written out plainly (float64, rtol 1e-10)."""
    q, k, queue, T = draw_problem(data)
    total = 0.0
    for n in range(q.shape[0]):
        l_pos = sum(float(a) * float(b) for a, b in zip(q[n], k[n]))
        l_neg = [sum(float(a) * float(b) for a, b in zip(q[n], key)) for key in queue]
        numerator = math.exp(l_pos / T)
        denominator = numerator + sum(math.exp(l / T) for l in l_neg)
        total += -math.log(numerator / denominator)
    expected = total / q.shape[0]
    loss = float(info_nce_forward(q, k, queue, T)[0])
    assert math.isclose(loss, expected, rel_tol=1e-10, abs_tol=1e-12), f"loss {loss!r}, naive {expected!r}"


@given(data=st.data())
def test_info_nce_logit_gradient_sums_to_zero_per_row(data):
    """∂L/∂logits = (softmax − onehot)/N sums to zero along each row (the loss ignores a shift of a row's logits).

    The logit gradient is read back from the public backward: with k_n and the queue
    orthonormal, ∂L/∂q_n · [k_n, queue]ᵀ = T·∂L/∂logits_n.
    """
    N = data.draw(st.integers(1, 3), label="N")
    K = data.draw(st.integers(1, 6), label="K")
    D = N + K + data.draw(st.integers(0, 2), label="D − N − K")
    T = data.draw(st.floats(0.05, 10.0), label="T")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    basis, _ = np.linalg.qr(rng.standard_normal((D, D)))  # orthonormal columns
    queue, k = basis[:, :K].T, basis[:, K : K + N].T  # (K, D), (N, D)
    q = unit_rows(rng, N, D)
    loss, logits, cache = info_nce_forward(q, k, queue, T)
    dq, _ = info_nce_backward(cache)
    d_logits = np.stack([T * (dq[n] @ np.concatenate([k[n : n + 1], queue]).T) for n in range(N)])  # (N, 1 + K)
    np.testing.assert_allclose(
        d_logits.sum(axis=1), 0.0, rtol=0, atol=1e-14 * (K + 1), err_msg="rows of ∂L/∂logits do not sum to zero"
    )
    one_hot = np.zeros_like(logits)
    one_hot[:, 0] = 1.0
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(
        d_logits, (p - one_hot) / N, rtol=1e-10, atol=1e-14, err_msg="∂L/∂logits is not (softmax − onehot)/N"
    )


@pytest.mark.parametrize("wrt", ["q", "k"])
@given(data=st.data())
def test_info_nce_gradients_match_finite_differences(wrt, data):
    """∂L/∂q and ∂L/∂k from info_nce_backward match central differences (float64, relative error ≤ 1e-6).

    T ≥ 0.5 keeps the logits within ±2/T = ±4: a smaller T can make every gradient as
    small as exp(−2/T), below what differences of step 1e-6 resolve relative to the loss.
    D ≥ 2: with D = 1 every vector is ±1 and the gradient can vanish exactly.
    """
    q, k, queue, T = draw_problem(data, T_range=(0.5, 2.0), min_D=2)
    _, dq, dk = info_nce(q, k, queue, T)
    analytic, x = (dq, q) if wrt == "q" else (dk, k)
    numeric = numerical_gradient(lambda: info_nce_forward(q, k, queue, T)[0], x)
    result = compare(f"info_nce / d{wrt}", analytic, numeric, 1e-6)
    assert result.passed, result.describe()


@given(data=st.data())
def test_info_nce_is_finite_for_extreme_temperatures(data):
    """In float32, the loss and both gradients stay finite for T down to 1e-4 (|logits| up to 1e4)."""
    q, k, queue, T = draw_problem(data, T_range=(1e-4, 1e-2), dtype=np.float32)
    loss, dq, dk = info_nce(q, k, queue, T)
    assert np.isfinite(loss), f"loss {loss!r} at T={T!r}"
    assert np.isfinite(dq).all() and np.isfinite(dk).all(), f"non-finite gradient at T={T!r}"
