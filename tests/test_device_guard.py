"""A CPU-side guard for the GPU backend: the training step and augmentations run on arrays that are
as strict as CuPy's (see tests/strict_device.py), so NumPy-only calls, host/device mixing and hidden
synchronisations in the array code fail here, without a GPU."""

import sys

import numpy as np
import pytest
from strict_device import DeviceArray, strict_backend, strict_xp

from backends import get_array_module, ops
from moco_ref.augment import make_pipeline
from moco_ref.moco import MoCo


@pytest.fixture
def strict_cupy(monkeypatch):
    """Strict device arrays that run NumPy's path through the primitives of backends/ops.py: the same
    functions a real backend runs, now refusing what CuPy refuses."""
    monkeypatch.setitem(sys.modules, "cupy", strict_xp)
    ops.use_fast_paths_of(strict_xp, like="backends.numpy_fast")
    return strict_backend


def test_the_guard_refuses_what_cupy_refuses(strict_cupy):
    a = strict_cupy.to_device(np.arange(6.0))
    assert get_array_module(a) is strict_xp
    with pytest.raises(TypeError):
        np.concatenate([a, a])
    with pytest.raises(TypeError):
        a + np.arange(6.0)
    with pytest.raises(TypeError):
        a.sum().item()
    with pytest.raises(TypeError):
        float(a.sum())
    with pytest.raises(TypeError):
        np.add.at(a, [0, 0], 1.0)
    assert isinstance(strict_xp.concatenate([a, a]), DeviceArray)
    assert isinstance(a * 2.0 + np.float32(1), DeviceArray)


@pytest.mark.parametrize("symmetric,mlp", [(False, False), (True, True)])
def test_moco_step_runs_on_strict_device_arrays(strict_cupy, symmetric, mlp):
    model = MoCo(
        arch="resnet10", width=4, dim=8, K=20, bn_splits=2, mlp=mlp, symmetric=symmetric, backend=strict_cupy, seed=0
    )
    assert isinstance(model.encoder_q.params["conv1.weight"], DeviceArray)
    images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    pipeline = make_pipeline("v2", 16)
    rng = np.random.default_rng(1)
    for _ in range(2):
        x_q, x_k = pipeline(images, rng, strict_cupy), pipeline(images, rng, strict_cupy)
        assert isinstance(x_q, DeviceArray)
        stats = model.step(x_q, x_k)
    assert isinstance(stats["loss"], DeviceArray) and isinstance(stats["acc1"], DeviceArray)
    assert np.isfinite(strict_xp.asnumpy(stats["loss"]))
    assert model.queue.ptr == (8 * 2 * (2 if symmetric else 1)) % 20
    for name, p in model.encoder_k.params.items():
        assert isinstance(p, DeviceArray), name


@pytest.mark.parametrize("name", ["v1", "v2", "cifar", "test"])
def test_augmentations_run_on_strict_device_arrays(strict_cupy, name):
    images = np.random.default_rng(0).integers(0, 256, (6, 20, 20, 3), dtype=np.uint8)
    out = make_pipeline(name, 16)(images, np.random.default_rng(0), strict_cupy)
    assert isinstance(out, DeviceArray) and out.shape == (6, 3, 16, 16) and out.dtype == np.float32


def test_knn_runs_on_strict_device_arrays(strict_cupy):
    from moco_ref.evaluation.knn import knn_predict

    rng = np.random.default_rng(0)
    bank = rng.standard_normal((30, 4))
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    labels = np.arange(30) % 3
    predicted = knn_predict(
        strict_cupy.to_device(bank[:5]), strict_cupy.to_device(bank), strict_cupy.to_device(labels), 3, k=1
    )
    assert isinstance(predicted, DeviceArray)
    assert np.array_equal(strict_xp.asnumpy(predicted), labels[:5])  # each point's nearest is itself


ARRAY_CODE = [
    "moco_ref/layers",
    "moco_ref/models",
    "moco_ref/loss.py",
    "moco_ref/queue.py",
    "moco_ref/momentum.py",
    "moco_ref/shuffle.py",
    "moco_ref/moco.py",
    "moco_ref/optim.py",
    "moco_ref/augment",
    "moco_ref/evaluation/knn.py",
    "moco_ref/evaluation/instruments.py",
]


def _array_code_files():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    for entry in ARRAY_CODE:
        path = root / entry
        yield from sorted(path.glob("*.py")) if path.is_dir() else [path]


@pytest.mark.parametrize(
    "pattern,why",
    [
        (".add.at(", "scatter with duplicate indices differs between NumPy and CuPy"),
        (".item()", "a device-to-host synchronisation"),
        ("np.random.rand", "randomness must come from the host numpy Generator passed in"),
        ("xp.random", "device random streams differ between backends; draw on the host"),
    ],
)
def test_array_code_avoids_backend_specific_calls(pattern, why):
    offenders = [
        f"{path.name}:{n}"
        for path in _array_code_files()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern in line and not line.lstrip().startswith("#")
    ]
    assert not offenders, f"{pattern} ({why}) in {offenders}"
