"""Training: the loop behind ``moco-ref train``.

One epoch = the training images in the epoch's random order (``epoch_order``: from a generator derived
from the seed and the epoch), cut into full batches (the last partial batch is dropped, as the official
``drop_last``).  For each batch, two augmented views go through one :meth:`MoCo.step`, with this step's
momentum m (fixed, or the half-cosine schedule of --moco-m-cos) and the epoch's learning rate (the official
schedule, set once per epoch).  The run ends at the last epoch's end, or at --max-steps if sooner
(``end_step``).  moco_ref/run/epoch.py holds these, shared with ``moco-ref bench learn``.  The loop,
top-down (:meth:`Trainer.run_epoch`):

    order → batch → two views → step → log → (end of epoch) next epoch's start → monitor → save

The run directory's files belong to moco_ref/run/directory.py, the kNN monitor and the instruments to
moco_ref/run/monitor.py; the trainer says when to write and what.

Resume is exact: the checkpoint holds each owner's state dict.  MoCo's: both encoders, the queue, the
optimiser's buffers and the shuffle generator.  The trainer's: where in the epoch it stopped (the epoch's
order depends on the seed and the epoch alone, so the same order is drawn again and the finished batches
skipped), the augmentation generator and the sums of the metrics logged so far in that epoch.  The
monitor's: what it carries from one measurement to the next.  moco_ref/run/checkpoint.py alone lays them out
in the file.  The checkpoint alone is the state: the metrics are a log the trainer appends to and never reads
back to continue.  On NumPy a run that is killed and resumed ends bit-identical to an uninterrupted one.

Data parallel (``comm`` with W processes, launched by ``mpiexec -n W``): ``batch_size`` is the global
batch.  Every process draws the augmentation parameters of the whole batch from its generator (the same
state everywhere) and takes its share of the images and of those parameters once, where the batch is
formed (rows rank, rank + W, …: moco_ref/shuffle.py's ``local_share``).  Rank 0 alone prints, shows
progress, writes the run directory (after a barrier: every process has finished the step) and runs the
monitor; the other ranks get objects of the same interface that do nothing (ReadOnlyRunDirectory, NoProgress,
NoMonitor, NoTensorBoard), chosen once from the rank by moco_ref/run/roles.py (the command line takes its
printing and its in-use check from there too).  The logged loss and accuracy are
means over the processes.  A checkpoint records W and resumes only with the same W.

What a run survives (moco_ref/run/directory.py, moco_ref/run/stopping.py): one writer per run directory;
a directory that takes no files, or has no room for two checkpoints, is refused before the first step;
every failed write stops training with one line, the last checkpoint kept; SIGINT and SIGTERM stop after
the current step with a checkpoint of that step (``run(stop=...)``).

Divergence.  After every step the loss and every float array of the state (both encoders, the queue, the
optimiser's buffers) are checked for NaN and ±inf (moco_ref/run/finite.py); the flags stay on the device
with the step's loss until the loss is read, every ``--log-every`` steps, and the first step with a
non-finite value stops training with one line naming that step and that value (:class:`NonFiniteLoss`).
Nothing of that step or after it is saved, so the last checkpoint written stays the last finite one.
NumPy's floating-point warnings are silenced in the step and in the monitor's measurements (np.errstate,
harmless on CuPy): the check speaks instead.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from backends import get_backend, to_numpy
from moco_ref.augment import make_pipeline
from moco_ref.data import check_batchable, load_dataset
from moco_ref.errors import CheckpointError, UserError
from moco_ref.loss import chance_accuracy, chance_loss
from moco_ref.moco import MoCo
from moco_ref.momentum import momentum_at_step
from moco_ref.optim import learning_rate
from moco_ref.parallel.communicator import SingleProcess
from moco_ref.run.batchnorm_values import check_batchnorm_values
from moco_ref.run.checkpoint import checkpoint_entries, checkpoint_states, model_arrays
from moco_ref.run.config import TrainConfig
from moco_ref.run.epoch import end_step, epoch_order, two_views
from moco_ref.run.finite import finite_flags, first_non_finite, float_names
from moco_ref.run.footprint import check_data_fits, check_step_fits
from moco_ref.run.roles import roles, to_stderr
from moco_ref.run.stopping import StoppedBySignal, agreed_signal
from moco_ref.run.tensorboard import NoTensorBoard, TensorBoard, require_tensorboardx


class NonFiniteLoss(UserError):
    """The loss or a float array of the state became NaN or infinite; training stopped and the last good
    checkpoint was kept."""


@dataclass
class LoggedSums:
    """Sums of the losses and accuracies logged so far in the current epoch, and how many were logged.

    The epoch record is their mean.  They are saved in the checkpoint, so that an epoch resumed midway
    still averages every record it logged (and adds them in the same order, bit for bit).
    """

    loss: float = 0.0
    acc1: float = 0.0  # as a fraction, 0..1
    count: int = 0

    def add(self, loss: float, acc1: float) -> None:
        self.loss, self.acc1, self.count = self.loss + loss, self.acc1 + acc1, self.count + 1

    def mean_loss(self) -> float | None:
        return self.loss / self.count if self.count else None

    def mean_acc1_percent(self) -> float | None:
        return 100.0 * self.acc1 / self.count if self.count else None


def step_record(
    epoch: int, global_step: int, loss: float, acc: float, lr: float, m: float, rate: float, data_share: float
) -> dict:
    """The "step" record of the metrics: the mean loss and accuracy (a fraction) of the steps since the last
    record, the lr and m, images per second and the share of the time spent on batches and views."""
    return {
        "kind": "step",
        "epoch": epoch,
        "global_step": global_step,
        "loss": loss,
        "acc1": 100.0 * acc,
        "lr": lr,
        "m": m,
        "images_per_s": rate,
        "data_share": data_share,
    }


def step_fields(record: dict, chance_loss: float, chance_acc1: float) -> list[str]:
    """The progress line's fields of a step record, beside the chance values (ln(K+1) a loss term, %)."""
    return [
        f"loss {record['loss']:.3f} (chance {chance_loss:.3f})",
        f"acc {record['acc1']:.1f}% (chance {chance_acc1:.2g}%)",
        f"lr {record['lr']:.4f}",
        f"{record['images_per_s']:.0f} img/s",
        f"data {100 * record['data_share']:.0f} %",
    ]


