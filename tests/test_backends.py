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


def test_forward_writes_nothing_into_the_encoder():
    """State is explicit: forward returns the new running statistics and the cache, the encoder keeps neither."""
    from moco_ref.models import build_encoder

    encoder = build_encoder("resnet10", dim=4, width=2, bn_splits=2, dtype="float64")
    before = {name: a.copy() for name, a in encoder.state_dict().items()}
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8))
    out, cache, buffers = encoder.forward(x, training=True)
    for name, a in encoder.state_dict().items():
        assert np.array_equal(a, before[name]), f"{name} changed inside forward"
    assert int(buffers["bn1.num_batches_tracked"]) == 1 and not np.allclose(buffers["bn1.running_mean"], 0)
    assert set(vars(encoder)) == {
        "arch",
        "dim",
        "width",
        "mlp",
        "bn_splits",
        "seed",
        "backend",
        "dtype",
        "layout",
        "feature_dim",
        "params",
        "buffers",
    }, "no hidden state beside params and buffers"
    assert encoder.forward(x, training=True, keep_cache=False).cache is None
    with pytest.raises(ValueError, match="cache"):
        encoder.backward(np.ones((4, 4)), None)
    assert set(encoder.backward(np.ones((4, 4)), cache)) == set(encoder.params)


def test_the_key_encoder_is_an_independent_copy():
    """encoder_k starts equal to encoder_q and shares no array with it; its BN trains, it keeps no cache."""
    from moco_ref.moco import MoCo

    model = MoCo(arch="resnet10", width=2, dim=4, K=8, bn_splits=2, dtype="float64")
    q, k = model.encoder_q.state_dict(), model.encoder_k.state_dict()
    assert list(q) == list(k)
    for name in q:
        assert np.array_equal(q[name], k[name]) and not np.shares_memory(q[name], k[name]), name
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8))
    model.step(x, x)
    assert int(model.encoder_k.buffers["bn1.num_batches_tracked"]) == 1  # its BN did train
