"""TensorBoard's view of a run (``moco-ref train --tensorboard``): event files in the run directory's tb/.

Written with tensorboardX (the ``[tensorboard]`` extra: numpy and protobuf, neither torch nor TensorFlow).
What goes in, each at the record's global step:

    every number of the metrics' time series (moco_ref/run/directory.py's records), tagged KIND/NAME:
        step/loss, step/acc1, step/lr, step/m, step/images_per_s, step/data_share, epoch/loss, epoch/acc1,
        epoch/lr, epoch/seconds, instruments/alignment, …; the kNN top-1 of every record as knn/top1
    chance/loss and chance/acc1 beside each step record: ln(K+1) a loss term (two with --symmetric) and
        1/(K+1) in %, with a custom-scalars chart of each against its chance level
    the configuration as hyper-parameters (TensorBoard's HParams tab)
    at the end, the probe set's normalised encoder_q outputs with their labels and images (the Projector)

An unfinished "epoch" record and the "final" summary are not time series (a resume drops them from the
metrics and logs the epoch again), so they are left out: TensorBoard then holds what metrics.jsonl keeps.

A resumed run appends: its event file starts with a SessionLog START at the checkpoint's step + 1, on which
TensorBoard's reader drops every event of the run from that step on (the steps an interrupted run logged
after its checkpoint), so no step appears twice.  Event files are named events.out.tfevents.<second>.<host>;
the suffix .<first step> orders two files of the same second, and the reader reads them in name order.
"""

from __future__ import annotations

import math

import numpy as np

from moco_ref.errors import UserError
from moco_ref.loss import chance_accuracy, chance_loss

INSTALL = "pip install 'moco-ref[tensorboard]'"
BOOKKEEPING = ("kind", "epoch", "global_step")  # record fields that say where, not what was measured


def require_tensorboardx() -> None:
    """UserError (one line) where tensorboardX is not installed."""
    try:
        import tensorboardX  # noqa: F401  (only whether it imports)
    except ImportError:
        raise UserError(f"--tensorboard needs tensorboardX, an optional extra: {INSTALL}") from None


def scalars(record: dict) -> list[tuple[str, float]]:
    """(tag, value) of every number a metrics record holds (booleans, None and non-finite values left out); []
    for the records that are not time series (an unfinished epoch, the final summary)."""
    kind = record.get("kind")
    if kind == "final" or (kind == "epoch" and not record.get("complete", True)):
        return []
    tags = []
    for name, value in record.items():
        if name in BOOKKEEPING or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            tags.append(("knn/top1" if name == "knn_top1" else f"{kind}/{name}", float(value)))
    return tags


def hyperparameters(config: dict) -> dict:
    """The configuration as TensorBoard's hyper-parameters take it: numbers, booleans and text."""
    return {name: value if isinstance(value, (bool, int, float, str)) else str(value) for name, value in config.items()}


class TensorBoard:
    """The event files of one run, written by the process that writes the run directory.

    Args:
        path: the run directory's tb/ (moco_ref.run.directory owns the name).
        config: the run's TrainConfig.  step: the global step the run starts from (0, or a checkpoint's).
    """

    def __init__(self, path, config, step: int):
        require_tensorboardx()
        from tensorboardX import SummaryWriter
        from tensorboardX.summary import hparams

        self.chance = {
            "loss": chance_loss(config.K, 2 if config.symmetric else 1),
            "acc1": 100.0 * chance_accuracy(config.K),
        }
        self.writer = SummaryWriter(
            str(path), purge_step=step + 1 if step else None, filename_suffix=f".{step:012d}", flush_secs=30
        )
        for summary in hparams(hyperparameters(config.to_dict()), {"epoch/loss": 0.0, "knn/top1": 0.0}):
            self.writer.file_writer.add_summary(summary)
        self.writer.add_custom_scalars(
            {
                "MoCo against chance": {
                    "InfoNCE loss and ln(K+1)": ["Multiline", ["step/loss", "chance/loss"]],
                    "instance accuracy (%) and 1/(K+1)": ["Multiline", ["step/acc1", "chance/acc1"]],
                }
            }
        )

    def add(self, record: dict) -> None:
        """Writes the numbers of one metrics record (and, beside a step record, the chance levels)."""
        step = record.get("global_step", 0)
        for tag, value in scalars(record):
            self.writer.add_scalar(tag, value, step)
        if record.get("kind") == "step":
            for name, level in self.chance.items():
                self.writer.add_scalar(f"chance/{name}", level, step)

    def add_embedding(self, embed, step: int) -> None:
        """The probe set for the Projector: ``embed()`` gives its features (N, D), labels (N,) or None and images
        (N, H, W, 3) uint8."""
        features, labels, images = embed()
        label_img = np.transpose(np.asarray(images, dtype=np.float32) / 255.0, (0, 3, 1, 2))  # (N, 3, H, W)
        metadata = None if labels is None else [str(int(label)) for label in labels]
        self.writer.add_embedding(
            np.asarray(features), metadata=metadata, label_img=label_img, global_step=step, tag="probe_set"
        )

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class NoTensorBoard:
    """A run without --tensorboard, or a process that does not write the run directory: every call does nothing."""

    def __init__(self, *arguments, **settings):
        pass

    def add(self, record: dict) -> None:
        pass

    def add_embedding(self, embed, step: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
