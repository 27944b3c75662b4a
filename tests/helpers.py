"""Small helpers shared by the tests."""

import numpy as np


def max_relative_error(actual, expected) -> float:
    """max |a − e| / max(max |e|, tiny): a relative error over the whole array."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"shapes differ: {a.shape} vs {e.shape}"
    return float(np.abs(a - e).max(initial=0.0) / max(np.abs(e).max(initial=0.0), 1e-300))


def assert_close(actual, expected, rtol: float, what: str) -> None:
    """Asserts a relative error ≤ rtol, naming the worst element on failure."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    error = max_relative_error(a, e)
    if error > rtol:
        worst = np.unravel_index(int(np.argmax(np.abs(a - e))), a.shape) if a.size else ()
        raise AssertionError(f"{what}: relative error {error:.3e} > {rtol:.0e} at {worst}: "
                             f"got {a[worst]!r}, expected {e[worst]!r}")
