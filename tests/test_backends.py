"""The backend switch: the data decides, CuPy is optional, one seed gives the same start everywhere."""

import builtins

import numpy as np
import pytest

import backends
from backends import BackendUnavailable, get_array_module, get_backend, to_numpy
from moco_ref.models import build_encoder
from moco_ref.queue import KeyQueue


def test_numpy_backend_round_trip():
    be = get_backend("numpy")
    assert be.name == "numpy" and be.xp is np
    a = np.arange(6.0).reshape(2, 3)
    assert np.array_equal(be.to_host(be.to_device(a)), a)
    be.synchronize()
    assert get_array_module(a) is np and to_numpy(a) is not None


def test_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        get_backend("jax")


def test_missing_cupy_names_the_fix(monkeypatch):
    real_import = builtins.__import__

    def no_cupy(name, *args, **kwargs):
        if name == "cupy":
            raise ImportError("No module named 'cupy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cupy)
    monkeypatch.setattr(backends, "_CACHE", {})
    with pytest.raises(BackendUnavailable, match=r"pip install 'moco-ref\[gpu\]'"):
        get_backend("cupy")
    assert backends.available_backends() == ["numpy"]


def test_same_seed_same_initial_weights_and_queue():
    a = build_encoder("resnet10", dim=8, width=4, seed=3)
    b = build_encoder("resnet10", dim=8, width=4, seed=3)
    c = build_encoder("resnet10", dim=8, width=4, seed=4)
    for name in a.params:
        assert np.array_equal(a.params[name], b.params[name])
    assert not np.array_equal(a.params["conv1.weight"], c.params["conv1.weight"])
    assert np.array_equal(KeyQueue(16, 8, seed=1).keys, KeyQueue(16, 8, seed=1).keys)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_is_kept_through_a_step(dtype):
    from moco_ref.moco import MoCo

    model = MoCo(arch="resnet10", width=4, dim=8, K=16, bn_splits=2, dtype=dtype)
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(dtype)
    stats = model.step(x, x)
    assert np.isfinite(float(stats["loss"]))
    for store in (model.encoder_q.params, model.encoder_k.params, model.optimizer.buffers):
        for name, p in store.items():
            assert p.dtype == np.dtype(dtype), f"{name} became {p.dtype}"
    assert model.queue.keys.dtype == np.dtype(dtype)


def test_the_key_encoder_keeps_no_backward_cache():
    """The key encoder trains its BN statistics but never backpropagates, so it holds no im2col cache."""
    from moco_ref.moco import MoCo

    model = MoCo(arch="resnet10", width=2, dim=4, K=8, bn_splits=2, dtype="float64")
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8))
    model.step(x, x)
    assert model.encoder_k._cache is None
    assert int(model.encoder_k.buffers["bn1.num_batches_tracked"]) == 1   # its BN did train
    model.encoder_q.forward(x, training=True, keep_cache=False)
    with pytest.raises(RuntimeError, match="kept its cache"):
        model.encoder_q.backward(np.ones((4, 4)))
