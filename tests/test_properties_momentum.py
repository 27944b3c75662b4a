"""Properties of the momentum update θ_k ← m·θ_k + (1 − m)·θ_q, of the key encoder it drives, and of the
momentum schedule m(t) of --moco-m-cos.

Notation: θ_k the key-encoder parameters, θ_q the query-encoder parameters, m the momentum, m₀ --moco-m,
t the global step, T_total = epochs × steps per epoch.
"""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from moco_ref.momentum import momentum_at_step, momentum_update_

DTYPES = st.sampled_from([np.float32, np.float64])
NAMES = ("conv1.weight", "bn1.weight", "bn1.bias", "fc.weight")


def draw_parameters(data, dtype, bound=1e3):
    """Draws θ_k and θ_q: {name: array} with the same names, shapes and dtype."""
    names = data.draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True), label="parameter names")
    elements = st.floats(-bound, bound, width=np.finfo(dtype).bits, allow_subnormal=False)
    theta_k, theta_q = {}, {}
    for name in names:
        shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4), label=f"shape of {name}")
        theta_k[name] = data.draw(hnp.arrays(dtype, shape, elements=elements), label=f"θ_k[{name}]")
        theta_q[name] = data.draw(hnp.arrays(dtype, shape, elements=elements), label=f"θ_q[{name}]")
    return theta_k, theta_q


def copies(params):
    return {name: array.copy() for name, array in params.items()}


@given(data=st.data())
def test_momentum_one_leaves_key_unchanged(data):
    """With m = 1 the update leaves θ_k exactly as it was."""
    dtype = data.draw(DTYPES, label="dtype")
    theta_k, theta_q = draw_parameters(data, dtype)
    before = copies(theta_k)
    momentum_update_(theta_k, theta_q, 1.0)
    for name in theta_k:
        np.testing.assert_array_equal(theta_k[name], before[name], err_msg=name)


@given(data=st.data())
def test_momentum_zero_copies_query(data):
    """With m = 0 the update makes θ_k an exact copy of θ_q."""
    dtype = data.draw(DTYPES, label="dtype")
    theta_k, theta_q = draw_parameters(data, dtype)
    momentum_update_(theta_k, theta_q, 0.0)
    for name in theta_k:
        np.testing.assert_array_equal(theta_k[name], theta_q[name], err_msg=name)


@given(data=st.data())
def test_momentum_result_lies_between_key_and_query(data):
    """Every updated element lies between the old θ_k and θ_q, up to four ulps of the larger magnitude.

    The tolerance: m (and 1 − m) round to the array's dtype, the two products and the
    sum each round once, so a convex combination of two nearly equal numbers can step
    outside them by about 2.5 ε·max(|θ_k|, |θ_q|); a product that underflows adds at
    most the smallest normal number.
    """
    dtype = data.draw(DTYPES, label="dtype")
    theta_k, theta_q = draw_parameters(data, dtype)
    m = data.draw(st.floats(0.0, 1.0), label="m")
    before = copies(theta_k)
    momentum_update_(theta_k, theta_q, m)
    finfo = np.finfo(dtype)
    for name, result in theta_k.items():
        old, query = before[name].astype(np.float64), theta_q[name].astype(np.float64)
        tolerance = 4 * float(finfo.eps) * np.maximum(np.abs(old), np.abs(query)) + float(finfo.tiny)
        low, high = np.minimum(old, query) - tolerance, np.maximum(old, query) + tolerance
        outside = (result < low) | (result > high)
        assert not outside.any(), (
            f"{name}, m={m!r}: {int(outside.sum())} elements outside [θ_k, θ_q], e.g. "
            f"θ_k={old[outside][0]!r}, θ_q={query[outside][0]!r}, result={result[outside][0]!r}"
        )


@given(data=st.data())
def test_momentum_n_updates_shrink_the_gap_by_m_to_the_n(data):
    """n updates toward a fixed θ_q leave θ_k − θ_q = mⁿ·(θ_k⁰ − θ_q) (float64).

    rtol 1e-12 on top of an absolute 4·n·ε·max|θ|: each update rounds once per
    element (about 1.5 ε·max|θ|), and those errors add up over the n updates.
    """
    theta_k, theta_q = draw_parameters(data, np.float64, bound=10.0)
    m = data.draw(st.floats(0.0, 1.0), label="m")
    n = data.draw(st.integers(1, 50), label="n updates")
    initial = copies(theta_k)
    for _ in range(n):
        momentum_update_(theta_k, theta_q, m)
    for name in theta_k:
        scale = max(np.abs(initial[name]).max(), np.abs(theta_q[name]).max())
        np.testing.assert_allclose(
            theta_k[name] - theta_q[name],
            m**n * (initial[name] - theta_q[name]),
            rtol=1e-12,
            atol=4 * n * np.finfo(np.float64).eps * scale,
            err_msg=f"{name}, m={m!r}, n={n}",
        )


@given(data=st.data())
def test_momentum_update_does_not_mutate_query(data):
    """The update reads θ_q and never writes it."""
    dtype = data.draw(DTYPES, label="dtype")
    theta_k, theta_q = draw_parameters(data, dtype)
    m = data.draw(st.floats(0.0, 1.0), label="m")
    before = copies(theta_q)
    momentum_update_(theta_k, theta_q, m)
    for name in theta_q:
        np.testing.assert_array_equal(theta_q[name], before[name], err_msg=name)


# ------------------------------------------------------------- the two encoders of MoCo
def encoder_arrays(encoder):
    return {
        **{f"params.{n}": a for n, a in encoder.params.items()},
        **{f"buffers.{n}": a for n, a in encoder.buffers.items()},
    }


