"""NumPy/CuPy parity on a real GPU (skipped cleanly without CuPy or a GPU).

TF32 must be off for the float32 comparisons (CuPy's default; ``CUPY_TF32=1`` turns it on).
"""

import os

import numpy as np
import pytest
from helpers import assert_close

from backends import BackendUnavailable, get_backend, to_numpy

try:
    CUPY = get_backend("cupy")
except BackendUnavailable as error:
    pytest.skip(f"no GPU backend here: {error}", allow_module_level=True)

from moco_ref.augment import make_pipeline  # noqa: E402 (after the skip without a GPU)
from moco_ref.moco import MoCo  # noqa: E402 (after the skip without a GPU)
from moco_ref.models import build_encoder  # noqa: E402 (after the skip without a GPU)
from moco_ref.tools.gradcheck import ENCODER_TOLERANCE, compare  # noqa: E402 (after the skip without a GPU)

pytestmark = pytest.mark.skipif(os.environ.get("CUPY_TF32") == "1", reason="parity needs TF32 off")


def _models(dtype):
    kwargs = dict(arch="resnet10", width=8, dim=16, K=64, m=0.99, T=0.1, bn_splits=2, lr=0.06, seed=0, dtype=dtype)
    return MoCo(backend="numpy", **kwargs), MoCo(backend="cupy", **kwargs)


def test_same_seed_gives_identical_initial_weights_and_queue():
    cpu, gpu = _models("float32")
    for name, p in cpu.encoder_q.params.items():
        assert np.array_equal(p, to_numpy(gpu.encoder_q.params[name])), name
    assert np.array_equal(cpu.queue.keys, to_numpy(gpu.queue.keys))


def test_augmentations_agree():
    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    for name in ("v1", "v2", "cifar", "test"):
        pipe = make_pipeline(name, 32)
        a = pipe(images, np.random.default_rng(1), "numpy")
        b = to_numpy(pipe(images, np.random.default_rng(1), "cupy"))
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4, err_msg=name)


def test_three_steps_agree_in_float32():
    cpu, gpu = _models("float32")
    rng = np.random.default_rng(2)
    for step in range(3):
        x_q = rng.standard_normal((16, 3, 32, 32)).astype(np.float32)
        x_k = (x_q + 0.1 * rng.standard_normal(x_q.shape)).astype(np.float32)
        loss_cpu = float(cpu.step(x_q, x_k)["loss"])
        loss_gpu = float(gpu.step(CUPY.to_device(x_q), CUPY.to_device(x_k))["loss"])
        assert abs(loss_cpu - loss_gpu) <= 1e-4 * max(1.0, abs(loss_cpu)), (step, loss_cpu, loss_gpu)
    for name, p in cpu.encoder_q.params.items():
        np.testing.assert_allclose(to_numpy(gpu.encoder_q.params[name]), p, rtol=1e-3, atol=1e-4, err_msg=name)
    np.testing.assert_allclose(to_numpy(gpu.queue.keys), cpu.queue.keys, rtol=1e-3, atol=1e-4)
    assert gpu.queue.ptr == cpu.queue.ptr


def test_float64_gradients_on_the_gpu_match_finite_differences():
    encoder = build_encoder("resnet10", dim=5, width=2, mlp=True, bn_splits=2, backend="cupy", seed=1, dtype="float64")
    rng = np.random.default_rng(3)
    x = CUPY.to_device(rng.standard_normal((4, 3, 8, 8)))
    upstream = CUPY.to_device(rng.standard_normal((4, 5)))

    def loss():
        return float((upstream * encoder.forward(x, training=True).out).sum())

    grads = encoder.backward(upstream, encoder.forward(x, training=True).cache)
    for d in range(3):
        v = {k: CUPY.to_device(rng.standard_normal(p.shape)) for k, p in encoder.params.items()}
        norm = float(sum((t * t).sum() for t in v.values())) ** 0.5
        saved = {k: p.copy() for k, p in encoder.params.items()}
        eps = 1e-6
        for k in encoder.params:
            encoder.params[k][...] = saved[k] + (eps / norm) * v[k]
        plus = loss()
        for k in encoder.params:
            encoder.params[k][...] = saved[k] - (eps / norm) * v[k]
        minus = loss()
        for k in encoder.params:
            encoder.params[k][...] = saved[k]
        numeric = (plus - minus) / (2 * eps)
        analytic = float(sum((grads[k] * v[k]).sum() for k in encoder.params)) / norm
        result = compare(f"gpu encoder / direction {d}", np.array([analytic]), np.array([numeric]), ENCODER_TOLERANCE)
        assert result.passed, result.describe()


def test_gpu_encoder_matches_numpy_in_float64():
    cpu = build_encoder("resnet18", dim=8, width=4, mlp=True, bn_splits=2, backend="numpy", seed=4, dtype="float64")
    gpu = build_encoder("resnet18", dim=8, width=4, mlp=True, bn_splits=2, backend="cupy", seed=4, dtype="float64")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 3, 16, 16))
    g = rng.standard_normal((8, 8))
    (out_cpu, cache_cpu, _), (out_gpu, cache_gpu, _) = cpu.forward(x, True), gpu.forward(CUPY.to_device(x), True)
    assert_close(to_numpy(out_gpu), out_cpu, 1e-9, "float64 output, GPU vs NumPy")
    grads_cpu, grads_gpu = cpu.backward(g, cache_cpu), gpu.backward(CUPY.to_device(g), cache_gpu)
    for name in grads_cpu:
        assert_close(to_numpy(grads_gpu[name]), grads_cpu[name], 1e-8, f"float64 gradient of {name}, GPU vs NumPy")


@pytest.mark.parametrize("name", ["channel_sums", "im2col"])
def test_cupy_fast_function_equals_the_plain_formula(name):
    """Each kernel of backends/cupy_fast.py against its primitive's plain expression, both on the GPU, float64."""
    from test_fast_paths import as_list, batchnorm_arguments

    from backends import cupy_fast, ops

    rng = np.random.default_rng(7)
    if name == "im2col":
        cases = [(rng.standard_normal((2, 9, 7, 3)), 3, 3, s, p) for s, p in ((1, 1), (2, 1), (1, 0))]
        cases.append((rng.standard_normal((2, 8, 8, 4)), 1, 1, 2, 0))
    else:
        cases = batchnorm_arguments(rng, 3, 2, 10, 5, np.float64)[name]
    for args in cases:

        def on_device():
            return tuple(CUPY.to_device(a) if isinstance(a, np.ndarray) else a for a in args)

        fast = as_list(cupy_fast.FAST[name](*on_device()))
        plain = as_list(getattr(ops, name).plain(*on_device()))
        for i, (f, p) in enumerate(zip(fast, plain)):
            assert_close(to_numpy(f), to_numpy(p), 1e-12, f"{name} output {i}, CuPy fast vs plain")
