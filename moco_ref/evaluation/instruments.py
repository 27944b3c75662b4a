"""Instruments of a representation: cheap measurements of what the two encoders have learned.

They are taken on a fixed probe set (the first :data:`PROBE_SIZE` images of the kNN test split, or of
the training set when there is none) with both encoders in eval mode (BatchNorm on its running
statistics), so that measuring changes nothing and does not depend on how the probe set is batched.

Notation: n probe images, D feature dimension, K queue size, T temperature, B keys enqueued per step
(the global batch N, or 2N in symmetric mode), t the global step.  f(·) is the L2-normalised output of
encoder_q, g(·) that of encoder_k; x_i is probe image i through the test transform, and x_i, x_i⁺ (in
the pair formulas) two views of it drawn with the training augmentation.

    alignment    = mean_i ‖f(x_i) − f(x_i⁺)‖²                          (Wang & Isola, ICML 2020)
    uniformity   = log mean_{i<j} exp(−2‖f(x_i) − f(x_j)‖²)             (Wang & Isola, ICML 2020)
    feature_std  = mean_d sqrt(mean_i (f_id − mean_i f_id)²)
    logit_pos    = mean_i f(x_i)·g(x_i⁺) / T
    logit_neg    = mean_i mean_k f(x_i)·queue_k / T  =  (mean_i f(x_i))·(mean_k queue_k) / T
    key_drift    = mean_i cos(g_now(x_i), g_before(x_i))                 (g_before: the previous measurement)
    queue_age    = t − (the step whose key encoder made the queue's oldest key)

and, for labelled data, the queue's false negatives (Chuang et al., NeurIPS 2020): with y_i the class of
probe image i and c_k the class of the image behind queue key k (keys of no known image, the K random
keys the queue starts with, left out),

    false_negatives   = mean_i #{k: c_k = y_i} / #{k: c_k known}          the share of negatives of the query's class
    logit_same_class  = mean over (i, k) with c_k = y_i of f(x_i)·queue_k / T
    logit_other_class = mean over (i, k) with c_k ≠ y_i of f(x_i)·queue_k / T

With C balanced classes about 1/C of the negatives share the query's class: InfoNCE pushes them away
as hard as the others, and a larger queue pushes more of them.

Alignment lies in [0, 4] and is 0 when the two views of every image map to one point; uniformity lies
in [−4, 0] for unit features and is lower the more evenly the features spread over the sphere
(both: lower is better).  feature_std goes to 0 when the encoder collapses to one point and is about
1/√D for features spread over the sphere (the collapse monitor of lightly).  logit_pos and logit_neg are
the mean positive and negative logits of InfoNCE for the probe pairs against the current queue (keys by
encoder_k, not shuffled).  key_drift is the consistency the queue asks of the key encoder: 1 when
encoder_k has not moved since the last measurement.

The functions take arrays on either backend (the data decides: ``xp = get_array_module(x)``) and return
0-d arrays on it; :class:`Instruments` converts them to host floats once per measurement.
"""

from __future__ import annotations

import numpy as np

from backends import get_array_module, get_backend, to_numpy
from moco_ref.evaluation.features import encode_dataset
from moco_ref.loss import normalize_forward

PROBE_SIZE = 256  # images in the probe set
VIEW_SEED = 12  # the views' generators: default_rng([seed, 12, 1]) and ([seed, 12, 2])
UNIFORMITY_T = 2.0  # the t of exp(−t‖·‖²), Wang & Isola's default


def alignment(f, f_pos):
    """mean_i ‖f_i − f⁺_i‖²: how close the two views of an image are; f, f_pos (n, D) unit rows."""
    d = f - f_pos  # (n, D)
    return (d * d).sum(axis=1).mean()


