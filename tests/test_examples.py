"""The examples run, with quick settings, and print what they promise.

Each example has a ``main()`` with quick-setting arguments: temperature and EMA are called in-process
(their numbers are checked against the closed forms); the two training examples run as scripts, as a
user would start them, with tiny settings (width 2, a few steps).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from moco_ref.run.checkpoint import load_checkpoint

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # fast on a busy machine


def load_example(name: str):
    """Imports examples/<name>.py as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(name: str, *args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=cwd,
        timeout=timeout,
    )


# ------------------------------------------------------------------------- temperature


def test_temperature_table_is_the_tutorials_figure(capsys, tmp_path):
    temperature = load_example("temperature")
    p = temperature.main(out=tmp_path / "t.png")
    out = capsys.readouterr().out

    z = np.array([1.0, 2.0, 3.0])
    for row, tau in zip(p, (0.5, 1.0, 2.0)):
        expected = np.exp(z / tau) / np.exp(z / tau).sum()
        np.testing.assert_allclose(row, expected, rtol=1e-12, err_msg=f"τ = {tau}")
    np.testing.assert_allclose(p[1], [0.0900, 0.2447, 0.6652], atol=5e-5)  # the plain softmax
    # small τ sharpens, large τ flattens: the top probability falls and the entropy rises with τ
    assert p[0, 2] > p[1, 2] > p[2, 2] > 1 / 3
    entropy = temperature.entropy_bits(p)
    assert entropy[0] < entropy[1] < entropy[2] < math.log2(3)
    # the largest over the smallest probability is exp((3 − 1) / τ)
    np.testing.assert_allclose(p[:, 2] / p[:, 0], np.exp(2 / np.array([0.5, 1.0, 2.0])), rtol=1e-12)

    assert "0.5  0.0159  0.1173  0.8668" in out
    assert "    1  0.0900  0.2447  0.6652" in out
    assert "    2  0.1863  0.3072  0.5065" in out
    if HAS_MATPLOTLIB:
        assert (tmp_path / "t.png").stat().st_size > 0 and "wrote" in out
    else:
        assert "matplotlib is not installed" in out and not (tmp_path / "t.png").exists()


def test_temperature_runs_as_a_script(tmp_path):
    process = run_script("temperature", "--tau", "0.07", "--tau", "1", "--no-plot", cwd=tmp_path)
    assert process.returncode == 0, process.stderr
    assert " 0.07  " in process.stdout and "matplotlib" not in process.stdout
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------- EMA


def test_ema_matches_the_closed_forms(capsys):
    ema = load_example("ema")
    results = ema.main(momenta=(0.9, 0.99), steps=2000, replicas=32, plot=False)
    out = capsys.readouterr().out
    for m, row in results.items():
        # a step of height 1 is half covered after ceil(ln 0.5 / ln m) updates, exactly
        assert row["half_life"] == math.ceil(math.log(0.5) / math.log(m)), m
        # a ramp of slope 1 is trailed by m/(1 − m) once m^steps is negligible
        assert row["lag"] == pytest.approx(m / (1 - m), rel=1e-6), m
        # the average keeps (1 − m)/(1 + m) of the noise variance (a sampled estimate)
        assert row["noise_kept"] == pytest.approx((1 - m) / (1 + m), rel=0.25), m
    assert results[0.99]["noise_kept"] < results[0.9]["noise_kept"]
    assert "0.9" in out and "0.99" in out and "lag" in out


def test_ema_uses_momentum_update_exactly():
    """The EMA of the example is momentum_update_, so it equals the formula evaluated in the same order."""
    ema = load_example("ema")
    x = np.random.default_rng(0).standard_normal(50)
    expected = [x[0]]
    for value in x[1:]:
        expected.append(expected[-1] * 0.9 + value * (1 - 0.9))
    assert np.array_equal(ema.ema(x, 0.9), np.array(expected))


def test_ema_runs_as_a_script(tmp_path):
    process = run_script("ema", "--m", "0.5", "--steps", "200", "--replicas", "4", "--no-plot", cwd=tmp_path)
    assert process.returncode == 0, process.stderr
    assert "   0.5 " in process.stdout and list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------- train_builtin


