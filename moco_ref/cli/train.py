"""``moco-ref train``: builds or resumes the Trainer on every process of the communicator (rank 0 alone
prints), and reports the end of the run in one line.

Its options are generated from the configuration's declarations (moco_ref/cli/options.py).
"""

from __future__ import annotations

import shlex
from datetime import datetime
from pathlib import Path

import click
import numpy as np

from moco_ref.cli.options import config_options
from moco_ref.errors import UserError
from moco_ref.parallel.launch import get_communicator, launcher_words, run_or_abort
from moco_ref.run.config import PRESETS, TrainConfig
from moco_ref.run.directory import RunDirectory, check_run_folder, checkpoint_of, read_meta
from moco_ref.run.footprint import memory_error_line
from moco_ref.run.resume import nothing_to_do, resumable_flags, resumed_config
from moco_ref.run.roles import roles
from moco_ref.run.stopping import StoppedBySignal, StopSignals
from moco_ref.run.trainer import Trainer


@click.command()
@click.option("--preset", type=click.Choice(sorted(PRESETS)), help="Start from a documented recipe; flags override it.")
@config_options()
@click.option("--aug-plus", is_flag=True, default=None, help="MoCo v2 augmentation (same as --aug v2).")
@click.option("--out", "out", type=click.Path(file_okay=False), help="Run directory. [default: runs/moco-<time>]")
@click.option(
    "--resume",
    type=click.Path(),
    help=f"Continue a run: its directory or a checkpoint file; only {resumable_flags()} may change.",
)
def train(preset, out, resume, aug_plus, **flags):
    """Train MoCo and report the kNN accuracy of the learned encoder.

    With no flags: the built-in shapes dataset (2000 images of ten classes), resnet10 width 8,
    NumPy, 20 epochs.  Progress goes to stderr; the run directory gets the configuration, the
    metrics and the checkpoint.

    Data parallel: `mpiexec -n W moco-ref train ...` trains one model with W processes
    (pip install 'moco-ref[mpi]'); -b is then the global batch, split evenly over them.

    Ctrl-C or SIGTERM: the run finishes its step, saves a checkpoint of it, prints the --resume
    command and exits with 130 or 143.  One run at a time holds a run directory.
    """
    given = {k: v for k, v in flags.items() if v is not None}
    if aug_plus:
        given["aug"] = "v2"
    comm = get_communicator(given.get("backend") or _run_backend(resume, preset))
    return run_or_abort(comm, _train, comm, preset, out, resume, given)


def _run_backend(resume, preset) -> str:
    """The backend the run will use when --backend is not given: the resumed run's, the preset's or the default."""
    if resume:
        return TrainConfig.from_dict(read_meta(resume, "--resume").get("config", {})).backend
    return PRESETS.get(preset, {}).get("backend", TrainConfig().backend)


def _train(comm, preset, out, resume, given: dict) -> int:
    """The train command on one process of ``comm``; rank 0 alone prints.

    Returns the exit code: 0, or 128 + the signal's number when SIGINT or SIGTERM stopped the run (its
    checkpoint saved).  Rank 0 first refuses a run directory another process is training into (at once,
    touching nothing); the trainer then holds its lock for the whole run.
    """
    role = roles(comm, say=click.echo)  # rank 0 prints and checks the run directory; the others do neither
    echo, trainer = role.say, None
    try:
        if resume:
            trainer = _resumed_trainer(resume, given, preset, out, comm, role)
            if trainer is None:
                return 0
        else:
            trainer = _new_trainer(preset, out, given, comm, role)
        return _run(trainer, comm, echo)
    except MemoryError as error:  # NumPy's, or CuPy's OutOfMemoryError (a MemoryError too)
        config = trainer.config if trainer else TrainConfig.from_dict({**TrainConfig().to_dict(), **given})
        raise UserError(memory_error_line(error, config, trainer.global_step if trainer else 0)) from None


def _new_trainer(preset, out, given: dict, comm, role):
    """The Trainer of a fresh run: the defaults, then the preset, then the flags given."""
    echo = role.say
    values = {**TrainConfig().to_dict(), **PRESETS.get(preset, {}), **given}
    shared_out = _splits_per_process(values["bn_splits"], comm.size)
    if "bn_splits" not in given and shared_out != values["bn_splits"]:
        values["bn_splits"] = shared_out
        echo(
            f"BatchNorm: {shared_out} group(s) on each of the {comm.size} processes "
            f"(--bn-splits sets the groups per process)",
            err=True,
        )
    run_dir = check_run_folder(Path(out) if out else Path("runs") / _started_at(comm))
    role.directory(run_dir).refuse_if_in_use()
    if RunDirectory(run_dir).last_checkpoint.exists():
        raise UserError(f"{run_dir} already holds a run; continue it with --resume {run_dir}, or choose another --out")
    trainer = Trainer(TrainConfig.from_dict(values), run_dir, comm=comm)
    c = trainer.config
    processes = f", {comm.size} processes" if launcher_words(comm) else ""
    echo(
        f"training MoCo {c.arch} width {c.width} on {trainer.train_set.name} "
        f"({len(trainer.train_set)} images), backend {c.backend}{processes}, {c.epochs} epochs of "
        f"{trainer.steps_per_epoch} steps; run directory {run_dir}",
        err=True,
    )
    return trainer


