"""BatchNorm's sums in float32 round like their formula: the exact sum, rounded once.

A BatchNorm layer's Σ g and Σ g·x̂ run over every sample and pixel of a group (32,768 values for the first
stage of the reference network) and nearly cancel: the bias's gradient is a small difference of large sums.
Added one by one in float32, such a sum keeps few correct digits (each addition rounds at the running sum's
magnitude), and every gradient below the layer inherits the error.  PyTorch's CPU BatchNorm adds in
float64; so do moco-ref's sums on every path (the plain formula, NumPy's and Numba's fast functions).  The
bound below is what a float64 accumulation meets with room to spare and a float32 one misses by orders of
magnitude: half an ulp of the result, plus 1e-9 of Σ|a| (the float64 additions' own error is below 1e-11).
"""

import numpy as np
import pytest
from test_fast_paths import TABLES

from backends import numpy_fast, ops

PATHS = {"plain": {"channel_sums": ops.channel_sums.plain}, **TABLES}
EPS32 = float(np.finfo(np.float32).eps)


def nearly_cancelling(rng, shape):
    """A gradient-like array: mostly noise around a small mean, so Σ is far smaller than Σ|·|."""
    return (rng.standard_normal(shape) * 3.0 + 0.01).astype(np.float32)


def assert_rounded_once(result, a, b, what):
    exact = (
        np.einsum("agpc->gc", a.astype(np.float64))
        if b is None
        else np.einsum("agpc,agpc->gc", a.astype(np.float64), b.astype(np.float64))
    )
    magnitude = np.einsum("agpc->gc", np.abs(a.astype(np.float64) * (1.0 if b is None else b)))
    bound = 0.5 * EPS32 * np.abs(exact) + 1e-9 * magnitude
    error = np.abs(result.astype(np.float64) - exact)
    worst = np.unravel_index(np.argmax(error / bound), error.shape)
    assert result.dtype == np.float32, f"{what}: dtype {result.dtype}"
    assert np.all(error <= bound), (
        f"{what}: at (group, channel) {worst} the float32 sum is off by {error[worst]:.3e}, "
        f"{error[worst] / (EPS32 * abs(exact[worst])):.1f} ulp of the exact sum {exact[worst]:.6e} "
        f"(bound {bound[worst]:.3e})"
    )


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("shape", [(32, 2, 1024, 16), (5, 3, 49, 17)], ids=["first stage", "odd"])
def test_channel_sums_in_float32_are_the_exact_sums_rounded_once(path, shape):
    rng = np.random.default_rng(7)
    g = nearly_cancelling(rng, shape)
    x_hat = rng.standard_normal(shape).astype(np.float32)
    channel_sums = PATHS[path]["channel_sums"]
    assert_rounded_once(channel_sums(g), g, None, f"Σ g, {path}")
    assert_rounded_once(channel_sums(g, x_hat), g, x_hat, f"Σ g·x̂, {path}")


def test_a_float32_accumulation_misses_the_bound():
    """The bound has teeth: NumPy's einsum adding in float32 (the fault this file guards against) misses it."""
    rng = np.random.default_rng(7)
    g = nearly_cancelling(rng, (32, 2, 1024, 16))
    with pytest.raises(AssertionError, match="ulp of the exact sum"):
        assert_rounded_once(np.einsum("agpc->gc", g), g, None, "einsum in float32")
    assert numpy_fast.channel_sums(g).dtype == np.float32
