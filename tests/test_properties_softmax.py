"""Properties of the temperature softmax p = exp(z/T) / Σ exp(z/T), taken row-wise over the last axis.

Notation: z a row of n logits, T the temperature, H(p) = −Σ p·log p the entropy.
"""

import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from moco_ref.loss import log_softmax, softmax

DTYPES = st.sampled_from([np.float32, np.float64])


def draw_logits(data, dtype=np.float64, bound=100.0, rows=3, label="logits"):
    """(rows ≤ 3, 2 ≤ n ≤ 8) logits of the dtype, in [−bound, bound]."""
    shape = (data.draw(st.integers(1, rows), label="rows"), data.draw(st.integers(2, 8), label="n"))
    elements = st.floats(-bound, bound, width=np.finfo(dtype).bits, allow_subnormal=False)
    return data.draw(hnp.arrays(dtype, shape, elements=elements), label=label)


def entropy(p):
    return float(-(p * np.log(p)).sum())


@given(data=st.data())
def test_softmax_rows_sum_to_one(data):
    """Every row of softmax(z, T) sums to 1 (within 2·n·ε of the dtype)."""
    dtype = data.draw(DTYPES, label="dtype")
    logits = draw_logits(data, dtype)
    T = data.draw(st.floats(0.01, 100.0), label="T")
    p = softmax(logits, T)
    assert p.dtype == dtype
    assert (p >= 0).all()
    np.testing.assert_allclose(
        p.astype(np.float64).sum(axis=-1), 1.0, rtol=0, atol=2 * logits.shape[-1] * np.finfo(dtype).eps
    )


@given(data=st.data())
def test_softmax_ignores_a_constant_added_to_a_row(data):
    """softmax(z + c, T) = softmax(z, T) for any constant c per row (float64, rtol 1e-9).

    The tolerance covers the rounding of z + c, which moves z/T by up to ε·|z + c|/T ≤ 1e-11 here.
    """
    logits = draw_logits(data)
    shift = data.draw(
        hnp.arrays(np.float64, (logits.shape[0], 1), elements=st.floats(-100.0, 100.0)), label="constant per row"
    )
    T = data.draw(st.floats(0.05, 20.0), label="T")
    np.testing.assert_allclose(softmax(logits + shift, T), softmax(logits, T), rtol=1e-9, atol=1e-300)


@given(data=st.data())
def test_softmax_entropy_falls_as_T_falls(data):
    """For a non-constant row, the entropy of softmax(z, T) strictly decreases as T decreases.

    dH/dT = Var_p(z)/T³ > 0.  Logits in [−1, 1] with a spread of at least 0.1 and T in
    [0.5, 80], each T at least 5 % above the previous, keep every difference far above rounding.
    """
    row = data.draw(
        hnp.arrays(np.float64, data.draw(st.integers(2, 8), label="n"), elements=st.floats(-1.0, 1.0)), label="logits"
    )
    assume(np.ptp(row) >= 0.1)
    T = data.draw(st.floats(0.5, 5.0), label="smallest T")
    ratios = data.draw(st.lists(st.floats(1.05, 2.0), min_size=1, max_size=4), label="ratios between Ts")
    temperatures = T * np.cumprod([1.0] + ratios)
    entropies = [entropy(softmax(row, t)) for t in temperatures]
    for (t_low, h_low), (t_high, h_high) in zip(zip(temperatures, entropies), zip(temperatures[1:], entropies[1:])):
        assert h_low < h_high, f"H(T={t_low:.4g}) = {h_low!r} is not below H(T={t_high:.4g}) = {h_high!r}"


@given(data=st.data())
def test_softmax_tends_to_one_hot_argmax_as_T_falls(data):
    """With a unique maximum ahead by a gap, softmax(z, T) is within (n − 1)·exp(−gap/T) of the one-hot argmax.

    So it tends to the one-hot argmax as T → 0; T is drawn as gap/f for f in [5, 200].
    """
    row = data.draw(
        hnp.arrays(np.float64, data.draw(st.integers(2, 8), label="n"), elements=st.floats(-10.0, 10.0)), label="logits"
    )
    top_two = np.sort(row)[-2:]
    gap = top_two[1] - top_two[0]
    assume(gap >= 1e-3)
    f = data.draw(st.floats(5.0, 200.0), label="gap / T")
    T = gap / f
    one_hot = np.zeros_like(row)
    one_hot[np.argmax(row)] = 1.0
    bound = (row.size - 1) * np.exp(-f) + 4 * np.finfo(np.float64).eps
    error = np.abs(softmax(row, T) - one_hot).max()
    assert error <= bound, f"T={T!r}: distance to the one-hot argmax {error!r} > bound {bound!r}"


@given(data=st.data())
def test_softmax_tends_to_uniform_as_T_grows(data):
    """With logits spread over r = max − min, every p_i is within (exp(r/T) − 1)/n of 1/n, so T → ∞ gives uniform.

    T is drawn as r·f for f in [10, 1e6].
    """
    row = data.draw(
        hnp.arrays(np.float64, data.draw(st.integers(2, 8), label="n"), elements=st.floats(-10.0, 10.0)), label="logits"
    )
    spread = max(float(np.ptp(row)), 1e-3)
    f = data.draw(st.floats(10.0, 1e6), label="T / spread")
    T = spread * f
    n = row.size
    bound = np.expm1(np.ptp(row) / T) / n + 4 * np.finfo(np.float64).eps
    error = np.abs(softmax(row, T) - 1.0 / n).max()
    assert error <= bound, f"T={T!r}: distance to uniform {error!r} > bound {bound!r}"


@given(data=st.data())
def test_softmax_is_finite_for_extreme_logits(data):
    """In float32, softmax(z, T) and log_softmax(z/T) stay finite, and rows sum to 1, for |z/T| up to 1e4."""
    T = np.float32(data.draw(st.floats(1e-3, 10.0), label="T"))
    ratios = draw_logits(data, np.float32, bound=1e4, label="z / T")
    logits = (ratios * T).astype(np.float32)
    p = softmax(logits, float(T))
    log_p = log_softmax(logits / T)
    assert np.isfinite(p).all(), f"non-finite softmax for T={T!r}, logits {logits!r}"
    assert np.isfinite(log_p).all(), f"non-finite log_softmax for T={T!r}, logits {logits!r}"
    np.testing.assert_allclose(
        p.astype(np.float64).sum(axis=-1), 1.0, rtol=0, atol=2 * logits.shape[-1] * np.finfo(np.float32).eps
    )