def _resumed_trainer(resume, given: dict, preset, out, comm, role):
    """A Trainer restored from the checkpoint at ``resume`` with the flags in ``given`` applied, or None
    when the checkpoint is already where that configuration would stop (said in one line, nothing written)."""
    checkpoint = checkpoint_of(resume, "--resume")
    if preset:
        raise UserError(
            f"--preset cannot be given with --resume: the run's settings come from {checkpoint}; "
            f"only {resumable_flags()} may change"
        )
    meta = read_meta(checkpoint)
    config = resumed_config(checkpoint, meta, given)
    run_dir = check_run_folder(Path(out) if out else checkpoint.parent, "--out" if out else "--resume", checkpoint)
    role.directory(run_dir).refuse_if_in_use()
    if out and RunDirectory(run_dir).last_checkpoint.exists() and not _same_folder(run_dir, checkpoint.parent):
        raise UserError(
            f"--out {run_dir} already holds another run; continue that one with --resume {run_dir}, "
            f"or give a new or empty --out"
        )
    done = nothing_to_do(checkpoint, meta, config)
    if done:
        role.say(done)
        return None
    trainer = Trainer(config, run_dir, comm=comm)
    trainer.restore(checkpoint)
    role.say(f"resuming {checkpoint} at epoch {trainer.epoch + 1}, step {trainer.global_step}", err=True)
    return trainer


def _same_folder(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _run(trainer, comm, echo) -> int:
    """Trains to the end, with SIGINT and SIGTERM turned into a stop after the current step; the exit code."""
    with StopSignals() as signals:
        try:
            final = trainer.run(stop=signals)
        except StoppedBySignal as stopped:
            echo(_stopped_line(stopped, trainer, comm), err=True)
            return stopped.exit_code
    echo(_done_line(final, trainer.run_dir))
    return 0


def _done_line(final: dict, run_dir: Path) -> str:
    """ "done: 20 epoch(s), 620 steps, loss …, kNN top-1 …% (untrained encoder: …%); saved in RUN"."""
    line = f"done: {final['epoch']} epoch(s), {final['global_step']} steps"
    if final.get("loss") is not None:
        line += f", loss {final['loss']:.4f}"
    if final.get("knn_top1") is not None:
        line += f", kNN top-1 {final['knn_top1']:.2f}%"
        if final.get("knn_top1_untrained") is not None:
            line += f" (untrained encoder: {final['knn_top1_untrained']:.2f}%)"
    return line + f"; saved in {run_dir}"


def _stopped_line(stopped, trainer, comm) -> str:
    """The one line of a run a signal stopped: where, and the exact command that continues it."""
    if trainer.step_in_epoch:
        where = (
            f"step {trainer.global_step} (step {trainer.step_in_epoch} of {trainer.steps_per_epoch} in "
            f"epoch {trainer.epoch + 1})"
        )
    else:
        where = f"step {trainer.global_step} (the end of epoch {trainer.epoch})"
    words = ["moco-ref", "train", "--resume", str(trainer.run_dir)]
    if trainer.config.max_steps:  # a --max-steps limit does not carry over by itself
        words += ["--max-steps", str(trainer.config.max_steps)]
    words = launcher_words(comm) + words
    return (
        f"moco-ref: stopped by {stopped.name} at {where}, its checkpoint saved in {trainer.run_dir}; "
        f"continue with: {shlex.join(words)}"
    )


def _splits_per_process(splits: int, processes: int) -> int:
    """The default (or preset's) BatchNorm groups of the whole batch, shared out over the processes: each
    process is then one group or more of the one-process run (1 when they do not share out evenly)."""
    return splits // processes if splits % processes == 0 else 1


def _started_at(comm) -> str:
    """The default run directory's name, moco-<time>, from rank 0's clock so that every process agrees."""
    stamp = comm.bcast_host(np.array([datetime.now().timestamp()]))[0]
    return datetime.fromtimestamp(float(stamp)).strftime("moco-%Y%m%d-%H%M%S")