def uniformity(f, t: float = UNIFORMITY_T):
    """log mean_{i<j} exp(−t‖f_i − f_j‖²) over the n(n − 1)/2 pairs of distinct rows of f (n ≥ 2, D).

    ‖f_i − f_j‖² = ‖f_i‖² + ‖f_j‖² − 2 f_i·f_j (clipped at 0 against rounding).  The pairs i < j and
    i ≠ j give the same mean, so the sum runs over the whole matrix with its diagonal masked out
    (exp(−∞) = 0).  The log of the mean is taken as max + log mean exp(· − max), stable for any rows.
    """
    xp = get_array_module(f)
    n = f.shape[0]
    if n < 2:
        raise ValueError(f"uniformity needs at least 2 rows, got {n}")
    squared = (f * f).sum(axis=1)  # (n,)
    distance2 = xp.maximum(squared[:, None] + squared[None, :] - 2.0 * (f @ f.T), 0.0)  # (n, n)
    exponent = xp.where(xp.eye(n, dtype=bool), -xp.inf, -t * distance2)  # (n, n), −∞ on the diagonal
    top = exponent.max()
    return top + xp.log(xp.exp(exponent - top).sum() / (n * (n - 1)))


def feature_std(f):
    """mean_d of the standard deviation of column d over the n rows (population, ddof 0); f (n, D)."""
    return f.std(axis=0).mean()


def mean_logits(q, k, queue, T: float):
    """(mean positive logit, mean negative logit) of InfoNCE for queries q (n, D), their keys k (n, D)
    and the queue (K, D): mean_i q_i·k_i / T and mean_{i,k} q_i·queue_k / T.

    The mean of all n·K negative logits is a product of two means (the dot product is bilinear),
    (mean_i q_i)·(mean_k queue_k) / T, so no (n, K) matrix is formed.
    """
    positive = (q * k).sum(axis=1).mean() / T
    negative = (q.mean(axis=0) * queue.mean(axis=0)).sum() / T
    return positive, negative


def false_negatives(q, queue, queue_labels, labels, T: float):
    """(false_negatives, logit_same_class, logit_other_class) of queries q (n, D) with classes ``labels`` (n,)
    against the queue (K, D) whose key k shows an image of class ``queue_labels[k]`` (−1: unknown, left out).

    Returns 0-d arrays; NaN where a mean has nothing to average (no known key, no key of a query's class).
    """
    xp = get_array_module(q)
    known = queue_labels >= 0  # (K,)
    same = (labels[:, None] == queue_labels[None, :]) & known[None, :]  # (n, K)
    other = ~same & known[None, :]
    logits = (q @ queue.T) / T  # (n, K)
    count, n_same, n_other = known.sum(), same.sum(), other.sum()
    share = xp.where(count > 0, (same.sum(axis=1) / xp.maximum(count, 1)).mean(), xp.nan)
    same_mean = xp.where(n_same > 0, (logits * same).sum() / xp.maximum(n_same, 1), xp.nan)
    other_mean = xp.where(n_other > 0, (logits * other).sum() / xp.maximum(n_other, 1), xp.nan)
    return share, same_mean, other_mean


def mean_cosine(a, b):
    """mean_i cos(a_i, b_i) = mean_i a_i·b_i / (‖a_i‖‖b_i‖); a, b (n, D)."""
    xp = get_array_module(a)
    norms = xp.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))  # (n,)
    return ((a * b).sum(axis=1) / norms).mean()