def shared_pairs(model):
    keys, queries = encoder_arrays(model.encoder_k), encoder_arrays(model.encoder_q)
    return [(k, q) for k, a in keys.items() for q, b in queries.items() if np.shares_memory(a, b)]


@given(seed=st.integers(0, 2**16), bn_splits=st.sampled_from([1, 2]))
def test_key_encoder_starts_as_exact_copy_of_query_encoder(small_moco, seed, bn_splits):
    """A freshly built MoCo has encoder_k equal to encoder_q: every parameter and buffer, bit for bit."""
    model = small_moco(seed, bn_splits)
    keys, queries = encoder_arrays(model.encoder_k), encoder_arrays(model.encoder_q)
    assert keys.keys() == queries.keys()
    for name in keys:
        np.testing.assert_array_equal(keys[name], queries[name], err_msg=name)


@given(seed=st.integers(0, 2**16), bn_splits=st.sampled_from([1, 2]), steps=st.integers(0, 2))
def test_key_encoder_never_shares_memory_with_query_encoder(small_moco, two_views, seed, bn_splits, steps):
    """No array of encoder_k shares memory with an array of encoder_q, at construction and after any steps."""
    model = small_moco(seed, bn_splits)
    assert shared_pairs(model) == [], "after construction"
    for step in range(steps):
        model.step(*two_views(seed + step))
        assert shared_pairs(model) == [], f"after step {step + 1}"


@given(seed=st.integers(0, 2**16), bn_splits=st.sampled_from([1, 2]), m=st.floats(0.0, 0.99))
def test_key_encoder_buffers_come_from_its_own_forward(small_moco, two_views, seed, bn_splits, m):
    """The key encoder's BatchNorm running statistics after a step are those of its own forward on x_k.

    The momentum update averages parameters only: a twin model that runs the same
    step by hand (momentum update of the parameters, then encode_keys) must end with
    the same key-encoder buffers.  One warm-up step first makes the two encoders'
    buffers differ, so that averaging them would show.
    """
    model, twin = small_moco(seed, bn_splits, m), small_moco(seed, bn_splits, m)
    warm_up, (x_q, x_k) = two_views(seed), two_views(seed + 1)
    model.step(*warm_up)
    twin.step(*warm_up)
    model.step(x_q, x_k)
    momentum_update_(twin.encoder_k.params, twin.encoder_q.params, twin.m)
    twin.encode_keys(x_k)
    for name, expected in twin.encoder_k.buffers.items():
        np.testing.assert_allclose(model.encoder_k.buffers[name], expected, rtol=1e-12, atol=1e-15, err_msg=name)


# ------------------------------------------------------------- the momentum schedule (--moco-m-cos)
M0 = st.floats(0.0, 1.0)
TOTAL_STEPS = st.integers(1, 10**7)


def draw_step(data, total_steps, label="t"):
    return data.draw(st.integers(0, total_steps), label=label)


@given(m0=M0, total_steps=TOTAL_STEPS)
def test_schedule_starts_at_the_given_m(m0, total_steps):
    """m(0) = m₀ exactly: the first step runs with --moco-m."""
    assert momentum_at_step(m0, 0, total_steps, cos=True) == m0


@given(m0=M0, total_steps=TOTAL_STEPS)
def test_schedule_ends_at_one(m0, total_steps):
    """m(T_total) = 1: by the end of training the key encoder stops moving."""
    assert momentum_at_step(m0, total_steps, total_steps, cos=True) == 1.0


@given(data=st.data(), m0=M0, total_steps=TOTAL_STEPS)
def test_schedule_is_monotone_non_decreasing(data, m0, total_steps):
    """t₁ ≤ t₂ ⇒ m(t₁) ≤ m(t₂), also for neighbouring steps (where rounding would show first)."""
    t_1 = draw_step(data, total_steps, "t₁")
    t_2 = data.draw(st.one_of(st.just(min(t_1 + 1, total_steps)), st.integers(t_1, total_steps)), label="t₂")
    assert momentum_at_step(m0, t_1, total_steps, cos=True) <= momentum_at_step(m0, t_2, total_steps, cos=True)


@given(data=st.data(), m0=M0, total_steps=TOTAL_STEPS)
def test_schedule_stays_between_the_given_m_and_one(data, m0, total_steps):
    """m₀ ≤ m(t) ≤ 1 at every step: a valid momentum for momentum_update_."""
    m = momentum_at_step(m0, draw_step(data, total_steps), total_steps, cos=True)
    assert m0 <= m <= 1.0


@given(data=st.data(), m0=M0, total_steps=TOTAL_STEPS)
def test_schedule_is_the_half_cosine(data, m0, total_steps):
    """m(t) = 1 − (1 − m₀)·(cos(π·t/T_total) + 1)/2 (moco-v3, BYOL), up to a few ulps of 1."""
    t = draw_step(data, total_steps)
    expected = 1.0 - (1.0 - m0) * (math.cos(math.pi * t / total_steps) + 1.0) / 2.0
    assert momentum_at_step(m0, t, total_steps, cos=True) == pytest.approx(expected, rel=0, abs=4e-16)


@given(data=st.data(), m0=M0, total_steps=TOTAL_STEPS)
def test_schedule_off_is_the_fixed_m_at_every_step(data, m0, total_steps):
    """Without --moco-m-cos every step runs with --moco-m, bit for bit."""
    assert momentum_at_step(m0, draw_step(data, total_steps), total_steps, cos=False) == m0