def epoch_record(epoch: int, global_step: int, logged: LoggedSums, lr: float, seconds: float, complete: bool) -> dict:
    """The "epoch" record of the metrics: the means of the epoch's logged records (None if none), its lr, its
    seconds and whether it ran to its end (the monitor adds "knn_top1" when it measures)."""
    return {
        "kind": "epoch",
        "epoch": epoch,
        "global_step": global_step,
        "loss": logged.mean_loss(),
        "acc1": logged.mean_acc1_percent(),
        "lr": lr,
        "seconds": seconds,
        "complete": complete,
    }


def epoch_line(record: dict, chance_loss: float, chance_acc1: float) -> str | None:
    """The line printed at an epoch's end, from its record: loss and accuracy beside chance, and the kNN
    top-1 when measured; None when there is nothing to say."""
    knn = f" kNN top-1 {record['knn_top1']:.2f}%" if "knn_top1" in record else ""
    if record["loss"] is not None:
        return (
            f"epoch {record['epoch'] + 1}: loss {record['loss']:.4f} (chance {chance_loss:.4f}) "
            f"acc {record['acc1']:.1f}% (chance {chance_acc1:.2g}%){knn}"
        )
    return knn or None


class Trainer:
    """Runs (or resumes) one training run into ``run_dir``; see the module docstring."""

    def __init__(self, config: TrainConfig, run_dir, log=None, comm=None):
        self.config, self.comm = config, comm or SingleProcess()
        # The roles, chosen once from the rank (moco_ref/run/roles.py): rank 0 prints, shows progress, writes
        # the run directory (and TensorBoard's files) and measures; the other ranks get objects that do nothing.
        role = roles(self.comm, log or to_stderr, config.tensorboard)
        self.directory, self.log, self.progress = role.directory(run_dir), role.say, role.progress
        monitor, self.tensorboard_type = role.monitor, role.tensorboard
        self.backend = get_backend(config.backend)
        step_needed = check_step_fits(config, self.backend, self.comm.size)  # before anything is allocated
        self.train_set = load_dataset(config.data, "train", config.image_size, config.seed)
        for note in self.train_set.load_notes():
            self.log(note)
        check_batchable(self.train_set, config.batch_size, config.bn_splits, self.comm.size)
        check_batchnorm_values(config, self.comm.size)
        self.augment = make_pipeline(config.aug, config.image_size)
        self.test_transform = make_pipeline("test", config.image_size)
        self.monitor = monitor(
            config, self.train_set, self.augment, self.test_transform, self.backend, self.log, progress=self.progress
        )
        test_images = len(self.monitor.test_set) if self.monitor.test_set is not None else 0
        check_data_fits(len(self.train_set), test_images, config, step_needed, self.backend)
        self.model = MoCo(**config.model_arguments(), comm=self.comm)
        # The host generators, each with one job, all derived from the seed: each epoch's order its own
        # (epoch_order(seed, epoch, N)), the augmentation parameters this one, the shuffles' the model's.
        self.aug_rng = np.random.default_rng([config.seed, 11])
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.logged = LoggedSums()  # of the current epoch
        self.tensorboard: TensorBoard | NoTensorBoard = NoTensorBoard()  # TensorBoard's files while run() runs
        if self.tensorboard_type is TensorBoard:
            require_tensorboardx()  # before anything is written: one line where it is missing
        # Where loss and accuracy stand with nothing learned, shown beside them: ln(K+1) a loss term, 1/(K+1).
        self.chance_loss = chance_loss(config.K, 2 if config.symmetric else 1)
        self.chance_acc1 = 100.0 * chance_accuracy(config.K)  # %

    @property
    def run_dir(self) -> Path:
        return self.directory.path

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_set) // self.config.batch_size

    @property
    def total_steps(self) -> int:
        """T_total of the momentum schedule: epochs × steps per epoch (--max-steps does not change it)."""
        return self.config.epochs * self.steps_per_epoch

    @property
    def end_step(self) -> int:
        """The global step the run ends at: the last epoch's end, or --max-steps if sooner."""
        return end_step(self.config, self.steps_per_epoch)

    def run_steps_left(self) -> int:
        """Steps from here to the end of the run."""
        return max(0, self.end_step - self.global_step)

    # -------------------------------------------------------------------- the loop
    def run(self, stop=None) -> dict:
        """Trains to the configured end; returns the summary (also the last record of the metrics).

        The writer holds the run directory's lock throughout (RunInUse if another process holds it) and
        checks the directory before the first step (RunDirectoryError).  ``stop`` is looked at after every
        step: once its ``received`` is a signal number (moco_ref.run.stopping.StopSignals), that step's
        checkpoint is saved and StoppedBySignal raised.
        """
        c, directory = self.config, self.directory
        with directory.lock(), np.errstate(all="ignore"):  # the finite checks speak, not NumPy's warnings
            directory.open(self.checkpoint_bytes(), self.global_step, c.to_dict(), self.log)
            self.tensorboard = self.tensorboard_type(directory.tensorboard, c, self.global_step)
            try:
                return self._train_to_the_end(stop)
            finally:
                self.tensorboard.close()
                self.tensorboard = NoTensorBoard()

    def _train_to_the_end(self, stop) -> dict:
        """The loop of :meth:`run`, inside the lock: the untrained measurements of a fresh run, the epochs, the
        final record (and, with --tensorboard, the probe set's embedding)."""
        if self.global_step == 0:
            for record in self.monitor.before_training(self.model, self.log):
                self.append(record)
        summary: dict = {}
        while self.global_step < self.end_step:
            summary, signal = self.run_epoch(stop)  # each epoch (and a stop within one) is saved
            if signal is not None:
                self.comm.barrier()  # every process waits until rank 0 has saved, then all stop
                raise StoppedBySignal(signal)
        final = {**summary, "kind": "final", "epoch": self.epoch, "global_step": self.global_step}
        if self.monitor.test_set is not None:
            final["knn_top1"] = summary["knn_top1"] if "knn_top1" in summary else self.monitor.knn(self.model)
            if self.monitor.knn_top1_untrained is not None:
                final["knn_top1_untrained"] = self.monitor.knn_top1_untrained
        self.append(final)
        self.tensorboard.add_embedding(lambda: self.monitor.probe_embedding(self.model), self.global_step)
        return final

    def append(self, record: dict) -> None:
        """Logs one record: to the run's metrics, and to TensorBoard with --tensorboard."""
        self.directory.append(record)
        self.tensorboard.add(record)

    def run_epoch(self, stop=None) -> tuple[dict, int | None]:
        """Trains the rest of the current epoch (or up to --max-steps, or a signal); returns the epoch record
        and the signal every process agreed to stop for (None to go on).

        Top-down: the epoch's order and lr; each step's batch, two views, step and (every --log-every steps)
        log; at the epoch's end the next epoch's start (position, logged sums), the monitor when it is due,
        the epoch record and the checkpoint.
        """
        c, comm, model = self.config, self.comm, self.model
        lr = learning_rate(c.lr, self.epoch, c.epochs, c.cos, tuple(c.schedule))
        order = epoch_order(c.seed, self.epoch, len(self.train_set))
        steps = min(self.steps_per_epoch - self.step_in_epoch, self.run_steps_left())  # this call's steps
        progress = self.progress(
            self.step_in_epoch + steps,
            f"epoch {self.epoch + 1}/{c.epochs}",
            done=self.step_in_epoch,
            after=self.run_steps_left() - steps,
            every=c.log_every,
        )
        pending, signal, started, images = [], None, time.perf_counter(), 0
        interval_started, data_seconds = started, 0.0  # since the last logged step: wall time, batch and views
        for step in range(1, steps + 1):
            data_started = time.perf_counter()
            index = order[self.step_in_epoch * c.batch_size : (self.step_in_epoch + 1) * c.batch_size]
            x_q, x_k = two_views(self.train_set.images, index, self.augment, self.aug_rng, self.backend, comm)
            data_seconds += time.perf_counter() - data_started
            m = momentum_at_step(c.m, self.global_step, self.total_steps, c.m_cos)
            with np.errstate(all="ignore"):  # a diverging step's overflow is reported by the check below
                result = model.step(x_q, x_k, m=m, lr=lr)
            result["finite"] = finite_flags({"loss": result["loss"], **self.training_state()})  # on the device
            pending.append(result)
            self.monitor.after_step(index)  # the queue's labels, in step
            self.step_in_epoch, self.global_step = self.step_in_epoch + 1, self.global_step + 1
            images += len(index)
            signal = agreed_signal(comm, stop.received if stop else None)  # every step, on every process
            fields = None
            if len(pending) >= c.log_every or step == steps or signal is not None:
                loss, acc = self._mean_over_processes(pending)
                pending = []
                self.logged.add(loss, acc)
                now = time.perf_counter()
                rate, data_share = images / (now - started), data_seconds / (now - interval_started)
                interval_started, data_seconds = now, 0.0
                record = step_record(self.epoch, self.global_step, loss, acc, lr, m, rate, data_share)
                self.append(record)
                fields = step_fields(record, self.chance_loss, self.chance_acc1)
            progress.show(self.step_in_epoch, fields)
            if signal is not None:
                break  # a signal: this step is done; the checkpoint below is of it
        progress.close()
        done = self.step_in_epoch == self.steps_per_epoch
        record = epoch_record(self.epoch, self.global_step, self.logged, lr, time.perf_counter() - started, done)
        measured: list[dict] = []
        if done:  # the next epoch's start
            self.epoch, self.step_in_epoch, self.logged = self.epoch + 1, 0, LoggedSums()
            if self.monitor.due(self.epoch):  # the encoder of `epoch` completed epochs
                if self.monitor.test_set is not None:
                    record["knn_top1"] = self.monitor.knn(self.model)
                measured = self.monitor.instruments_records(self.model, self.epoch, self.global_step)
        for r in [record, *measured]:
            self.append(r)
        line = epoch_line(record, self.chance_loss, self.chance_acc1)
        if line:
            self.log(line)
        self.save()
        return record, signal

    def _mean_over_processes(self, pending: list) -> tuple[float, float]:
        """Mean loss and accuracy of the pending steps (the last ``len(pending)`` ones) over the processes: the
        loop's only host-device synchronisation.

        Raises:
            NonFiniteLoss: a pending step left a NaN or ±inf in its loss or in the state, on any process; the
                line names the first such step and, on this process, the first such value.
        """
        flags = to_numpy(self.backend.xp.stack([s["finite"] for s in pending]))  # (steps, n)
        bad_here = ~flags.all(axis=1)  # (steps,)
        loss = sum(float(s["loss"]) for s in pending) / len(pending)
        acc = sum(float(s["acc1"]) for s in pending) / len(pending)
        loss, acc, *bad = self.comm.allreduce_host_mean([loss, acc, *bad_here.astype(float)])
        steps = np.flatnonzero(np.asarray(bad) > 0)
        if steps.size:
            first = int(steps[0])
            self._stop_non_finite(pending[first], flags[first], self.global_step - len(pending) + 1 + first)
        return loss, acc

    def _stop_non_finite(self, step_result: dict, flags: np.ndarray, step: int):
        """Raises NonFiniteLoss for the ``step``-th step, whose result and finite flags (this process's) are given."""
        names = ["loss", *float_names(self.training_state())]
        broken = names[int(np.flatnonzero(~flags)[0])] if not flags.all() else None
        if broken == "loss" or broken is None and not math.isfinite(float(step_result["loss"])):
            what = f"the loss became {float(step_result['loss'])}"
        elif broken is None:
            what = "a value on another process became inf or nan"
        else:
            what = f"{broken} became inf or nan"
        raise NonFiniteLoss(
            f"{what} at step {step} (epoch {self.epoch + 1}); training stopped "
            f"{self.directory.kept()}; try a lower --lr or a larger --moco-t"
        )

    # ------------------------------------------------------------- checkpoints
    def save(self) -> Path | None:
        """Saves the run's checkpoint once every process has finished the step (rank 0 writes it); returns its
        path (None on other ranks)."""
        self.comm.barrier()
        arrays, meta = checkpoint_entries(self.model.state_dict(), self.monitor.state_dict(), self.state_dict())
        arrays = {name: to_numpy(a) for name, a in arrays.items()}  # the one copy to the host
        broken = first_non_finite(arrays)
        if broken is not None:  # never over the last finite checkpoint
            raise NonFiniteLoss(
                f"{broken} became inf or nan by step {self.global_step} (epoch "
                f"{self.epoch + (1 if self.step_in_epoch else 0)}); training stopped "
                f"{self.directory.kept()}; try a lower --lr or a larger --moco-t"
            )
        every = self.config.save_every
        keep = self.epoch if every and self.step_in_epoch == 0 and self.epoch % every == 0 else None
        saved = self.directory.save(arrays, meta, keep_epoch=keep)
        self.tensorboard.flush()  # its events up to this checkpoint, as the metrics
        return saved

    def training_state(self) -> dict:
        """The arrays of the model's state (the optimiser's buffers included), by their checkpoint names: the
        arrays themselves, on the device."""
        return model_arrays(self.model.state_dict())

    def state_dict(self) -> dict:
        """The trainer's own part of a checkpoint: where the run stands, its settings and processes, the logged
        sums of the epoch and the state of its augmentation generator (each epoch's order needs none: it is
        derived from the seed and the epoch)."""
        return {
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "arch": self.config.arch,
            "config": self.config.to_dict(),
            "world_size": self.comm.size,
            "logged_this_epoch": asdict(self.logged),
            "rng": {"augment": self.aug_rng.bit_generator.state},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restores the position, the logged sums (none in a checkpoint of an earlier version) and the
        augmentation generator of :meth:`state_dict`."""
        self.epoch, self.step_in_epoch, self.global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        self.logged = LoggedSums(**state.get("logged_this_epoch", {}))
        self.aug_rng.bit_generator.state = state["rng"]["augment"]

    def checkpoint_bytes(self) -> int:
        """About the size of one checkpoint file: the bytes of its arrays, a header each, and the metadata."""
        arrays = list(self.training_state().values())
        return sum(int(a.nbytes) for a in arrays) + 256 * len(arrays) + 64 * 1024

    def restore(self, checkpoint=None) -> None:
        """Continues from a checkpoint (the run directory's, or another file): model, optimiser, position,
        generators, logged sums.

        A checkpoint of an earlier version has no logged sums or untrained kNN: then the epoch's mean covers
        only the steps after the resume, and the final record has no untrained kNN.
        """
        path = Path(checkpoint) if checkpoint is not None else self.directory.last_checkpoint
        arrays, meta = self.directory.load(path)
        model, monitor, trainer = checkpoint_states(arrays, meta)
        if trainer["world_size"] != self.comm.size:
            raise CheckpointError(
                f"{path} was written by a run of {trainer['world_size']} process(es) and is "
                f"resumed with {self.comm.size}; resume it with the same number "
                f"(mpiexec -n {trainer['world_size']})"
            )
        try:
            self.model.load_state_dict(model)
        except (KeyError, ValueError) as error:
            raise CheckpointError(f"{path} does not match this model: {error}") from None
        self.load_state_dict(trainer)
        self.monitor.load_state_dict(monitor, queue_ptr=self.model.queue_ptr)
