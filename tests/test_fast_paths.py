"""The seam of backends/ops.py: every fast function a backend registers equals its plain formula.

Both of NumPy's fast paths are checked here, whichever the process runs: backends/numpy_fast.py
(one core) and backends/numba_fast.py (Numba, every core; skipped where Numba is not installed).
tests/gpu/test_gpu_parity.py runs the same comparison for CuPy's kernels.  Breaking a fast function
on purpose (a wrong sign, a missing term) fails the test of that primitive.
"""

import importlib.util
import os

import numpy as np
import pytest
from helpers import assert_close
from hypothesis import given
from hypothesis import strategies as st

from backends import numpy_fast, ops

HAVE_NUMBA = importlib.util.find_spec("numba") is not None
TABLES = {"numpy_fast": numpy_fast.FAST}
if HAVE_NUMBA:
    from backends import numba_fast

    TABLES["numba_fast"] = numba_fast.FAST
IN_PLACE = ("sgd_update_", "ema_update_")
CONVOLUTION = ("im2col", "col2im", "conv2d_forward", "conv2d_backward", "conv_weight_grad")  # on convolution shapes
CASES = sorted(
    (module, name) for module, table in TABLES.items() for name in table if name not in CONVOLUTION + IN_PLACE
)
# Tolerances: float64 inputs; float32 runs at float32's precision.  The inputs are of order 1 to 10, so
# errors are measured against the outputs' largest magnitude or 1, whichever is larger (a ReLU that leaves
# only tiny outputs must not turn float32 rounding into a large relative error).
TOLERANCE = {np.float64: 1e-12, np.float32: 2e-5}


def assert_equal_up_to_rounding(fast, plain, rtol, what):
    scale = max(np.abs(fast).max(initial=0.0), np.abs(plain).max(initial=0.0), 1.0)
    error = np.abs(fast.astype(np.float64) - plain).max(initial=0.0) / scale
    assert error <= rtol, f"{what}: error {error:.3e} > {rtol:.0e} (of max(|output|, 1))"


def batchnorm_arguments(rng, A, S, P, C, dtype):
    """Arguments for each primitive, on groups shaped (A, S, P, C) with per-group vectors (S, C)."""

    def array(*shape, scale=1.0, shift=0.0):
        return (rng.standard_normal(shape) * scale + shift).astype(dtype)

    x = array(A, S, P, C, scale=3.0, shift=1.0)
    vector = lambda: array(S, C)  # noqa: E731 (a table of input makers)
    channel = lambda: array(C)  # noqa: E731 (a table of input makers)
    positive = lambda *shape: (np.abs(array(*shape)) + 0.1).astype(dtype)  # noqa: E731 (a table of input makers)
    return {
        "channel_sums": [(x,), (x, array(*x.shape))],
        "channel_moments": [(x,)],
        "batchnorm_output": [
            (x, vector(), positive(S, C), channel(), channel()),
            (x, channel(), positive(C), channel(), channel()),  # eval mode: (C,)
            (x, vector(), positive(S, C), channel(), channel(), array(*x.shape), True),
            (x, vector(), positive(S, C), channel(), channel(), None, True),
        ],
        "batchnorm_grad_sums": [
            (array(*x.shape), x, vector(), positive(S, C)),
            (array(*x.shape), x, channel(), positive(C)),
        ],
        "batchnorm_input_grad": [(array(*x.shape), x, vector(), positive(S, C), vector(), vector(), vector())],
        "relu": [(x,)],
        "relu_backward": [(array(*x.shape), x), (array(*x.shape), x > 0)],  # the output, or the mask
    }


def as_list(result):
    return list(result) if isinstance(result, tuple) else [result]


def copies(args):
    return [a.copy() if isinstance(a, np.ndarray) else a for a in args]


def test_every_fast_function_names_a_primitive():
    for module, table in TABLES.items():
        for name in table:
            assert hasattr(getattr(ops, name, None), "plain"), f"{module}.{name} is not a primitive of backends/ops.py"


