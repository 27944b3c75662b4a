"""Properties of split BatchNorm: S interleaved groups, each normalised with its own batch statistics.

Notation: x (N, H, W, C) channels last, S splits, sample n in group n mod S, so group g is x[g::S].
"""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from backends import ops
from moco_ref.layers.batchnorm import batchnorm_forward


def draw_batch(data):
    """x of N = S·(samples per group) images, the affine parameters and running statistics, all float64."""
    S = data.draw(st.integers(1, 4), label="S splits")
    per_group = data.draw(st.integers(1, 3), label="samples per group")
    H, W = data.draw(st.integers(1, 3), label="H"), data.draw(st.integers(1, 3), label="W")
    C = data.draw(st.integers(1, 3), label="C")
    scale = data.draw(st.sampled_from([1e-2, 1.0, 1e2]), label="scale of x")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    x = scale * rng.standard_normal((S * per_group, H, W, C)) + rng.standard_normal(C)
    gamma, beta = rng.standard_normal(C) + 1.0, rng.standard_normal(C)
    running_mean, running_var = rng.standard_normal(C), rng.uniform(0.5, 2.0, C)
    return S, x, gamma, beta, running_mean, running_var


@given(data=st.data())
def test_split_bn_output_equals_plain_bn_per_interleaved_group(data):
    """Training-mode split BN with S splits gives, on x[g::S], exactly what plain BN gives on x[g::S] alone."""
    S, x, gamma, beta, running_mean, running_var = draw_batch(data)
    y, _, _ = batchnorm_forward(x, gamma, beta, running_mean, running_var, training=True, splits=S)
    for g in range(S):
        y_group, _, _ = batchnorm_forward(x[g::S], gamma, beta, running_mean, running_var, training=True, splits=1)
        np.testing.assert_allclose(y[g::S], y_group, rtol=1e-10, atol=1e-10, err_msg=f"group {g} of {S}")


@given(data=st.data())
def test_split_bn_running_stats_are_mean_of_per_group_updates(data):
    """Split BN's new running mean and variance are the means over groups of plain BN's updates on each x[g::S]."""
    S, x, gamma, beta, running_mean, running_var = draw_batch(data)
    _, (new_mean, new_var), _ = batchnorm_forward(x, gamma, beta, running_mean, running_var, training=True, splits=S)
    updates = [
        batchnorm_forward(x[g::S], gamma, beta, running_mean, running_var, training=True, splits=1)[1] for g in range(S)
    ]
    np.testing.assert_allclose(
        new_mean, np.mean([u[0] for u in updates], axis=0), rtol=1e-10, atol=1e-12, err_msg=f"running mean, S={S}"
    )
    np.testing.assert_allclose(
        new_var, np.mean([u[1] for u in updates], axis=0), rtol=1e-10, atol=1e-12, err_msg=f"running variance, S={S}"
    )


@given(data=st.data())
def test_split_bn_in_eval_mode_equals_plain_bn(data):
    """In eval mode the split count is irrelevant: split BN is plain BN on the running statistics."""
    S, x, gamma, beta, running_mean, running_var = draw_batch(data)
    y, stats, _ = batchnorm_forward(x, gamma, beta, running_mean, running_var, training=False, splits=S)
    y_plain, _, _ = batchnorm_forward(x, gamma, beta, running_mean, running_var, training=False, splits=1)
    assert stats is None
    np.testing.assert_array_equal(y, y_plain)


@given(data=st.data())
def test_channel_sums_are_per_group_per_channel_totals(data):
    """The per-(group, channel) sums BN uses equal direct sums over x[g::S], as the plain formula and as the
    NumPy backend runs them (einsum); tests/gpu checks CuPy's form."""
    S, x, _, _, _, _ = draw_batch(data)
    N, H, W, C = x.shape
    groups = x.reshape(N // S, S, H * W, C)
    expected = np.stack([x[g::S].sum(axis=(0, 1, 2)) for g in range(S)])  # (S, C)
    expected_sq = np.stack([(x[g::S] ** 2).sum(axis=(0, 1, 2)) for g in range(S)])
    tolerance = dict(rtol=1e-10, atol=1e-10 * float(np.abs(x).max() ** 2 + 1))
    for channel_sums in (ops.channel_sums, ops.channel_sums.plain):
        np.testing.assert_allclose(channel_sums(groups), expected, **tolerance)
        np.testing.assert_allclose(channel_sums(groups, groups), expected_sq, **tolerance)
