"""The instruments of a representation (moco_ref/evaluation/instruments.py): each formula against a direct
NumPy computation on small arrays, their limits, the queue's age against a simulated queue, the arrays they
run on, and the trainer's use of them: records in metrics.jsonl and a run bit-identical to one without them.
"""

from __future__ import annotations

import itertools
import json
import math
import sys

import helpers
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from moco_ref.evaluation.instruments import (
    alignment,
    feature_std,
    mean_cosine,
    mean_logits,
    oldest_key_age,
    uniformity,
)
from moco_ref.loss import info_nce_forward
from moco_ref.queue import KeyQueue
from moco_ref.run.checkpoint import load_checkpoint, model_arrays
from moco_ref.run.config import TrainConfig
from moco_ref.run.trainer import Trainer


def unit_rows(rng, n, D):
    x = rng.standard_normal((n, D))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ------------------------------------------------------------------------ the formulas
def test_alignment_is_the_mean_squared_distance_of_the_pairs():
    rng = np.random.default_rng(0)
    f, f_pos = unit_rows(rng, 7, 5), unit_rows(rng, 7, 5)
    direct = np.mean([sum((f[i, d] - f_pos[i, d]) ** 2 for d in range(5)) for i in range(7)])
    assert float(alignment(f, f_pos)) == pytest.approx(direct, rel=1e-12)


def test_alignment_of_identical_views_is_zero_and_of_opposite_views_is_four():
    f = unit_rows(np.random.default_rng(1), 6, 4)
    assert float(alignment(f, f.copy())) == 0.0
    assert float(alignment(f, -f)) == pytest.approx(4.0, rel=1e-12)


def test_uniformity_is_the_log_mean_over_the_distinct_pairs():
    rng = np.random.default_rng(2)
    f = unit_rows(rng, 6, 3)
    pairs = list(itertools.combinations(range(6), 2))  # i < j: 15 pairs
    direct = math.log(np.mean([math.exp(-2.0 * float(np.sum((f[i] - f[j]) ** 2))) for i, j in pairs]))
    assert float(uniformity(f)) == pytest.approx(direct, rel=1e-12)
    t_half = math.log(np.mean([math.exp(-0.5 * float(np.sum((f[i] - f[j]) ** 2))) for i, j in pairs]))
    assert float(uniformity(f, t=0.5)) == pytest.approx(t_half, rel=1e-12)


def test_uniformity_of_collapsed_features_is_zero_and_of_an_antipodal_pair_is_minus_eight():
    point = unit_rows(np.random.default_rng(3), 1, 4)
    assert float(uniformity(np.repeat(point, 5, axis=0))) == pytest.approx(0.0, abs=1e-12)
    assert float(uniformity(np.concatenate([point, -point]))) == pytest.approx(-8.0, rel=1e-12)


def test_uniformity_stays_finite_when_every_pair_is_far_apart():
    """Rows of norm 30: every exp(−2‖·‖²) underflows to 0, the shifted log-mean does not."""
    f = 30.0 * unit_rows(np.random.default_rng(4), 4, 3)
    distances = [float(np.sum((f[i] - f[j]) ** 2)) for i, j in itertools.combinations(range(4), 2)]
    top = max(-2.0 * d for d in distances)
    direct = top + math.log(np.mean([math.exp(-2.0 * d - top) for d in distances]))
    assert float(uniformity(f)) == pytest.approx(direct, rel=1e-10)


def test_feature_std_is_the_mean_of_the_per_dimension_population_std():
    f = unit_rows(np.random.default_rng(5), 9, 4)
    direct = np.mean([math.sqrt(np.mean((f[:, d] - f[:, d].mean()) ** 2)) for d in range(4)])
    assert float(feature_std(f)) == pytest.approx(direct, rel=1e-12)


