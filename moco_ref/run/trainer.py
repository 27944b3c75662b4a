"""Training: the loop behind ``moco-ref train``.

One epoch = the training images in a fresh random order, cut into full batches
(the last partial batch is dropped, as the official ``drop_last``).  For each
batch, two augmented views go through one :meth:`MoCo.step`.  The learning
rate is set once per epoch by the official schedule.

A run directory holds:

    config.json            the resolved configuration
    metrics.jsonl          one JSON object per logged step ("kind": "step") and per epoch ("kind": "epoch"),
                           the kNN of the untrained encoder ("knn"), the instruments ("instruments") and
                           the summary when training stops ("final")
    checkpoint_last.npz    the latest checkpoint (each epoch, and when training stops)
    checkpoint_NNNN.npz    kept every --save-every epochs, if asked

Resume is exact: the checkpoint holds the model, the queue, the optimiser
buffers and every random generator's state, plus where in the epoch it stopped
(the generator state that drew the epoch's order is kept, so the same order is
drawn again and the finished batches skipped), the sums of the metrics logged so
far in that epoch and the untrained encoder's kNN accuracy.  The checkpoint alone
is the state: metrics.jsonl is a log the trainer appends to and never reads back
to continue (on resume it only drops the records the resumed run will write
again).  On NumPy a run that is killed and resumed ends bit-identical to an
uninterrupted one.

Instruments (moco_ref/evaluation/instruments.py): whenever the kNN monitor is due (before the first
step, every --knn-every epochs and after the last; never with --knn-every 0), rank 0 also measures
the representation on a fixed probe set, the first 256 images of the kNN test split (of the training
set when there is none), and appends one record

    {"kind": "instruments", "epoch": epochs completed, "global_step", "alignment", "uniformity",
     "feature_std", "logit_pos", "logit_neg", "key_drift" (null at the first), "queue_age", "probe_images"}

after the epoch record (after the "knn" record at the start).  The measurement runs both encoders in
eval mode and draws its views from its own freshly seeded generators, so a run with instruments is
bit-identical to one without.  The probe keys of the last measurement (for the next drift) are resume
state: the checkpoint holds them as the array ``instruments.probe_keys``.

Momentum: each step runs with m = momentum_at_step(--moco-m, global step, epochs × steps per epoch,
--moco-m-cos) (fixed, or the half-cosine schedule to 1; moco_ref/momentum.py), and the step records log
it as "m".  Its state is the global step, which the checkpoint holds.

Data parallel (``comm`` with W processes, launched by ``mpiexec -n W``): ``batch_size`` is the
global batch; each process takes its n = batch_size / W samples of every batch (rows rank, rank + W,
…, see moco_ref/shuffle.py) and augments them with the parameters drawn for the whole batch, so the
generators stay identical everywhere.  Rank 0 alone prints, writes config.json, metrics.jsonl and
the checkpoints (after a barrier: every process has finished the step) and runs the kNN monitor;
the logged loss and accuracy are means over the processes.  A checkpoint records W and resumes
only with the same W.

What a run survives (see moco_ref/run/directory.py and moco_ref/run/stopping.py): the writer holds the run
directory's lock for the whole run, so a second run into it is refused; before the first step it checks
that the directory takes files and has room for two checkpoints; every write that fails (no space, a
read-only or deleted directory, no permission) stops training with one line, the last checkpoint kept;
SIGINT and SIGTERM stop after the current step with a checkpoint of that step (``run(stop=...)``).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from backends import get_backend, to_numpy
from moco_ref.augment import make_pipeline
from moco_ref.run.checkpoint import load_checkpoint, save_checkpoint, write_atomically
from moco_ref.run.config import TrainConfig
from moco_ref.augment.params import Share
from moco_ref.data import check_batchable, load_dataset
from moco_ref.parallel.communicator import SingleProcess
from moco_ref.errors import CheckpointError, UserError
from moco_ref.evaluation.instruments import PROBE_SIZE, Instruments
from moco_ref.evaluation.knn import knn_accuracy
from moco_ref.run.footprint import check_data_fits, check_step_fits
from moco_ref.moco import MoCo
from moco_ref.momentum import momentum_at_step
from moco_ref.optim import learning_rate
from moco_ref.run.progress import Progress
from moco_ref.run.directory import RunLock, check_room, check_writable, remove_temporary_files, writing
from moco_ref.run.stopping import StoppedBySignal, agreed_signal


class NonFiniteLoss(UserError):
    """The loss became NaN or infinite; training stopped and the last good checkpoint was kept."""


@dataclass
class LoggedSums:
    """Sums of the losses and accuracies logged so far in the current epoch, and how many were logged.

    The epoch record is their mean.  They are saved in the checkpoint, so that an epoch resumed
    midway still averages every record it logged (and adds them in the same order, bit for bit).
    """

    loss: float = 0.0
    acc1: float = 0.0        # as a fraction, 0..1
    count: int = 0

    def add(self, loss: float, acc1: float) -> None:
        self.loss += loss
        self.acc1 += acc1
        self.count += 1

    def mean_loss(self) -> float | None:
        return self.loss / self.count if self.count else None

    def mean_acc1_percent(self) -> float | None:
        return 100.0 * self.acc1 / self.count if self.count else None


def _complete_records(text: str) -> list[tuple[str, dict]]:
    """(line, record) for each line of metrics.jsonl that is a whole JSON object.  A line cut short (a
    full disk, a kill in the middle of a write) is dropped rather than stopping the resume."""
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append((line, record))
    return records


def _rng_state(rng: np.random.Generator) -> dict:
    return rng.bit_generator.state


def _set_rng_state(rng: np.random.Generator, state: dict) -> None:
    rng.bit_generator.state = state


class Trainer:
    """Runs (or resumes) one training run into ``run_dir``; see the module docstring."""

    def __init__(self, config: TrainConfig, run_dir, log=None, comm=None):
        self.config = config
        self.run_dir = Path(run_dir)
        self.comm = comm or SingleProcess()
        self.writer = self.comm.rank == 0          # the one process that prints and writes the run directory
        self.share = Share(self.comm.rank, self.comm.size)
        self.log = (log or (lambda message: print(message, file=sys.stderr))) if self.writer else (lambda _: None)
        self.backend = get_backend(config.backend)
        # Memory known in advance: the step's needs before anything is allocated, the data's once counted.
        step_needed = check_step_fits(config, self.backend, self.comm.size)

        self.train_set = load_dataset(config.data, "train", config.image_size, config.seed)
        self._report_skipped(self.train_set)
        check_batchable(self.train_set, config.batch_size, config.bn_splits, self.comm.size)
        self.test_set = self._load_monitor_set() if self.writer else None
        check_data_fits(len(self.train_set), len(self.test_set) if self.test_set is not None else 0, config,
                        step_needed, self.backend)

        self.model = MoCo(**config.model_arguments(), comm=self.comm)
        self.augment = make_pipeline(config.aug, config.image_size)
        self.test_transform = make_pipeline("test", config.image_size)
        # Three host generators, each with one job, all derived from the seed.
        self.data_rng = np.random.default_rng([config.seed, 10])      # epoch orders
        self.aug_rng = np.random.default_rng([config.seed, 11])       # augmentation parameters
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.epoch_start_data_state = _rng_state(self.data_rng)
        self.logged = LoggedSums()            # of the current epoch
        self.knn_top1_untrained = None        # measured before the first step, reported in the final record
        self.saved_step = None                # the global step of the latest checkpoint written or restored
        self.stop = None                      # what run() looks at after each step (moco_ref.run.stopping.StopSignals)
        self.stopped_by = None                # the signal all processes agreed to stop for, once they did
        self.instruments = self._make_instruments() if self.writer and config.knn_every else None

    # ------------------------------------------------------------------ set-up
    def _report_skipped(self, dataset) -> None:
        if dataset.skipped:
            for path, reason in dataset.skipped[:10]:
                self.log(f"warning: skipped {path}: {reason}")
            more = len(dataset.skipped) - 10
            self.log(f"warning: skipped {len(dataset.skipped)} file(s) in {dataset.name}"
                     + (f" ({more} not listed)" if more > 0 else ""))

    def _load_monitor_set(self):
        """The labelled held-out split for the kNN monitor, or None (then the monitor is off)."""
        if not self.config.knn_every or self.train_set.labels is None:
            return None
        try:
            test = load_dataset(self.config.data, "test", self.config.image_size, self.config.seed)
        except UserError as error:
            self.log(f"note: kNN monitor off: no held-out split ({error})")
            return None
        if test.labels is None:
            return None
        if len(test) == len(self.train_set) and np.array_equal(test.images, self.train_set.images):
            self.log("note: kNN monitor off: the data has no separate test/val split to measure on")
            return None
        return test

    def _make_instruments(self) -> Instruments:
        """The instruments on the first PROBE_SIZE images of the test split (else of the training set)."""
        probe = (self.test_set if self.test_set is not None else self.train_set).images[:PROBE_SIZE]
        keys_per_step = self.config.batch_size * (2 if self.config.symmetric else 1)
        return Instruments(probe, self.augment, self.test_transform, self.backend, self.config.seed,
                           keys_per_step, self.config.K)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_set) // self.config.batch_size

    @property
    def total_steps(self) -> int:
        """T_total of the momentum schedule: epochs × steps per epoch (--max-steps does not change it)."""
        return self.config.epochs * self.steps_per_epoch

    # ------------------------------------------------------------- checkpoints
    def checkpoint_meta(self) -> dict:
        return {"format": "moco-ref checkpoint v1", "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                "global_step": self.global_step, "arch": self.config.arch, "config": self.config.to_dict(),
                "world_size": self.comm.size,
                "logged_this_epoch": asdict(self.logged), "knn_top1_untrained": self.knn_top1_untrained,
                "rng": {"data_epoch_start": self.epoch_start_data_state, "augment": _rng_state(self.aug_rng),
                        "shuffle": _rng_state(self.model.shuffle_rng)}}

    def save(self) -> Path | None:
        """Writes checkpoint_last.npz (rank 0, once every process has finished the step); returns its path."""
        self.comm.barrier()
        if not self.writer:
            return None
        arrays = dict(self.model.state_dict())
        arrays.update({f"optimizer.{k}": v for k, v in self.model.optimizer.state_dict().items()})
        if self.instruments is not None:
            arrays.update(self.instruments.state_dict())       # instruments.probe_keys, once measured
        arrays = {name: to_numpy(a) for name, a in arrays.items()}  # the one copy to the host
        broken = [name for name, a in arrays.items() if a.dtype.kind == "f" and not np.isfinite(a).all()]
        if broken:  # a finite loss can still leave inf/nan weights or BN statistics behind
            raise NonFiniteLoss(
                f"{broken[0]} became inf or nan by step {self.global_step} "
                f"(epoch {self.epoch + (1 if self.step_in_epoch else 0)}); training "
                f"stopped {self._kept()}; try a lower --lr")
        meta = self.checkpoint_meta()
        path = self.run_dir / "checkpoint_last.npz"
        with self._writing(path):
            save_checkpoint(path, arrays, meta)
        self.saved_step = self.global_step
        if self.config.save_every and self.step_in_epoch == 0 and self.epoch % self.config.save_every == 0:
            kept = self.run_dir / f"checkpoint_{self.epoch:04d}.npz"
            with self._writing(kept):
                save_checkpoint(kept, arrays, meta)
        return path

    def checkpoint_bytes(self) -> int:
        """About the size of one checkpoint file: the bytes of its arrays, a header each, and the metadata."""
        arrays = [*self.model.state_dict().values(), *self.model.optimizer.state_dict().values()]
        return sum(int(a.nbytes) for a in arrays) + 256 * len(arrays) + 64 * 1024

    def restore(self, path) -> None:
        """Continues from the checkpoint at ``path``: model, optimiser, position, generators, logged sums.

        A checkpoint of an earlier version has no logged sums or untrained kNN: then the epoch's mean
        covers only the steps after the resume, and the final record has no untrained kNN.
        """
        arrays, meta = load_checkpoint(path)
        written_by = meta.get("world_size", 1)
        if written_by != self.comm.size:
            raise CheckpointError(f"{path} was written by a run of {written_by} process(es) and is resumed with "
                                  f"{self.comm.size}; resume it with the same number (mpiexec -n {written_by})")
        try:
            self.model.load_state_dict(arrays)
            self.model.optimizer.load_state_dict(
                {k[len("optimizer."):]: v for k, v in arrays.items() if k.startswith("optimizer.")},
                self.backend.to_device)
        except (KeyError, ValueError) as error:
            raise CheckpointError(f"{path} does not match this model: {error}") from None
        self.epoch, self.step_in_epoch = meta["epoch"], meta["step_in_epoch"]
        self.global_step = self.saved_step = meta["global_step"]
        self.epoch_start_data_state = meta["rng"]["data_epoch_start"]
        self.logged = LoggedSums(**meta.get("logged_this_epoch", {}))
        self.knn_top1_untrained = meta.get("knn_top1_untrained")
        if self.instruments is not None:
            self.instruments.load_state_dict(arrays)
        _set_rng_state(self.aug_rng, meta["rng"]["augment"])
        _set_rng_state(self.model.shuffle_rng, meta["rng"]["shuffle"])

    # -------------------------------------------------------------------- run
    def _writing(self, path):
        """The context of every write into the run directory: an OSError in it ends training with one line
        that names ``path``, the cause and what is kept (moco_ref.run.directory.writing)."""
        outcome = f"training stopped at step {self.global_step} {self._kept()}"
        if (self.run_dir / "checkpoint_last.npz").exists():
            outcome += f"; once that is fixed, continue with --resume {self.run_dir}"
        return writing(path, self.run_dir, outcome)

    def write_json(self, name: str, obj) -> None:
        """Writes run_dir/name atomically (a kill never leaves half a config.json)."""
        if not self.writer:
            return
        path, text = self.run_dir / name, json.dumps(obj, indent=2) + "\n"
        with self._writing(path):
            write_atomically(path, lambda f: f.write(text.encode("utf-8")))

    def append_metrics(self, record: dict) -> None:
        if not self.writer:
            return
        path = self.run_dir / "metrics.jsonl"
        with self._writing(path):
            with open(path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def truncate_metrics(self) -> None:
        """On resume, drops records logged after the checkpoint (they will be logged again), and the
        "final" and unfinished "epoch" records written when the run stopped there (it goes on)."""
        path = self.run_dir / "metrics.jsonl"
        if not self.writer or not path.exists():
            return

        def superseded(record: dict) -> bool:
            step = record.get("global_step", -1)
            stopped_here = record.get("kind") == "final" or (record.get("kind") == "epoch"
                                                               and not record.get("complete", True))
            return step > self.global_step or (step == self.global_step and stopped_here)

        kept = [line for line, record in _complete_records(path.read_text()) if not superseded(record)]
        text = "".join(line + "\n" for line in kept)
        with self._writing(path):
            write_atomically(path, lambda f: f.write(text.encode("utf-8")))

    def knn(self) -> float | None:
        if self.test_set is None:
            return None
        result = knn_accuracy(self.model.encoder_q, self.train_set, self.test_set, self.test_transform,
                              self.backend, self.config.knn_k, self.config.knn_t)
        return result["top1"]

    def measure_instruments(self) -> dict | None:
        """The "instruments" record of the model as it is now (None when the instruments are off)."""
        if self.instruments is None:
            return None
        return {"kind": "instruments", "epoch": self.epoch, "global_step": self.global_step,
                **self.instruments.measure(self.model, self.global_step)}

    def run(self, stop=None) -> dict:
        """Trains to the configured end; returns a summary dict (also the last line of metrics.jsonl).

        The writer holds the run directory's lock from here to the end (RunInUse if another process
        holds it) and checks the directory before the first step (RunDirectoryError).  ``stop`` is looked
        at after every step: once its ``received`` is a signal number (moco_ref.run.stopping.StopSignals),
        that step's checkpoint is saved and StoppedBySignal raised.
        """
        self.stop = stop
        lock = RunLock.acquire(self.run_dir) if self.writer else None
        try:
            self._open_run_directory()
            return self._train_to_the_end()
        finally:
            if lock is not None:
                lock.release()

    def _open_run_directory(self) -> None:
        """Rank 0, holding the lock, before anything else is written: the directory must take new files and
        have room for two checkpoints; the temporary files of a save that was killed go; metrics.jsonl is
        made to match the checkpoint; config.json is written."""
        if not self.writer:
            return
        check_writable(self.run_dir)
        present = self.run_dir / "checkpoint_last.npz"
        check_room(self.run_dir, self.checkpoint_bytes(), present.stat().st_size if present.exists() else 0)
        for path in remove_temporary_files(self.run_dir):
            self.log(f"note: removed {path.name}, left by a run that was killed while saving")
        if self.global_step == 0:     # a fresh run: no records of an earlier, failed start here
            with self._writing(self.run_dir / "metrics.jsonl"):
                (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
        else:
            self.truncate_metrics()
        self.write_json("config.json", self.config.to_dict())

    def _train_to_the_end(self) -> dict:
        c = self.config
        if self.global_step == 0 and self.test_set is not None:
            self.knn_top1_untrained = top1 = self.knn()
            self.log(f"kNN top-1 of the untrained encoder: {top1:.2f}%")
            self.append_metrics({"kind": "knn", "epoch": 0, "global_step": 0, "knn_top1": top1, "untrained": True})
        if self.global_step == 0 and self.instruments is not None:
            self.append_metrics(self.measure_instruments())
        summary = {}
        while self.epoch < c.epochs:
            if c.max_steps and self.global_step >= c.max_steps:
                break
            summary = self.run_epoch()   # each epoch (and a stop within one) ends with a checkpoint
            if self.stopped_by is not None:
                self.comm.barrier()      # every process waits until rank 0 has saved, then all stop
                raise StoppedBySignal(self.stopped_by)
        final = {**summary, "kind": "final", "epoch": self.epoch, "global_step": self.global_step}
        if self.test_set is not None:
            final["knn_top1"] = summary.get("knn_top1") if "knn_top1" in summary else self.knn()
            if self.knn_top1_untrained is not None:
                final["knn_top1_untrained"] = self.knn_top1_untrained
        self.append_metrics(final)
        return final

    def _gather(self, pending: list) -> tuple[float, float]:
        """Mean loss and accuracy of the pending steps over the processes: the step's only host-device
        synchronisation."""
        loss = sum(float(s["loss"]) for s in pending) / len(pending)
        acc = sum(float(s["acc1"]) for s in pending) / len(pending)
        if self.comm.size > 1:
            loss, acc = self.comm.allreduce_host_mean([loss, acc])
        if not math.isfinite(loss):
            raise NonFiniteLoss(
                f"the loss became {loss} at step {self.global_step} (epoch {self.epoch + 1}); training "
                f"stopped {self._kept()}; try a lower --lr")
        return loss, acc

    def _kept(self) -> str:
        """What a run that stops now leaves: "and the last good checkpoint is kept in RUN (step N)", …"""
        if (self.run_dir / "checkpoint_last.npz").exists():
            step = f" (step {self.saved_step})" if self.saved_step is not None else ""
            return f"and the last good checkpoint is kept in {self.run_dir}{step}"
        if not self.run_dir.is_dir():
            return "with nothing kept"
        return "before any checkpoint was written"

    def run_epoch(self) -> dict:
        c, model = self.config, self.model
        lr = learning_rate(c.lr, self.epoch, c.epochs, c.cos, tuple(c.schedule))
        model.lr = lr
        _set_rng_state(self.data_rng, self.epoch_start_data_state)
        order = self.data_rng.permutation(len(self.train_set))
        steps = self.steps_per_epoch
        progress = Progress(steps, f"epoch {self.epoch + 1}/{c.epochs}", enabled=self.writer)
        pending = []
        started, images = time.perf_counter(), 0
        while self.step_in_epoch < steps and not (c.max_steps and self.global_step >= c.max_steps):
            index = order[self.step_in_epoch * c.batch_size:(self.step_in_epoch + 1) * c.batch_size]
            batch = self.share.rows(self.train_set.images[index])               # this process's samples
            x_q = self.augment(batch, self.aug_rng, self.backend, self.share)
            x_k = self.augment(batch, self.aug_rng, self.backend, self.share)
            model.m = momentum_at_step(c.m, self.global_step, self.total_steps, c.m_cos)
            pending.append(model.step(x_q, x_k))
            self.step_in_epoch += 1
            self.global_step += 1
            images += len(index)
            self.stopped_by = agreed_signal(self.comm, self.stop.received if self.stop else None)  # every step
            stopping = (self.step_in_epoch == steps or self.global_step == c.max_steps
                        or self.stopped_by is not None)
            if len(pending) >= c.log_every or stopping:
                loss, acc = self._gather(pending)
                pending = []
                self.logged.add(loss, acc)
                rate = images / (time.perf_counter() - started)
                self.append_metrics({"kind": "step", "epoch": self.epoch, "global_step": self.global_step,
                                     "loss": loss, "acc1": 100.0 * acc, "lr": lr, "m": model.m,
                                     "images_per_s": rate})
                progress.show(self.step_in_epoch, loss=f"{loss:.3f}", acc=f"{100 * acc:.1f}%",
                              lr=f"{lr:.4f}", img_s=f"{rate:.0f}")
            if self.stopped_by is not None:
                break            # a signal: this step is done; the checkpoint below is of it
        progress.close()
        epoch_done = self.step_in_epoch >= steps
        instruments = None
        record = {"kind": "epoch", "epoch": self.epoch, "global_step": self.global_step,
                  "loss": self.logged.mean_loss(), "acc1": self.logged.mean_acc1_percent(), "lr": lr,
                  "seconds": time.perf_counter() - started, "complete": epoch_done}
        if epoch_done:
            self.epoch += 1
            self.step_in_epoch = 0
            self.logged = LoggedSums()
            self.epoch_start_data_state = _rng_state(self.data_rng)
            monitor_due = c.knn_every and (self.epoch % c.knn_every == 0 or self.epoch == c.epochs)
            if self.test_set is not None and monitor_due:
                record["knn_top1"] = self.knn()
            if monitor_due:
                instruments = self.measure_instruments()
        self.append_metrics(record)
        if instruments is not None:
            self.append_metrics(instruments)
        message = ""
        if record["loss"] is not None:
            message = f"epoch {record['epoch'] + 1}: loss {record['loss']:.4f} acc {record['acc1']:.1f}%"
        if "knn_top1" in record:
            message += f" kNN top-1 {record['knn_top1']:.2f}%"
        if message:
            self.log(message)
        self.save()
        return record