def test_train_builtin_reports_knn_against_the_untrained_encoder(tmp_path):
    process = run_script(
        "train_builtin",
        "--epochs",
        1,
        "--width",
        2,
        "-b",
        16,
        "--image-size",
        16,
        "--moco-k",
        64,
        "--bn-splits",
        2,
        "--max-steps",
        2,
        "--out",
        tmp_path / "run",
    )
    assert process.returncode == 0, process.stderr
    lines = process.stdout.splitlines()
    assert lines[0].startswith("MoCo on 2000 built-in images (1000 held out): resnet10 width 2")
    knn_line = next(line for line in lines if line.startswith("kNN top-1"))
    assert "after training" in knn_line and "with the untrained encoder" in knn_line and "chance 10%" in knn_line

    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    final = records[-1]
    assert final["kind"] == "final" and final["global_step"] == 2
    assert f"{final['knn_top1']:.2f}% after training" in knn_line
    assert f"{final['knn_top1_untrained']:.2f}% with the untrained encoder" in knn_line
    assert load_checkpoint(tmp_path / "run" / "checkpoint_last.npz")[1]["config"]["width"] == 2


# ----------------------------------------------------------------------- train_cifar10


def write_fake_cifar10(root: Path, per_batch: int = 16) -> Path:
    """root/cifar-10-batches-py in the real layout: protocol-2 pickles of dicts with bytes keys."""
    import pickle

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump(
                {
                    b"batch_label": name.encode(),
                    b"labels": labels,
                    b"data": data,
                    b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)],
                },
                f,
                protocol=2,
            )
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"num_cases_per_batch": per_batch, b"label_names": names, b"num_vis": 3072}, f, protocol=2)
    return folder


def test_train_cifar10_on_a_fake_cifar_folder(tmp_path):
    write_fake_cifar10(tmp_path / "data")
    process = run_script(
        "train_cifar10",
        tmp_path / "data",
        "--width",
        2,
        "-b",
        16,
        "--moco-k",
        32,
        "--max-steps",
        1,
        "--out",
        tmp_path / "run",
    )
    assert process.returncode == 0, process.stderr
    out = process.stdout
    assert "CIFAR-10 demo recipe: 80 training images, resnet18 width 2, batch 16 in 8 BN splits" in out
    assert "m 0.99, T 0.1, lr 0.06 cosine, 200 epoch(s) of 5 steps" in out
    assert "kNN top-1 on the 16 test images" in out and "untrained encoder" in out
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"] == str(tmp_path / "data" / "cifar-10-batches-py")
    assert (config["arch"], config["m"], config["T"], config["lr"], config["weight_decay"]) == (
        "resnet18",
        0.99,
        0.1,
        0.06,
        5e-4,
    )


def test_train_cifar10_without_the_data_says_how_to_get_it(capsys, tmp_path):
    train_cifar10 = load_example("train_cifar10")
    assert train_cifar10.main(tmp_path / "nowhere", out=tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CIFAR-10 at" in err and "cifar-10-python.tar.gz" in err
    assert not (tmp_path / "run").exists()

    (tmp_path / "photos").mkdir()
    assert train_cifar10.main(tmp_path / "photos") == 2
    assert "no cifar-10-batches-py" in capsys.readouterr().err


def test_train_cifar10_with_a_damaged_batch_fails_with_one_line(capsys, tmp_path):
    folder = write_fake_cifar10(tmp_path / "data")
    (folder / "data_batch_3").write_bytes((folder / "data_batch_3").read_bytes()[:100])
    train_cifar10 = load_example("train_cifar10")
    assert train_cifar10.main(tmp_path / "data", width=2, batch_size=16, out=tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "data_batch_3" in err


def test_train_cifar10_script_without_data_exits_2_with_one_line(tmp_path):
    process = run_script("train_cifar10", cwd=tmp_path)  # as-is: looks in ./data
    assert process.returncode == 2 and process.stdout == ""
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("no CIFAR-10 at data: no such folder"), process.stderr