@pytest.mark.parametrize("module,name", CASES)
@given(
    A=st.integers(1, 3),
    S=st.integers(1, 3),
    P=st.integers(1, 6),
    C=st.integers(1, 5),
    seed=st.integers(0, 2**16),
    dtype=st.sampled_from([np.float64, np.float32]),
)
def test_fast_function_equals_the_plain_formula(module, name, A, S, P, C, seed, dtype):
    rng = np.random.default_rng(seed)
    for args in batchnorm_arguments(rng, A, S, P, C, dtype)[name]:
        fast = as_list(TABLES[module][name](*copies(args)))
        plain = as_list(getattr(ops, name).plain(*copies(args)))
        assert len(fast) == len(plain)
        what = f"{name}, {module} vs plain ({np.dtype(dtype).name})"
        for i, (f, p) in enumerate(zip(fast, plain)):
            if p is None:
                assert f is None, f"{what}: output {i} should be None"
                continue
            assert f.shape == p.shape, f"{what}: output {i}: shape {f.shape} vs {p.shape}"
            assert f.dtype == p.dtype, f"{what}: output {i}: dtype {f.dtype} vs {p.dtype}"
            if p.dtype == bool:  # a ReLU's mask: equal except where the value it masks is 0 up to rounding
                y = np.maximum(np.abs(fast[0]), np.abs(plain[0]))
                scale = max(y.max(initial=0.0), 1.0)
                assert np.all((f == p) | (y <= TOLERANCE[dtype] * scale)), f"{what}: mask {i} differs"
            else:
                assert_equal_up_to_rounding(f, p, TOLERANCE[dtype], f"{what}: output {i}")


CONV_SHAPES = [
    ((2, 5, 6, 3), 3, 1, 1),
    ((2, 7, 7, 2), 3, 2, 1),
    ((1, 6, 6, 4), 1, 2, 0),
    ((3, 4, 4, 1), 3, 1, 0),
    ((2, 8, 8, 3), 3, 2, 1),
    ((1, 5, 5, 2), 3, 1, 2),
]


@pytest.mark.parametrize("shape,kernel,stride,padding", CONV_SHAPES)
def test_im2col_rows_are_the_patches_under_each_output_pixel(shape, kernel, stride, padding):
    """The formula itself, by a direct loop: row (n, i, j) holds x_pad[n, i·s + a, j·s + b, c] at column (a, b, c)."""
    x = np.random.default_rng(1).standard_normal(shape)
    N, H, W, C = shape
    padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    Ho, Wo = (H + 2 * padding - kernel) // stride + 1, (W + 2 * padding - kernel) // stride + 1
    expected = np.stack(
        [
            padded[n, i * stride : i * stride + kernel, j * stride : j * stride + kernel, :].reshape(-1)
            for n in range(N)
            for i in range(Ho)
            for j in range(Wo)
        ]
    )
    assert np.array_equal(ops.im2col.plain(x, kernel, kernel, stride, padding), expected)
    for module, table in TABLES.items():
        if "im2col" in table:
            assert np.array_equal(table["im2col"](x, kernel, kernel, stride, padding), expected), module


