"""The seam of backends/ops.py: every fast function a backend registers equals its plain formula.

Run on NumPy here; tests/gpu/test_gpu_parity.py runs the same comparison for CuPy's kernels.  Breaking a
fast function on purpose (a wrong sign, a missing term) fails the test of that primitive.
"""

import numpy as np
import pytest
from helpers import assert_close
from hypothesis import given
from hypothesis import strategies as st

from backends import numpy_fast, ops

PRIMITIVES = sorted(numpy_fast.FAST)


def batchnorm_arguments(rng, A, S, P, C):
    """Arguments for each primitive, on groups shaped (A, S, P, C) with per-group vectors (S, C)."""
    x = rng.standard_normal((A, S, P, C)) * 3.0 + 1.0
    vector = lambda: rng.standard_normal((S, C))         # noqa: E731
    channel = lambda: rng.standard_normal(C)             # noqa: E731
    return {
        "channel_sums": [(x,), (x, rng.standard_normal(x.shape))],
        "centre": [(x, vector()), (x, channel())],                                   # eval mode: (C,)
        "scale_shift_": [(x, np.abs(vector()) + 0.1, channel(), channel()),
                        (x, np.abs(channel()) + 0.1, channel(), channel())],
        "batchnorm_input_grad": [(x, rng.standard_normal(x.shape), vector(), vector(), vector())],
        "relu": [(x,)],
    }


def as_list(result):
    return list(result) if isinstance(result, tuple) else [result]


def test_every_numpy_fast_function_names_a_primitive():
    for name in PRIMITIVES:
        assert hasattr(getattr(ops, name, None), "plain"), f"numpy_fast.{name} is not a primitive of backends/ops.py"


@pytest.mark.parametrize("name", PRIMITIVES)
@given(A=st.integers(1, 3), S=st.integers(1, 3), P=st.integers(1, 6), C=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_numpy_fast_function_equals_the_plain_formula(name, A, S, P, C, seed):
    rng = np.random.default_rng(seed)
    for args in batchnorm_arguments(rng, A, S, P, C)[name]:
        # copies: a primitive whose name ends in _ may write over its first argument
        fast = as_list(numpy_fast.FAST[name](*[a.copy() if isinstance(a, np.ndarray) else a for a in args]))
        plain = as_list(getattr(ops, name).plain(*[a.copy() if isinstance(a, np.ndarray) else a for a in args]))
        assert len(fast) == len(plain)
        for i, (f, p) in enumerate(zip(fast, plain)):
            assert f.shape == p.shape, f"{name} output {i}: shape {f.shape} vs {p.shape}"
            assert_close(f, p, 1e-12, f"{name} output {i}, NumPy fast vs plain")


def test_the_data_chooses_the_path():
    """NumPy arrays run NumPy's fast functions; an array module without a table runs the plain formulas."""
    import types

    assert ops._fast_table(np)["relu"] is numpy_fast.relu
    assert ops._fast_table(types.ModuleType("another_array_library")) == {}


@pytest.mark.parametrize("shape,kernel,stride,padding", [((2, 5, 6, 3), 3, 1, 1), ((2, 7, 7, 2), 3, 2, 1),
                                                         ((1, 6, 6, 4), 1, 2, 0), ((3, 4, 4, 1), 3, 1, 0)])
def test_im2col_rows_are_the_patches_under_each_output_pixel(shape, kernel, stride, padding):
    """The formula itself, by a direct loop: row (n, i, j) holds x_pad[n, i·s + a, j·s + b, c] at column (a, b, c)."""
    x = np.random.default_rng(1).standard_normal(shape)
    N, H, W, C = shape
    padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    Ho, Wo = (H + 2 * padding - kernel) // stride + 1, (W + 2 * padding - kernel) // stride + 1
    expected = np.stack([padded[n, i * stride:i * stride + kernel, j * stride:j * stride + kernel, :].reshape(-1)
                         for n in range(N) for i in range(Ho) for j in range(Wo)])
    assert np.array_equal(ops.im2col(x, kernel, kernel, stride, padding), expected)


def test_no_code_under_moco_ref_picks_a_path_by_backend_name_or_imports_cupy():
    """Speed lives behind backends/ops.py: the library never branches on a backend's name nor imports CuPy or its
    kernels. (The communicator seam's NCCL engine, moco_ref/distributed.py, and the GPU benchmark tools under
    moco_ref/bench/ are engine adapters and do import CuPy; they are the only exceptions.)"""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "moco_ref"
    pattern = re.compile(r"^\s*(import cupy|from cupy)|cupy_fast|numpy_fast|xp\.__name__|backend\.name\s*[!=]=|"
                         r"__name__\s*==\s*[\"'](numpy|cupy)")
    offenders = [f"{path.relative_to(root)}:{n}" for path in sorted(root.rglob("*.py"))
                 if path.name != "distributed.py" and "bench" not in path.parts
                 for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, f"backend-specific code outside backends/: {offenders}"