def test_feature_std_is_zero_on_collapse_and_about_one_over_root_d_when_spread():
    D = 16
    point = unit_rows(np.random.default_rng(6), 1, D)
    assert float(feature_std(np.repeat(point, 8, axis=0))) == pytest.approx(0.0, abs=1e-15)  # rounding of the mean
    spread = unit_rows(np.random.default_rng(7), 4000, D)  # uniform on the sphere
    assert float(feature_std(spread)) == pytest.approx(1 / math.sqrt(D), rel=0.05)


def test_mean_logits_are_the_means_of_the_info_nce_logits():
    """Against the logits the step computes: column 0 is q·k₊/T, the other K columns q·queue/T."""
    rng = np.random.default_rng(8)
    q, k, queue, T = unit_rows(rng, 5, 4), unit_rows(rng, 5, 4), unit_rows(rng, 11, 4), 0.2
    _, logits, _ = info_nce_forward(q, k, queue, T)  # (5, 1 + 11)
    positive, negative = mean_logits(q, k, queue, T)
    assert float(positive) == pytest.approx(logits[:, 0].mean(), rel=1e-12)
    assert float(negative) == pytest.approx(logits[:, 1:].mean(), rel=1e-12, abs=1e-15)


def test_mean_cosine_is_one_for_unchanged_keys_and_the_mean_of_the_cosines():
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    direct = np.mean([a[i] @ b[i] / (np.linalg.norm(a[i]) * np.linalg.norm(b[i])) for i in range(6)])
    assert float(mean_cosine(a, b)) == pytest.approx(direct, rel=1e-12)
    assert float(mean_cosine(a, 3.0 * a)) == pytest.approx(1.0, rel=1e-12)
    assert float(mean_cosine(a, -a)) == pytest.approx(-1.0, rel=1e-12)