@pytest.mark.parametrize("shape,kernel,stride,padding", CONV_SHAPES)
def test_col2im_is_the_adjoint_of_im2col(shape, kernel, stride, padding):
    """<im2col(x), G> = <x, col2im(G)> for every x and G: col2im adds each patch entry back to the pixel it
    was copied from, and nothing else."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape)
    cols = ops.im2col.plain(x, kernel, kernel, stride, padding)
    G = rng.standard_normal(cols.shape)
    for module, col2im in [("plain", ops.col2im.plain)] + [
        (m, t["col2im"]) for m, t in TABLES.items() if "col2im" in t
    ]:
        dx = col2im(G, shape, kernel, kernel, stride, padding)
        assert dx.shape == shape, module
        assert abs(np.sum(cols * G) - np.sum(x * dx)) < 1e-10 * np.abs(cols * G).sum(), module
        if module != "plain":
            assert_close(dx, ops.col2im.plain(G, shape, kernel, kernel, stride, padding), 1e-14, f"col2im, {module}")


@pytest.mark.parametrize("module", sorted(m for m, t in TABLES.items() if "sgd_update_" in t))
@pytest.mark.parametrize("size", [10, 100_003], ids=["small", "large"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum,weight_decay,nesterov", [(0.9, 5e-4, False), (0.9, 5e-4, True), (0.0, 0.0, False)])
def test_sgd_and_ema_fast_paths_give_numpys_bits(module, size, dtype, momentum, weight_decay, nesterov):
    """The optimiser's and the momentum update's fused passes do NumPy's float operations in NumPy's order and
    precision: the same bits, so a run is the same with and without them."""
    rng = np.random.default_rng(size)
    p, g, b = (rng.standard_normal(size).astype(dtype) for _ in range(3))
    fast, plain = [p.copy(), b.copy()], [p.copy(), b.copy()]
    TABLES[module]["sgd_update_"](fast[0], g, fast[1], 0.03, momentum, weight_decay, nesterov)
    ops.sgd_update_.plain(plain[0], g, plain[1], 0.03, momentum, weight_decay, nesterov)
    assert np.array_equal(fast[0], plain[0]) and np.array_equal(fast[1], plain[1])
    assert not np.array_equal(fast[0], p)  # it did update
    k_fast, k_plain = p.copy(), p.copy()
    TABLES[module]["ema_update_"](k_fast, g, 0.99)
    ops.ema_update_.plain(k_plain, g, 0.99)
    assert np.array_equal(k_fast, k_plain)


@pytest.mark.skipif(not HAVE_NUMBA, reason="Numba is not installed")
def test_a_training_step_gives_the_same_bits_with_one_or_all_kernel_threads():
    """The whole step, Numba's kernels on 1 thread and on all: every parameter, buffer and queue entry equal (the
    32×32 images make the first stage's convolutions run the direct kernel)."""
    from moco_ref.moco import MoCo
    from moco_ref.run.checkpoint import model_arrays

    x = np.random.default_rng(0).standard_normal((8, 3, 32, 32), dtype=np.float32)  # 32×32: direct convolutions
    states = []
    for threads in (1, None):
        numba_fast.set_threads(threads)
        model = MoCo(arch="resnet10", width=4, dim=8, K=32, bn_splits=2, dtype="float32", seed=3)
        for _ in range(2):
            model.step(x, x[::-1].copy())
        states.append({k: np.asarray(v) for k, v in model_arrays(model.state_dict()).items()})
    numba_fast.set_threads()
    assert states[0].keys() == states[1].keys()
    for name in states[0]:
        assert np.array_equal(states[0][name], states[1][name]), name


@pytest.mark.skipif(not HAVE_NUMBA, reason="Numba is not installed")
def test_a_training_step_gives_the_same_bits_on_openmps_threads_and_on_workqueues():
    """The threading layer changes who runs each sample's piece, never the pieces or the order they are added in:
    two steps on Numba's "omp" and "workqueue" layers (fresh processes) give the same bits."""
    import subprocess
    import sys

    try:
        from numba.np.ufunc import omppool  # noqa: F401
    except (ImportError, OSError):
        pytest.skip("Numba's OpenMP layer cannot load here")
    code = (
        "import hashlib, moco_ref, numba, numpy as np; from moco_ref.moco import MoCo; "
        "from moco_ref.run.checkpoint import model_arrays; "
        "x = np.random.default_rng(0).standard_normal((8, 3, 32, 32), dtype=np.float32); "
        "m = MoCo(arch='resnet10', width=4, dim=8, K=32, bn_splits=2, dtype='float32', seed=3); "
        "[m.step(x, x[::-1].copy()) for _ in range(2)]; h = hashlib.sha256(); "
        "arrays = sorted(model_arrays(m.state_dict()).items()); "
        "[h.update(k.encode() + np.ascontiguousarray(v).tobytes()) for k, v in arrays]; "
        "print(numba.threading_layer(), h.hexdigest())"
    )
    results = {}
    for layer in ("omp", "workqueue"):
        env = dict(os.environ, NUMBA_THREADING_LAYER=layer)
        env.pop("MOCO_REF_NUMBA", None)
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        used, digest = done.stdout.split()
        assert used == layer
        results[layer] = digest
    assert results["omp"] == results["workqueue"]


