"""What a run measures of its representation while it trains: the kNN monitor and the instruments.

Both run on the process that writes the run directory (rank 0) and are due before the first step,
every --knn-every epochs and after the last (never with --knn-every 0).  The kNN monitor needs a
labelled held-out split; the instruments (moco_ref/evaluation/instruments.py) measure both encoders on
a fixed probe set: the first 256 images of that split, or of the training set when there is none.

Records (appended to the run's metrics by the trainer):

    {"kind": "knn", "epoch": 0, "global_step": 0, "knn_top1", "untrained": true}     before the first step
    {"kind": "instruments", "epoch", "global_step", "alignment", "uniformity", "feature_std", "logit_pos",
     "logit_neg", "key_drift" (null at the first), "queue_age", "probe_images",
     "false_negatives", "logit_same_class", "logit_other_class" (null without labels)}

For the false negatives the monitor keeps the class of the image behind every slot of MoCo's queue
(:class:`QueueLabels`, in step with the queue: the same slots, the same pointer).

The measurements run both encoders in eval mode and draw their views from their own freshly seeded
generators, so a run with instruments is bit-identical to one without.  What the monitor carries from
one checkpoint to the next (:meth:`Monitor.state_dict`; moco_ref/run/checkpoint.py says where each goes in the
file): the untrained encoder's kNN accuracy, the probe keys of the last measurement, from which the next
measurement's key drift is computed, and the queue's labels.

Only the process that writes the run directory (rank 0) measures: the others get :class:`NoMonitor`, whose every
call does nothing, chosen once where the run is built.
"""

from __future__ import annotations

import numpy as np

from backends import to_numpy
from moco_ref.data import load_dataset
from moco_ref.errors import UserError
from moco_ref.evaluation.features import encode_dataset
from moco_ref.evaluation.instruments import PROBE_SIZE, Instruments
from moco_ref.evaluation.knn import knn_accuracy
from moco_ref.loss import normalize_forward
from moco_ref.progress import NoProgress


class QueueLabels:
    """The class of the image behind each slot of MoCo's queue (−1: one of the K random keys it starts with),
    written as KeyQueue writes its keys: a batch of B over the B oldest slots, the pointer advanced by B."""

    def __init__(self, K: int):
        self.labels, self.ptr = np.full(K, -1, dtype=np.int64), 0

    def enqueue(self, labels) -> None:
        B, K = len(labels), len(self.labels)
        slots = (self.ptr + np.arange(max(0, B - K), B)) % K  # a batch larger than K keeps its newest K
        self.labels[slots] = labels[B - len(slots) :]
        self.ptr = (self.ptr + B) % K