@pytest.mark.parametrize("K,B", [(24, 8), (20, 8), (5, 8), (8, 8), (64, 16), (7, 3)])
def test_oldest_key_age_follows_a_simulated_queue(K, B):
    """A queue whose keys carry the number of the step that enqueued them (0: the initial keys): the age
    of its oldest key after t steps is t minus the smallest number in it."""
    queue = KeyQueue(K, 1, seed=0, dtype="float64")
    queue.keys[...] = 0.0  # the initial keys: step 0
    for t in range(1, 4 * K // B + 6):
        queue.enqueue(np.full((B, 1), float(t)))
        assert oldest_key_age(t, K, B) == t - int(queue.keys.min()), f"after step {t}"
    assert oldest_key_age(0, K, B) == 0
    assert oldest_key_age(1000, K, B) == math.ceil(K / B) - 1  # the queue holds ⌈K/B⌉ steps' keys


# ------------------------------------------------------------------------ the arrays they run on
def test_instruments_run_on_strict_device_arrays(monkeypatch):
    """On arrays as strict as CuPy's (tests/strict_device.py): no NumPy function, no implicit host copy."""
    from strict_device import DeviceArray, strict_backend, strict_xp

    monkeypatch.setitem(sys.modules, "cupy", strict_xp)
    rng = np.random.default_rng(10)
    f, g, queue = (strict_backend.to_device(unit_rows(rng, n, 4)) for n in (6, 6, 9))
    results = [alignment(f, g), uniformity(f), feature_std(f), *mean_logits(f, g, queue, 0.2), mean_cosine(f, g)]
    for result in results:
        assert isinstance(result, DeviceArray) and result.shape == ()
        assert np.isfinite(strict_xp.asnumpy(result))


# ------------------------------------------------------------------------ measuring a model
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return helpers.write_image_folder(tmp_path_factory.mktemp("images"), 16, 4, 20, seed=1)


def tiny_config(data, **changes) -> TrainConfig:
    values = dict(
        data=str(data),
        image_size=16,
        arch="resnet10",
        width=2,
        batch_size=8,
        K=24,
        dim=8,
        bn_splits=2,
        log_every=1,
        seed=7,
        epochs=2,
        knn_every=1,
    )
    return TrainConfig(**{**values, **changes})


def test_measuring_changes_nothing_and_twice_in_a_row_gives_no_drift(tmp_path, data):
    trainer = Trainer(tiny_config(data), tmp_path / "r", log=lambda message: None)
    model = trainer.model
    model.step(
        *(trainer.augment(trainer.train_set.images[:8], np.random.default_rng(0), "numpy") for _ in range(2))
    )  # running statistics of their own
    before = {name: a.copy() for name, a in model_arrays(model.state_dict()).items()}
    first = trainer.monitor.instruments.measure(model, step=1)
    second = trainer.monitor.instruments.measure(model, step=1)
    for name, a in model_arrays(model.state_dict()).items():
        np.testing.assert_array_equal(a, before[name], err_msg=name)
    assert first["key_drift"] is None and second["key_drift"] == pytest.approx(1.0, abs=1e-6)
    assert {k: v for k, v in first.items() if k != "key_drift"} == {k: v for k, v in second.items() if k != "key_drift"}
    assert first["probe_images"] == 8  # the 8 validation images
    assert first["queue_age"] == 1  # 8 keys into K = 24: initial keys left
    assert 0.0 <= first["alignment"] <= 4.0 and -4.0 <= first["uniformity"] <= 0.0
    assert 0.0 < first["feature_std"] < 1.0
    assert abs(first["logit_pos"]) <= 1 / 0.2 and abs(first["logit_neg"]) <= 1 / 0.2


def test_without_a_test_split_the_probe_set_is_the_training_set(tmp_path, data):
    trainer = Trainer(tiny_config(data / "train"), tmp_path / "r", log=lambda message: None)
    assert trainer.monitor.test_set is None and trainer.monitor.instruments is not None
    np.testing.assert_array_equal(trainer.monitor.instruments.images, trainer.train_set.images[:256])


def test_knn_every_zero_turns_the_instruments_off(tmp_path, data):
    trainer = Trainer(tiny_config(data, knn_every=0), tmp_path / "r", log=lambda message: None)
    trainer.run()
    kinds = [json.loads(line)["kind"] for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert "instruments" not in kinds
    assert "instruments.probe_keys" not in load_checkpoint(tmp_path / "r" / "checkpoint_last.npz")[0]


def test_instruments_records_follow_the_knn_monitor(tmp_path, data):
    trainer = Trainer(tiny_config(data, epochs=3, knn_every=2), tmp_path / "r", log=lambda message: None)
    trainer.run()
    records = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    measured = [r for r in records if r["kind"] == "instruments"]
    # before the first step, after epoch 2 (every 2) and after the last epoch, 4 steps an epoch
    assert [(r["epoch"], r["global_step"]) for r in measured] == [(0, 0), (2, 8), (3, 12)]
    assert [r["queue_age"] for r in measured] == [0, 2, 2]  # K 24 / 8 keys a step: ⌈24/8⌉ − 1
    assert measured[0]["key_drift"] is None
    assert all(-1.0 <= r["key_drift"] <= 1.0 for r in measured[1:])
    for r in measured:
        assert set(r) == {
            "kind",
            "epoch",
            "global_step",
            "alignment",
            "uniformity",
            "feature_std",
            "logit_pos",
            "logit_neg",
            "key_drift",
            "queue_age",
            "probe_images",
            "false_negatives",
            "logit_same_class",
            "logit_other_class",
        }
    assert measured[0]["false_negatives"] is None  # before the first step: only random keys
    assert all(0.0 <= r["false_negatives"] <= 1.0 for r in measured[1:])
    kinds = [r["kind"] for r in records if r["kind"] != "step"]
    assert kinds == ["knn", "instruments", "epoch", "epoch", "instruments", "epoch", "instruments", "final"]
    arrays, _ = load_checkpoint(tmp_path / "r" / "checkpoint_last.npz")
    np.testing.assert_array_equal(arrays["instruments.probe_keys"], trainer.monitor.instruments.probe_keys)
    assert arrays["instruments.probe_keys"].shape == (8, 8)  # 8 probe images, D = 8


def test_a_run_with_instruments_is_bit_identical_to_one_without(tmp_path, data, monkeypatch):
    """The instruments draw from their own generators and run the encoders in eval mode: every weight,
    buffer, queue entry, generator state and logged loss equals that of a run without them."""
    with_them = Trainer(tiny_config(data), tmp_path / "with", log=lambda message: None)
    with_them.run()
    without = Trainer(tiny_config(data), tmp_path / "without", log=lambda message: None)
    without.monitor.instruments = None  # the same run, not measured
    without.run()

    arrays_a, meta_a = load_checkpoint(tmp_path / "with" / "checkpoint_last.npz")
    arrays_b, meta_b = load_checkpoint(tmp_path / "without" / "checkpoint_last.npz")
    assert set(arrays_a) - set(arrays_b) == {"instruments.probe_keys"} and set(arrays_b) <= set(arrays_a)
    different = [name for name in arrays_b if not np.array_equal(arrays_a[name], arrays_b[name])]
    assert not different, f"{len(different)} arrays differ, e.g. {different[:5]}"
    assert meta_a["rng"] == meta_b["rng"]

    def logged(run):
        return [
            (r["kind"], r["global_step"], r.get("loss"), r.get("knn_top1"))
            for r in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())
            if r["kind"] != "instruments"
        ]

    assert logged("with") == logged("without")


# ------------------------------------------------------------------ the queue's false negatives
def test_false_negatives_equal_a_direct_count_on_a_tiny_labelled_queue():
    """The share of same-class keys and the two mean logits, against loops over every (query, key) pair."""
    from moco_ref.evaluation.instruments import false_negatives

    rng = np.random.default_rng(4)
    q = rng.standard_normal((4, 3))
    queue = rng.standard_normal((6, 3))
    queue_labels, labels, T = np.array([0, 1, -1, 2, 0, 1]), np.array([0, 1, 2, 3]), 0.2
    shares, same, other = [], [], []
    for i in range(4):
        known = [k for k in range(6) if queue_labels[k] >= 0]
        shares.append(sum(queue_labels[k] == labels[i] for k in known) / len(known))
        for k in known:
            (same if queue_labels[k] == labels[i] else other).append(q[i] @ queue[k] / T)
    share, logit_same, logit_other = false_negatives(q, queue, queue_labels, labels, T)
    assert float(share) == pytest.approx(np.mean(shares), rel=1e-12)  # (2/5 + 2/5 + 1/5 + 0) / 4
    assert float(logit_same) == pytest.approx(np.mean(same), rel=1e-12)
    assert float(logit_other) == pytest.approx(np.mean(other), rel=1e-12)
    assert all(np.isnan(float(v)) for v in false_negatives(q, queue, np.full(6, -1), labels, T))


@given(K=st.integers(1, 12), batches=st.lists(st.integers(1, 20), min_size=1, max_size=8), seed=st.integers(0, 999))
def test_the_queue_labels_stay_in_step_with_the_key_queue(K, batches, seed):
    """Whatever the batch sizes (larger than K too), slot k of the labels holds the class of the key in slot k."""
    from moco_ref.queue import KeyQueue
    from moco_ref.run.monitor import QueueLabels

    rng = np.random.default_rng(seed)
    queue, labels = KeyQueue(K, 2, seed=seed, dtype="float64"), QueueLabels(K)
    written = np.zeros(K, dtype=bool)
    for B in batches:
        classes = rng.integers(0, 5, B)
        keys = np.stack([classes.astype(float), np.ones(B)], axis=1)  # a key that carries its class
        queue.enqueue(keys)
        labels.enqueue(classes)
        written[(labels.ptr - np.arange(1, min(B, K) + 1)) % K] = True
    assert labels.ptr == queue.ptr
    np.testing.assert_array_equal(labels.labels[written], queue.keys[written, 0].astype(np.int64))
    assert (labels.labels[~written] == -1).all()