@pytest.mark.skipif(not HAVE_NUMBA, reason="Numba is not installed")
def test_numba_kernels_give_the_same_bits_with_any_thread_count():
    """Reductions are split per sample and summed in a fixed order: 1 thread and all threads agree exactly."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 2, 50, 7)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    results = []
    for threads in (1, numba_fast.set_threads()):
        numba_fast.set_threads(threads)
        mean, var = numba_fast.channel_moments(x)
        inv_std = 1 / np.sqrt(var + 1e-5)
        results.append(
            [
                mean,
                var,
                *numba_fast.batchnorm_grad_sums(g, x, mean, inv_std),
                numba_fast.im2col(x.reshape(8, 10, 5, 7), 3, 3, 1, 1),
            ]
        )
    numba_fast.set_threads()
    for a, b in zip(*results):
        assert np.array_equal(a, b)


# Convolutions for the registered conv2d fast functions: (x's shape (N, H, W, C), O, kernel, stride, padding).
# For each direct kernel (3×3 at stride 1 and 2, the 1×1 downsample): wide images the rule gives it, batch 1,
# 1×1, 2×2 and odd-sized images, channel counts that are not multiples of the vector width nor of the two output
# planes computed at a time; and the shapes that fall back to im2col: narrow, many channels, the 7×7 stem,
# padding 0 at stride 1.
LAYER_SHAPES = [
    ((1, 1, 32, 3), 5, 3, 1, 1),
    ((2, 3, 33, 5), 7, 3, 1, 1),
    ((1, 32, 32, 16), 16, 3, 1, 1),
    ((3, 2, 40, 1), 13, 3, 1, 1),
    ((2, 1, 1, 3), 2, 3, 1, 1),
    ((1, 1, 1, 1), 1, 3, 1, 1),
    ((2, 5, 6, 3), 4, 3, 1, 1),
    ((3, 7, 4, 5), 1, 3, 1, 1),
    ((2, 6, 9, 17), 5, 3, 1, 1),
    ((1, 4, 32, 17), 3, 3, 1, 1),
    ((1, 3, 16, 33), 32, 3, 1, 1),
    ((2, 3, 15, 4), 4, 3, 1, 1),
    ((2, 7, 34, 5), 6, 3, 2, 1),
    ((1, 32, 32, 16), 32, 3, 2, 1),
    ((2, 6, 33, 3), 17, 3, 2, 1),
    ((1, 1, 1, 3), 5, 3, 2, 1),
    ((2, 2, 2, 5), 3, 3, 2, 1),
    ((1, 5, 7, 17), 3, 3, 2, 1),
    ((3, 7, 5, 5), 1, 3, 2, 1),
    ((1, 4, 16, 40), 32, 3, 2, 1),
    ((2, 8, 32, 3), 6, 1, 2, 0),
    ((1, 32, 32, 16), 32, 1, 2, 0),
    ((1, 1, 1, 3), 5, 1, 2, 0),
    ((2, 2, 2, 5), 3, 1, 2, 0),
    ((1, 5, 7, 17), 3, 1, 2, 0),
    ((3, 7, 5, 17), 1, 1, 2, 0),
    ((1, 9, 33, 3), 4, 7, 2, 3),
    ((2, 4, 32, 3), 5, 3, 1, 0),
]
# The rule the layer tables gave (benchmarks/RESULTS.md): (kernel, stride, padding) -> (the most C·O, the narrowest
# image) for which the direct kernel runs; the stride-2 kernels run only where the fixture below says so.
RULE = {(3, 1, 1): (32 * 32, 16)}
STRIDE2 = [(3, 2, 1), (1, 2, 0)]


def conv_tables():
    return sorted((m, t) for m, t in TABLES.items() if "conv2d_forward" in t)


@pytest.fixture(params=["the rule", "direct wherever it can"])
def direct_rule(request, monkeypatch):
    """The registered conv2d functions as they choose, and with a direct kernel taken on every shape one exists
    for (tiny images and many channels included)."""
    if request.param != "the rule" and HAVE_NUMBA:
        assert sorted(numba_fast.DIRECT_KERNELS) == sorted([*RULE, *STRIDE2]), "a direct kernel these tests miss"
        monkeypatch.setattr(numba_fast, "DIRECT_RULE", {kind: (1 << 30, 1) for kind in numba_fast.DIRECT_KERNELS})
    return request.param


def direct_expected(direct_rule, shape, O, kernel, stride, padding):
    """Whether the direct kernel should run: one exists for the convolution, and the rule (or the fixture) takes it."""
    kind = (kernel, stride, padding)
    if direct_rule != "the rule":
        return kind in RULE or kind in STRIDE2
    return kind in RULE and shape[3] * O <= RULE[kind][0] and shape[2] >= RULE[kind][1]


@pytest.mark.skipif(not HAVE_NUMBA, reason="Numba is not installed")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape,O,kernel,stride,padding", LAYER_SHAPES)
def test_conv2d_fast_functions_equal_the_plain_primitives(direct_rule, shape, O, kernel, stride, padding, dtype):
    """y, ∂L/∂x and ∂L/∂W of the registered conv2d_forward / conv2d_backward equal the plain im2col + GEMM
    primitives, with and without ∂L/∂x; where the direct kernel is taken, no im2col matrix is kept."""
    rng = np.random.default_rng(sum(shape) + O + kernel)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((O, shape[3], kernel, kernel)).astype(dtype)
    rtol, what = TOLERANCE[dtype], f"{shape}, O={O}, {kernel}x{kernel}/{stride} pad {padding}, {np.dtype(dtype).name}"
    for module, table in conv_tables():
        y_plain, cache_plain = ops.conv2d_forward.plain(x, w, stride, padding)
        y, cache = table["conv2d_forward"](x, w, stride, padding)
        direct = numba_fast.direct_conv_wanted(x.shape, w.shape, stride, padding)
        assert direct == direct_expected(direct_rule, shape, O, kernel, stride, padding), f"{module}: which path"
        assert cache[0].shape == (x.shape if direct else cache_plain[0].shape), f"{module}: what the cache keeps"
        assert y.dtype == dtype and y.shape == y_plain.shape
        assert_equal_up_to_rounding(y, y_plain, rtol, f"{module} forward, {what}")
        dy = rng.standard_normal(y.shape).astype(dtype)
        for need_dx in (True, False):
            dx_plain, dw_plain = ops.conv2d_backward.plain(dy, cache_plain, need_dx)
            dx, dw = table["conv2d_backward"](dy.copy(), cache, need_dx)
            assert dw.dtype == dtype and dw.shape == w.shape
            assert_equal_up_to_rounding(dw, dw_plain, rtol, f"{module} ∂W, {what}")
            if need_dx:
                assert dx.dtype == dtype and dx.shape == x.shape
                assert_equal_up_to_rounding(dx, dx_plain, rtol, f"{module} ∂x, {what}")
            else:
                assert dx is None


@pytest.mark.skipif(not HAVE_NUMBA, reason="Numba is not installed")
@pytest.mark.parametrize(
    "x_dtype,w_dtype,dy_dtype",
    [(np.float32, np.float64, np.float64), (np.float64, np.float32, np.float32), (np.float32, np.float32, np.float64)],
)
@pytest.mark.parametrize("shape", [(2, 3, 33, 5), (2, 3, 5, 5)])
@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (3, 2, 1), (1, 2, 0)])
def test_conv2d_fast_functions_give_the_plain_formulas_dtypes(
    direct_rule, shape, kernel, stride, padding, x_dtype, w_dtype, dy_dtype
):
    """Mixed dtypes (float32 images into a float64 model): the outputs have the dtypes NumPy's products give."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal(shape).astype(x_dtype)
    w = rng.standard_normal((4, shape[3], kernel, kernel)).astype(w_dtype)
    y_plain, cache_plain = ops.conv2d_forward.plain(x, w, stride, padding)
    y, cache = numba_fast.conv2d_forward(x, w, stride, padding)
    dy = rng.standard_normal(y.shape).astype(dy_dtype)
    expected = [y_plain, *ops.conv2d_backward.plain(dy, cache_plain)]
    for got, plain, what in zip([y, *numba_fast.conv2d_backward(dy, cache)], expected, ("y", "∂x", "∂W")):
        assert got.dtype == plain.dtype, f"{what}: {got.dtype} vs {plain.dtype}"
        assert_equal_up_to_rounding(got, plain, TOLERANCE[np.float32], what)