def oldest_key_age(step: int, K: int, keys_per_step: int) -> int:
    """Age in steps of the queue's oldest key after ``step`` steps of ``keys_per_step`` keys each.

    A key enqueued by step j (1, 2, …) was made by the key encoder after j momentum updates; after t
    steps the key encoder has had t, so the key's age is t − j.  The K random keys the queue starts with
    count as made at step 0 (age t).  Exactly: with E = B·t keys enqueued so far, the oldest key in the
    queue is an initial one while E < K (age t); otherwise it is key number E − K (0-based) in enqueue
    order, enqueued by step j = ⌊(E − K)/B⌋ + 1.  Once the initial keys are gone this stays at
    ⌈K/B⌉ − 1: the queue holds the keys of the last ⌈K/B⌉ steps, and the next step compares its fresh
    keys (one update later) with negatives made up to ⌈K/B⌉ updates before them.  B is fixed for a run
    (the global batch, doubled in symmetric mode), so the step alone determines the age.
    """
    enqueued = keys_per_step * step
    if enqueued < K:
        return step
    return step - ((enqueued - K) // keys_per_step + 1)


class Instruments:
    """Measures the instruments on a fixed probe set; keeps the probe keys of the last measurement.

    Args:
        images: (n, S, S, 3) uint8 host array, the probe set (n ≥ 2).
        augment: the training augmentation (the views x, x⁺), test_transform: the test pipeline.
        backend: the model's backend.
        seed: the run's seed; the views are drawn from generators made fresh from [seed, 12, 1] and
            [seed, 12, 2] at every measurement, so every measurement sees the same views and no training
            generator is touched.
        keys_per_step: B; K: the queue size (for the queue's age).
        labels: (n,) int classes of the probe images, or None (then no false negatives are measured).

    Attributes:
        probe_keys: g(x_i) of the last measurement, (n, D) on the backend, or None before the first.
            It is resume state: :meth:`state_dict` puts it in the checkpoint.
    """

    def __init__(self, images, augment, test_transform, backend, seed: int, keys_per_step: int, K: int, labels=None):
        if len(images) < 2:
            raise ValueError(f"the probe set needs at least 2 images, got {len(images)}")
        self.images, self.augment, self.test_transform = images, augment, test_transform
        self.labels = labels
        self.backend = get_backend(backend)
        self.seed, self.keys_per_step, self.K = seed, keys_per_step, K
        self.probe_keys = None

    def _encode(self, encoder, pipeline, view: int | None = None):
        rng = None if view is None else np.random.default_rng([self.seed, VIEW_SEED, view])
        out = encode_dataset(encoder, self.images, pipeline, self.backend, head=True, rng=rng)
        return normalize_forward(out)[0]  # (n, D), unit rows

    def measure(self, model, step: int, queue_labels=None) -> dict:
        """The instruments of ``model`` (a MoCo) after ``step`` steps, as host floats; updates probe_keys.

        Five eval-mode passes over the probe set: encoder_q on the test transform and on both views,
        encoder_k on the test transform and on the second view.  Nothing of the model is changed.
        ``queue_labels`` (K,) host ints, the class behind each queue slot (−1 unknown): with the probe's
        labels, the false-negative instruments too (None otherwise).
        """
        f = self._encode(model.encoder_q, self.test_transform)  # f(x_i), (n, D)
        f_1 = self._encode(model.encoder_q, self.augment, view=1)  # f(x_i), (n, D)
        f_2 = self._encode(model.encoder_q, self.augment, view=2)  # f(x_i⁺), (n, D)
        k_2 = self._encode(model.encoder_k, self.augment, view=2)  # g(x_i⁺), (n, D)
        keys = self._encode(model.encoder_k, self.test_transform)  # g(x_i), (n, D)
        positive, negative = mean_logits(f_1, k_2, model.queue.keys, model.T)
        values = {
            "alignment": alignment(f_1, f_2),
            "uniformity": uniformity(f),
            "feature_std": feature_std(f),
            "logit_pos": positive,
            "logit_neg": negative,
            "key_drift": None if self.probe_keys is None else mean_cosine(keys, self.probe_keys),
            "false_negatives": None,
            "logit_same_class": None,
            "logit_other_class": None,
        }
        if self.labels is not None and queue_labels is not None:
            to_device = self.backend.to_device
            values["false_negatives"], values["logit_same_class"], values["logit_other_class"] = false_negatives(
                f, model.queue.keys, to_device(np.asarray(queue_labels)), to_device(np.asarray(self.labels)), model.T
            )
        record = {name: None if v is None else _finite_or_none(float(to_numpy(v))) for name, v in values.items()}
        record["queue_age"] = oldest_key_age(step, self.K, self.keys_per_step)
        record["probe_images"] = len(self.images)
        self.probe_keys = keys
        return record

    def state_dict(self) -> dict:
        """``{"probe_keys": (n, D)}`` once measured, else {}."""
        return {} if self.probe_keys is None else {"probe_keys": self.probe_keys}

    def load_state_dict(self, state: dict) -> None:
        """Takes the probe keys of :meth:`state_dict` (none there: the next drift is None)."""
        host = state.get("probe_keys")
        self.probe_keys = None if host is None else self.backend.to_device(np.array(host))


def _finite_or_none(value: float):
    """A measurement as JSON can hold it: NaN (nothing to average) becomes None."""
    return value if np.isfinite(value) else None