class Monitor:
    """The kNN monitor and the instruments of one run, on the process that writes the run directory.

    Attributes:
        test_set: the labelled held-out split, or None (then no kNN).
        instruments: the instruments, or None (--knn-every 0).
        knn_top1_untrained: the untrained encoder's kNN top-1 (%), once measured.
    """

    def __init__(self, config, train_set, augment, test_transform, backend, log, progress=NoProgress):
        self.config, self.train_set, self.test_transform, self.backend = config, train_set, test_transform, backend
        self.progress = progress  # shows the kNN monitor's feature passes (moco_ref.progress)
        self.test_set = _held_out_split(config, train_set, log)
        self.probe_set = self.test_set if self.test_set is not None else train_set  # its first PROBE_SIZE
        self.instruments, self.queue_labels = None, None
        if config.knn_every:
            keys_per_step = config.batch_size * (2 if config.symmetric else 1)
            probe_labels = None if self.probe_set.labels is None else self.probe_set.labels[:PROBE_SIZE]
            self.instruments = Instruments(
                self.probe_set.images[:PROBE_SIZE],
                augment,
                test_transform,
                backend,
                config.seed,
                keys_per_step,
                config.K,
                probe_labels,
            )
            if probe_labels is not None and train_set.labels is not None:
                self.queue_labels = QueueLabels(config.K)
        self.knn_top1_untrained: float | None = None

    def due(self, epoch: int) -> bool:
        """Whether the measurements are due once ``epoch`` epochs are done."""
        every = self.config.knn_every
        return bool(every) and (epoch % every == 0 or epoch == self.config.epochs)

    def knn(self, model) -> float | None:
        """encoder_q's kNN top-1 (%) on the held-out split, or None without one."""
        if self.test_set is None:
            return None
        return knn_accuracy(
            model.encoder_q,
            self.train_set,
            self.test_set,
            self.test_transform,
            self.backend,
            self.config.knn_k,
            self.config.knn_t,
            progress=self.progress,
        )["top1"]

    def before_training(self, model, log) -> list:
        """The records of the untrained model: its kNN top-1 and its instruments."""
        records = []
        if self.test_set is not None:
            self.knn_top1_untrained = top1 = self.knn(model)
            log(f"kNN top-1 of the untrained encoder: {top1:.2f}%")
            records.append({"kind": "knn", "epoch": 0, "global_step": 0, "knn_top1": top1, "untrained": True})
        return records + self.instruments_records(model, 0, 0)

    def after_step(self, index) -> None:
        """The step with the training images ``index`` (the whole batch) has enqueued their keys: so do their
        labels (twice in symmetric mode: the keys of both views, as MoCo enqueues them)."""
        if self.queue_labels is not None:
            for _ in range(2 if self.config.symmetric else 1):
                self.queue_labels.enqueue(self.train_set.labels[index])

    def instruments_records(self, model, epoch: int, global_step: int) -> list:
        """[the "instruments" record of the model as it is now], or [] when the instruments are off."""
        if self.instruments is None:
            return []
        labels = self.queue_labels.labels if self.queue_labels is not None else None
        return [
            {
                "kind": "instruments",
                "epoch": epoch,
                "global_step": global_step,
                **self.instruments.measure(model, global_step, labels),
            }
        ]

    def probe_embedding(self, model) -> tuple:
        """The probe set (the first PROBE_SIZE images of the held-out split, else of the training set) as the
        model sees it now: (normalised encoder_q outputs (N, dim) on the host, labels (N,) or None, images
        (N, H, W, 3) uint8)."""
        images = self.probe_set.images[:PROBE_SIZE]
        out = encode_dataset(model.encoder_q, images, self.test_transform, self.backend, head=True)  # (N, dim)
        labels = None if self.probe_set.labels is None else self.probe_set.labels[:PROBE_SIZE]
        return to_numpy(normalize_forward(out)[0]), labels, images

    def state_dict(self) -> dict:
        """What the monitor carries from one checkpoint to the next: ``knn_top1_untrained`` (% or None), and with
        the instruments on ``probe_keys`` (n, D) once measured and ``queue_labels`` (K,) with labelled data."""
        state = {"knn_top1_untrained": self.knn_top1_untrained}
        if self.instruments is not None:
            state.update(self.instruments.state_dict())
        if self.queue_labels is not None:
            state["queue_labels"] = self.queue_labels.labels
        return state

    def load_state_dict(self, state: dict, queue_ptr: int) -> None:
        """Restores :meth:`state_dict` (where it lacks the queue's labels: all unknown); ``queue_ptr`` is MoCo's
        queue pointer, which the queue's labels follow."""
        self.knn_top1_untrained = state.get("knn_top1_untrained")
        if self.instruments is not None:
            self.instruments.load_state_dict(state)
        if self.queue_labels is not None:
            if "queue_labels" in state:
                self.queue_labels.labels = np.array(state["queue_labels"], dtype=np.int64)
            self.queue_labels.ptr = queue_ptr % len(self.queue_labels.labels)


class NoMonitor:
    """The monitor of a process that does not measure (ranks other than 0): no held-out split, no instruments,
    and every call does nothing."""

    test_set = None
    knn_top1_untrained = None

    def __init__(self, *arguments, **settings):
        pass

    def due(self, epoch: int) -> bool:
        return False

    def knn(self, model) -> float | None:
        return None

    def before_training(self, model, log) -> list:
        return []

    def after_step(self, index) -> None:
        pass

    def instruments_records(self, model, epoch: int, global_step: int) -> list:
        return []

    def probe_embedding(self, model) -> tuple:
        return None, None, None  # no probe set (its only reader, TensorBoard, is NoTensorBoard here too)

    def state_dict(self) -> dict:
        return {"knn_top1_untrained": None}

    def load_state_dict(self, state: dict, queue_ptr: int) -> None:
        pass


def _held_out_split(config, train_set, log):
    """The labelled held-out split for the kNN monitor, or None (then the monitor is off)."""
    if not config.knn_every or train_set.labels is None:
        return None
    try:
        test = load_dataset(config.data, "test", config.image_size, config.seed)
    except UserError as error:
        log(f"note: kNN monitor off: no held-out split ({error})")
        return None
    if test.labels is None:
        return None
    if len(test) == len(train_set) and np.array_equal(test.images, train_set.images):
        log("note: kNN monitor off: the data has no separate test/val split to measure on")
        return None
    return test