@pytest.mark.skipif(not HAVE_NUMBA, reason="Numba is not installed")
@pytest.mark.parametrize(
    "shape,O,kernel,stride,padding",
    [
        ((2, 3, 33, 5), 7, 3, 1, 1),
        ((2, 5, 6, 3), 4, 3, 1, 1),
        ((3, 7, 34, 5), 6, 3, 2, 1),
        ((4, 5, 7, 17), 3, 3, 2, 1),
        ((3, 9, 33, 5), 7, 1, 2, 0),
        ((4, 5, 7, 17), 3, 1, 2, 0),
    ],
)
def test_conv2d_fast_functions_give_the_same_bits_with_one_or_two_threads(
    direct_rule, shape, O, kernel, stride, padding
):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((O, shape[3], kernel, kernel)).astype(np.float32)
    results = []
    for threads in (1, 2):
        numba_fast.set_threads(threads)
        y, cache = numba_fast.conv2d_forward(x, w, stride, padding)
        dy = np.random.default_rng(8).standard_normal(y.shape).astype(np.float32)
        results.append([y, *numba_fast.conv2d_backward(dy, cache)])
    numba_fast.set_threads()
    for a, b in zip(*results):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("O,C,kernel", [(4, 3, 3), (16, 16, 3), (512, 64, 3)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_conv_weight_grad_equals_the_plain_formula(O, C, kernel, dtype):
    """numpy_fast's ∂L/∂W, (Xᵀ·G)ᵀ for small weights, equals Gᵀ·X up to rounding, and is Gᵀ·X itself, bit for bit,
    for a weight above SMALL_WEIGHT entries."""
    rng = np.random.default_rng(O + C)
    w_shape = (O, C, kernel, kernel)
    G = rng.standard_normal((50, O)).astype(dtype)
    cols = rng.standard_normal((50, C * kernel * kernel)).astype(dtype)
    fast, plain = numpy_fast.conv_weight_grad(G, cols, w_shape), ops.conv_weight_grad.plain(G, cols, w_shape)
    assert fast.shape == plain.shape == w_shape and fast.dtype == plain.dtype == dtype and fast.flags.c_contiguous
    assert_equal_up_to_rounding(fast, plain, TOLERANCE[dtype], f"conv_weight_grad {w_shape}")
    if O * C * kernel * kernel > numpy_fast.SMALL_WEIGHT:
        assert np.array_equal(fast, plain)


def docstring_table():
    """{path: {primitive: module}} as backends/ops.py's docstring writes it (a cell's footnote mark left off)."""
    import re

    lines = ops.__doc__.splitlines()
    top = next(i for i, line in enumerate(lines) if line.split()[:1] == ["primitive"])
    paths = re.split(r"\s{2,}", lines[top].strip())[1:]
    table = {path: {} for path in paths}
    for line in lines[top + 2 :]:
        if not line.strip():
            break
        name, *cells = line.split()
        assert len(cells) == len(paths), f"ops.__doc__, row {name}: {len(cells)} cells for {len(paths)} paths"
        for path, cell in zip(paths, cells):
            table[path][name] = re.sub(r"\[\d+\]$", "", cell)
    return table


@pytest.fixture
def cupy_fast_importable(monkeypatch):
    """backends/cupy_fast.py importable for its FAST table: a stand-in ``cupy`` module where CuPy is not installed
    (the module calls CuPy only inside its functions); the stand-in's import is forgotten afterwards."""
    import sys
    import types

    if importlib.util.find_spec("cupy") is not None:
        yield
        return
    monkeypatch.setitem(sys.modules, "cupy", types.ModuleType("cupy"))
    monkeypatch.delitem(sys.modules, "backends.cupy_fast", raising=False)
    try:
        yield
    finally:
        sys.modules.pop("backends.cupy_fast", None)
        import backends

        if hasattr(backends, "cupy_fast"):
            delattr(backends, "cupy_fast")


@pytest.mark.skipif(not HAVE_NUMBA, reason="Numba is not installed")
def test_the_docstring_table_is_what_dispatch_does(cupy_fast_importable, monkeypatch):
    """backends/ops.py's table of which function runs: one row per primitive, and every cell what ops.which gives for
    that path; for NumPy, what a call runs (with Numba, and a fresh table with MOCO_REF_NUMBA=0)."""
    table = docstring_table()
    assert list(table) == ["NumPy + Numba", "NumPy, MOCO_REF_NUMBA=0", "CuPy", "other"]
    for column in table.values():
        assert list(column) == ops.PRIMITIVES, "the table's rows are the primitives, in order"
    resolved = {
        "NumPy + Numba": {name: ops.which(name, "numpy", numba=True) for name in ops.PRIMITIVES},
        "NumPy, MOCO_REF_NUMBA=0": {name: ops.which(name, "numpy", numba=False) for name in ops.PRIMITIVES},
        "CuPy": {name: ops.which(name, "cupy") for name in ops.PRIMITIVES},
        "other": {name: ops.which(name, "another_array_library") for name in ops.PRIMITIVES},
    }
    assert table == resolved
    modules = {"numpy_fast": numpy_fast.FAST, "numba_fast": numba_fast.FAST}
    expected = {
        path: {name: modules[m][name] for name, m in table[path].items() if m != "plain"}
        for path in ("NumPy + Numba", "NumPy, MOCO_REF_NUMBA=0")
    }
    this_process = "NumPy + Numba" if ops.numba_wanted() else "NumPy, MOCO_REF_NUMBA=0"
    assert ops._fast_table(np) == expected[this_process], "what NumPy's arrays run in this process"
    monkeypatch.delenv("MOCO_REF_NUMBA", raising=False)
    assert ops._load_table("numpy") == expected["NumPy + Numba"]
    monkeypatch.setenv("MOCO_REF_NUMBA", "0")
    assert ops._load_table("numpy") == expected["NumPy, MOCO_REF_NUMBA=0"]


def test_the_data_chooses_the_path():
    """NumPy arrays run NumPy's fast functions (Numba's where installed); an array module without a table runs
    the plain formulas."""
    import types

    expected = numba_fast.batchnorm_output if HAVE_NUMBA and ops.numba_wanted() else numpy_fast.batchnorm_output
    assert ops._fast_table(np)["batchnorm_output"] is expected
    assert ops._fast_table(types.ModuleType("another_array_library")) == {}


def test_numba_can_be_switched_off(monkeypatch):
    """MOCO_REF_NUMBA=0 gives NumPy's one-core path (numpy_fast) even where Numba is installed."""
    monkeypatch.setenv("MOCO_REF_NUMBA", "0")
    table = ops._load_table("numpy")
    assert table == numpy_fast.FAST


def test_no_code_under_moco_ref_picks_a_path_by_backend_name_or_imports_cupy():
    """Speed lives behind backends/ops.py: the library never branches on a backend's name nor imports CuPy, Numba or
    their kernels (the NCCL communicator takes its CuPy calls from backends/nccl.py).  The GPU benchmark tools under
    moco_ref/bench/ time CuPy against PyTorch and are the one exception."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "moco_ref"
    pattern = re.compile(
        r"^\s*(import cupy|from cupy|import numba|from numba)|cupy_fast|numpy_fast|numba_fast|"
        r"xp\.__name__|backend\.name\s*[!=]=|__name__\s*==\s*[\"'](numpy|cupy)"
    )
    offenders = [
        f"{path.relative_to(root)}:{n}"
        for path in sorted(root.rglob("*.py"))
        if "bench" not in path.parts
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders, f"backend-specific code outside backends/: {offenders}"
