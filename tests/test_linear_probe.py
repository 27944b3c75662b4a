"""The linear probe (main_lincls): its loss and gradient, that it learns, that the encoder stays frozen, the CLI."""

import io
import json
from functools import partial

import numpy as np
import pytest
from helpers import run_cli

from moco_ref.data import Dataset
from moco_ref.errors import UserError
from moco_ref.evaluation.linear import (
    check_unchanged,
    default_schedule,
    encoder_fingerprint,
    linear_probe,
    topk_correct,
)
from moco_ref.loss import cross_entropy_backward, cross_entropy_forward
from moco_ref.models import build_encoder
from moco_ref.progress import Progress
from moco_ref.tools.gradcheck import compare, numerical_gradient

COLOURS = np.array([[220, 40, 40], [40, 200, 40], [40, 60, 220], [200, 200, 60]])  # one per class


def colour_dataset(n, seed, size=8):
    """Images whose class is their colour, plus noise: the mean colour separates the classes linearly."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.int64) % len(COLOURS)
    rng.shuffle(labels)
    images = COLOURS[labels][:, None, None, :] + rng.normal(0, 25, (n, size, size, 3))
    return Dataset(np.clip(images, 0, 255).astype(np.uint8), labels, ["red", "green", "blue", "yellow"], "colours")


class MeanColourEncoder:
    """A stand-in encoder: features = the mean of each normalised channel, (N, 3); one frozen 'weight'."""

    def __init__(self):
        self.params = {"weight": np.ones(3, dtype=np.float32)}

    def features(self, x):
        return x.mean(axis=(2, 3)) * self.params["weight"]

    def state_dict(self):
        return dict(self.params)


# ------------------------------------------------------------------ loss and gradient
def test_cross_entropy_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 5)) * 3.0
    labels = rng.integers(0, 5, 6)
    _, cache = cross_entropy_forward(logits, labels)
    analytic = cross_entropy_backward(cache)
    numeric = numerical_gradient(lambda: cross_entropy_forward(logits, labels)[0], logits)
    result = compare("cross-entropy / dlogits", analytic, numeric)
    assert result.passed, result.describe()


def test_cross_entropy_value_and_gradient_rows():
    """L = mean(−log softmax[y]), written out directly; each gradient row sums to 0."""
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((7, 4))
    labels = rng.integers(0, 4, 7)
    loss, cache = cross_entropy_forward(logits, labels)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert abs(float(loss) + np.mean(np.log(p[np.arange(7), labels]))) < 1e-12
    np.testing.assert_allclose(cross_entropy_backward(cache).sum(axis=1), 0.0, atol=1e-15)


def test_topk_correct_counts_rank_of_the_true_class():
    logits = np.array([[0.1, 0.9, 0.0], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5]])
    labels = np.array([1, 2, 0])  # ranks 0, 1, 2
    assert [int(topk_correct(logits, labels, k)) for k in (1, 2, 3)] == [1, 2, 3]


def test_default_schedule_scales_the_official_milestones():
    assert default_schedule(100) == (60, 80)
    assert default_schedule(10) == (6, 8)


# ------------------------------------------------------------------ the probe learns
@pytest.mark.parametrize("augment", [False, True])
def test_probe_reaches_high_accuracy_on_separable_features(augment):
    train, val = colour_dataset(200, 0), colour_dataset(100, 1)
    result = linear_probe(MeanColourEncoder(), train, val, "numpy", epochs=15, batch_size=32, augment=augment)
    assert result["top1"] >= 95.0, result
    assert result["top5"] == 100.0  # 4 classes: top-5 holds every class
    assert (result["train_images"], result["val_images"], result["num_classes"]) == (200, 100, 4)


def test_probe_follows_the_step_schedule_and_is_reproducible():
    train, val = colour_dataset(64, 0), colour_dataset(32, 1)
    shown = io.StringIO()  # not a terminal: a plain line every epoch (10 epochs)
    first = linear_probe(
        MeanColourEncoder(), train, val, "numpy", epochs=10, batch_size=16, progress=partial(Progress, stream=shown)
    )
    lrs = [float(line.split(", lr ")[1].split(",")[0]) for line in shown.getvalue().splitlines()]
    assert lrs == pytest.approx([30.0] * 6 + [3.0] * 2 + [0.3] * 2)
    second = linear_probe(MeanColourEncoder(), train, val, "numpy", epochs=10, batch_size=16)
    assert {k: v for k, v in first.items() if k != "seconds"} == {k: v for k, v in second.items() if k != "seconds"}


def test_probe_rejects_unlabelled_or_mismatched_data():
    train, val = colour_dataset(16, 0), colour_dataset(8, 1)
    unlabelled = Dataset(val.images, None, [], "photos")
    with pytest.raises(UserError, match="no labels"):
        linear_probe(MeanColourEncoder(), train, unlabelled, "numpy", epochs=1)
    renamed = Dataset(val.images, val.labels, ["a", "b", "c", "d"], "other")
    with pytest.raises(UserError, match="different classes"):
        linear_probe(MeanColourEncoder(), train, renamed, "numpy", epochs=1)


# ------------------------------------------------------------------ the encoder stays frozen
def tiny_encoder():
    return build_encoder("resnet10", dim=4, width=2, bn_splits=2, seed=3)


@pytest.mark.parametrize("augment", [False, True])
def test_encoder_weights_and_buffers_are_unchanged(augment):
    encoder = tiny_encoder()
    before = {name: np.array(a, copy=True) for name, a in encoder.state_dict().items()}
    train, val = colour_dataset(24, 0, size=16), colour_dataset(12, 1, size=16)
    linear_probe(encoder, train, val, "numpy", epochs=2, batch_size=8, augment=augment)
    after = encoder.state_dict()
    assert list(after) == list(before)
    for name, value in before.items():
        assert np.array_equal(after[name], value), f"{name} changed during the linear probe"


def test_frozen_check_fires_when_a_weight_changes(monkeypatch):
    encoder = tiny_encoder()
    original = encoder.features

    def leaky_features(x):  # a bug that nudges a weight in place
        encoder.params["layer2.0.conv1.weight"] += 1e-3
        return original(x)

    monkeypatch.setattr(encoder, "features", leaky_features)
    train, val = colour_dataset(16, 0, size=16), colour_dataset(8, 1, size=16)
    with pytest.raises(RuntimeError, match="layer2.0.conv1.weight"):
        linear_probe(encoder, train, val, "numpy", epochs=1, batch_size=8)


def test_frozen_check_fires_when_batchnorm_statistics_change(monkeypatch):
    encoder = tiny_encoder()

    def leaky_features(x):  # a bug on purpose: train-mode BN whose new running statistics are kept
        out, _, encoder.buffers = encoder.forward(x, training=True)
        return out

    monkeypatch.setattr(encoder, "features", leaky_features)
    train, val = colour_dataset(16, 0, size=16), colour_dataset(8, 1, size=16)
    with pytest.raises(RuntimeError, match="running_mean"):
        linear_probe(encoder, train, val, "numpy", epochs=1, batch_size=8)


def test_check_unchanged_names_what_changed():
    encoder = tiny_encoder()
    before = encoder_fingerprint(encoder)
    check_unchanged(before, encoder_fingerprint(encoder))
    encoder.buffers["bn1.running_var"] = encoder.buffers["bn1.running_var"] * 2.0
    with pytest.raises(RuntimeError, match="bn1.running_var"):
        check_unchanged(before, encoder_fingerprint(encoder))


# ------------------------------------------------------------------ command line
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from moco_ref.run.config import TrainConfig
    from moco_ref.run.trainer import Trainer

    path = tmp_path_factory.mktemp("linear") / "run"
    Trainer(
        TrainConfig(arch="resnet10", width=2, batch_size=16, epochs=1, max_steps=2, K=64, knn_every=0, bn_splits=2),
        path,
        log=lambda *a, **k: None,
    ).run()
    return path


def test_cli_prints_one_json_object(run_dir, capsys):
    code, out, err = run_cli(
        [
            "eval",
            "linear",
            "--checkpoint",
            str(run_dir),
            "--epochs",
            "3",
            "--train-size",
            "64",
            "--val-size",
            "32",
            "-b",
            "32",
        ],
        capsys,
    )
    assert code == 0, err
    result = json.loads(out)
    assert set(result) >= {"top1", "top5", "epochs", "train_images", "val_images"}
    assert (result["epochs"], result["train_images"], result["val_images"]) == (3, 64, 32)
    assert result["augment"] is False  # the numpy default
    assert 0.0 <= result["top1"] <= result["top5"] <= 100.0
    assert err.count("linear probe epoch") == 3


def test_cli_augment_flag(run_dir, capsys):
    code, out, err = run_cli(
        [
            "eval",
            "linear",
            "--checkpoint",
            str(run_dir / "checkpoint_last.npz"),
            "--epochs",
            "1",
            "--train-size",
            "16",
            "--val-size",
            "16",
            "--augment",
        ],
        capsys,
    )
    assert code == 0, err
    assert json.loads(out)["augment"] is True


@pytest.mark.parametrize(
    "args,message",
    [
        (["--checkpoint", "{tmp}/missing"], "no checkpoint at"),
        (["--checkpoint", "{tmp}/garbled.npz"], "garbled.npz"),
        (
            ["--checkpoint", "{run}", "--train-size", "16", "--val-data", "{tmp}/no-such-folder"],
            "no such file or folder",
        ),
    ],
)
def test_cli_bad_inputs_end_in_one_line(run_dir, tmp_path, capsys, args, message):
    (tmp_path / "garbled.npz").write_bytes(b"not a zip file")
    args = [a.format(tmp=tmp_path, run=run_dir) for a in args]
    code, out, err = run_cli(["eval", "linear", *args, "--epochs", "1"], capsys)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err
