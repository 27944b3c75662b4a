"""``moco-ref train``: its options, generated from the configuration's declarations, and the run.

The options come from moco_ref/run/config.py (one declaration per setting: flag, help, range, whether it may
change on --resume); this module turns them into click options, builds or resumes the Trainer on every
process of the communicator (rank 0 alone prints), and reports the end of the run in one line.
"""

from __future__ import annotations

import shlex
from datetime import datetime
from pathlib import Path

import click

from moco_ref.run.config import OPTIONS, PRESETS, RESUMABLE, Option, TrainConfig
from moco_ref.errors import UserError


def parse_schedule(ctx, param, value):
    """Parses "120,160" into [120, 160] (the epochs of a step schedule)."""
    if value is None:
        return None
    try:
        return [int(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise click.BadParameter("give epochs separated by commas, e.g. 120,160") from None


def _click_type(declared: Option, default):
    """The click type of a declared option: its choices, its range, or plainly the default's type."""
    if declared.choices:
        return click.Choice(declared.choices)
    low = declared.at_least if declared.greater_than is None else declared.greater_than
    if low is None and declared.at_most is None:
        return type(default)
    kind = click.IntRange if isinstance(default, int) else click.FloatRange
    return kind(low, declared.at_most, min_open=declared.greater_than is not None)


def _default_text(value) -> str:
    """A default as the help shows it: on/off, 120,160, 0.0005, resnet10."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return format(value, "g") if isinstance(value, float) else str(value)


def config_options(command):
    """Adds one click option per TrainConfig field, generated from its declaration (moco_ref.run.config.OPTIONS).

    Every option defaults to None, so that only the flags given on the command line override a preset
    or a resumed run's configuration; the help shows the dataclass default.
    """
    defaults = TrainConfig()
    for name, declared in reversed(OPTIONS.items()):   # click lists options in the reverse order of decoration
        default = getattr(defaults, name)
        settings = {"help": f"{declared.help} [default: {_default_text(default)}]", "default": None}
        flags = declared.flags
        if isinstance(default, bool):
            if "/" not in flags[-1]:
                flags = (f"{declared.flag}/--no-{declared.flag[2:]}",)
        elif isinstance(default, list):
            settings["callback"] = parse_schedule
        else:
            settings["type"] = _click_type(declared, default)
        command = click.option(*flags, name, **settings)(command)
    return command


def _resumable_flags() -> str:
    """The flags that may change on --resume (declared resumable in config.py): "--epochs, --backend, …"."""
    return ", ".join(declared.flag for name, declared in OPTIONS.items() if name in RESUMABLE)


@click.command()
@click.option("--preset", type=click.Choice(sorted(PRESETS)), help="Start from a documented recipe; flags override it.")
@config_options
@click.option("--aug-plus", is_flag=True, default=None, help="MoCo v2 augmentation (same as --aug v2).")
@click.option("--out", "out", type=click.Path(file_okay=False), help="Run directory. [default: runs/moco-<time>]")
@click.option("--resume", type=click.Path(),
              help=f"Continue a run: its directory or a checkpoint file; only {_resumable_flags()} may change.")
def train(preset, out, resume, aug_plus, **flags):
    """Train MoCo and report the kNN accuracy of the learned encoder.

    With no flags: the built-in shapes dataset, resnet10 width 8, NumPy, about
    a minute and a quarter on a 2-core CPU.  Progress goes to stderr; RUN_DIR gets config.json,
    metrics.jsonl and checkpoint_last.npz (see the README).

    Data parallel: `mpiexec -n W moco-ref train ...` trains one model with W processes
    (pip install 'moco-ref[mpi]'); -b is then the global batch, split evenly over them.

    Ctrl-C or SIGTERM: the run finishes its step, saves a checkpoint of it, prints the --resume
    command and exits with 130 or 143.  One run at a time holds a run directory.
    """
    from moco_ref.parallel.launch import get_communicator, run_or_abort

    given = {k: v for k, v in flags.items() if v is not None}
    if aug_plus:
        given["aug"] = "v2"
    comm = get_communicator(given.get("backend") or _run_backend(resume, preset))
    return run_or_abort(comm, _train, comm, preset, out, resume, given)


def _run_backend(resume, preset) -> str:
    """The backend the run will use when --backend is not given: the resumed run's, the preset's or the default."""
    if resume:
        from moco_ref.run.checkpoint import load_checkpoint_meta

        return TrainConfig.from_dict(load_checkpoint_meta(checkpoint_path(resume)).get("config", {})).backend
    return PRESETS.get(preset, {}).get("backend", TrainConfig().backend)


def _train(comm, preset, out, resume, given: dict) -> int:
    """The train command on one process of ``comm``; rank 0 alone prints.

    Returns the exit code: 0, or 128 + the signal's number when SIGINT or SIGTERM stopped the run (its
    checkpoint saved).  Rank 0 first refuses a run directory another process is training into (at once,
    touching nothing); the trainer then holds its lock for the whole run.
    """
    from moco_ref.run.footprint import memory_error_line

    echo = click.echo if comm.rank == 0 else (lambda *args, **kwargs: None)
    trainer = None
    try:
        if resume:
            trainer = _resumed_trainer(resume, given, preset, out, comm, echo)
            if trainer is None:
                return 0
        else:
            trainer = _new_trainer(preset, out, given, comm, echo)
        return _run(trainer, comm, echo)
    except MemoryError as error:       # NumPy's, or CuPy's OutOfMemoryError (a MemoryError too)
        config = trainer.config if trainer else TrainConfig.from_dict({**TrainConfig().to_dict(), **given})
        raise UserError(memory_error_line(error, config, trainer.global_step if trainer else 0)) from None


def _new_trainer(preset, out, given: dict, comm, echo):
    """The Trainer of a fresh run: the defaults, then the preset, then the flags given."""
    from moco_ref.run.directory import refuse_if_in_use
    from moco_ref.run.trainer import Trainer

    values = {**TrainConfig().to_dict(), **PRESETS.get(preset, {}), **given}
    if comm.size > 1 and "bn_splits" not in given:
        values["bn_splits"] = _splits_per_process(values["bn_splits"], comm.size)
        echo(f"BatchNorm: {values['bn_splits']} group(s) on each of the {comm.size} processes "
             f"(--bn-splits sets the groups per process)", err=True)
    run_dir = Path(out) if out else Path("runs") / _started_at(comm)
    if comm.rank == 0:
        refuse_if_in_use(run_dir)
    if (run_dir / "checkpoint_last.npz").exists():
        raise UserError(f"{run_dir} already holds a run; continue it with --resume {run_dir}, "
                        f"or choose another --out")
    trainer = Trainer(TrainConfig.from_dict(values), run_dir, comm=comm)
    c = trainer.config
    processes = f", {comm.size} processes" if comm.size > 1 else ""
    echo(f"training MoCo {c.arch} width {c.width} on {trainer.train_set.name} "
         f"({len(trainer.train_set)} images), backend {c.backend}{processes}, {c.epochs} epochs of "
         f"{trainer.steps_per_epoch} steps; run directory {run_dir}", err=True)
    return trainer


def _resumed_trainer(resume, given: dict, preset, out, comm, echo):
    """A Trainer restored from the checkpoint at ``resume`` with the flags in ``given`` applied, or None
    when the checkpoint is already where that configuration would stop (said in one line, nothing written)."""
    from moco_ref.run.directory import refuse_if_in_use
    from moco_ref.run.trainer import Trainer

    checkpoint, config, meta = _resumed_config(resume, given, preset)
    run_dir = Path(out) if out else checkpoint.parent
    if comm.rank == 0:
        refuse_if_in_use(run_dir)
    nothing_to_do = _nothing_to_do(checkpoint, meta, config)
    if nothing_to_do:
        echo(nothing_to_do)
        return None
    trainer = Trainer(config, run_dir, comm=comm)
    trainer.restore(checkpoint)
    echo(f"resuming {checkpoint} at epoch {trainer.epoch + 1}, step {trainer.global_step}", err=True)
    return trainer


def _run(trainer, comm, echo) -> int:
    """Trains to the end, with SIGINT and SIGTERM turned into a stop after the current step; the exit code."""
    from moco_ref.run.stopping import StoppedBySignal, StopSignals

    with StopSignals() as signals:
        try:
            final = trainer.run(stop=signals)
        except StoppedBySignal as stopped:
            echo(_stopped_line(stopped, trainer, comm), err=True)
            return stopped.exit_code
    echo(_done_line(final, trainer.run_dir))
    return 0


def _done_line(final: dict, run_dir: Path) -> str:
    """"done: 20 epoch(s), 620 steps, loss …, kNN top-1 …% (untrained encoder: …%); saved in RUN"."""
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
        where = (f"step {trainer.global_step} (step {trainer.step_in_epoch} of {trainer.steps_per_epoch} in "
                 f"epoch {trainer.epoch + 1})")
    else:
        where = f"step {trainer.global_step} (the end of epoch {trainer.epoch})"
    words = ["moco-ref", "train", "--resume", str(trainer.run_dir)]
    if trainer.config.max_steps:                      # a --max-steps limit does not carry over by itself
        words += ["--max-steps", str(trainer.config.max_steps)]
    if comm.size > 1:
        words = ["mpiexec", "-n", str(comm.size), *words]
    return (f"moco-ref: stopped by {stopped.name} at {where}, its checkpoint saved in {trainer.run_dir}; "
            f"continue with: {shlex.join(words)}")


def _splits_per_process(splits: int, processes: int) -> int:
    """The default (or preset's) BatchNorm groups of the whole batch, shared out over the processes: each
    process is then one group or more of the one-process run (1 when they do not share out evenly)."""
    return splits // processes if splits % processes == 0 else 1


def _started_at(comm) -> str:
    """The default run directory's name, moco-<time>, from rank 0's clock so that every process agrees."""
    import numpy as np

    stamp = comm.bcast_host(np.array([datetime.now().timestamp()]))[0]
    return datetime.fromtimestamp(float(stamp)).strftime("moco-%Y%m%d-%H%M%S")


def _resumed_config(resume, given: dict, preset):
    """The checkpoint at ``resume``, the configuration to continue it with, and the checkpoint's metadata.

    Only the options declared resumable (config.py) may differ from the run's configuration; any other
    flag given must repeat the run's value, else one line lists each difference with both values.  A
    --max-steps limit of the interrupted run does not carry over.  Returns (checkpoint path, config, meta).
    """
    from moco_ref.run.checkpoint import load_checkpoint_meta

    checkpoint = checkpoint_path(resume)
    meta = load_checkpoint_meta(checkpoint)
    if not isinstance(meta.get("config"), dict):
        raise UserError(f"{checkpoint} holds no training configuration; it cannot be resumed")
    if preset:
        raise UserError(f"--preset cannot be given with --resume: the run's settings come from {checkpoint}; "
                        f"only {_resumable_flags()} may change")
    run = {**TrainConfig.from_dict(meta["config"]).to_dict(), "max_steps": 0}
    differences = [f"{declared.flag} (the run's: {_default_text(run[name])}, given: {_default_text(given[name])})"
                   for name, declared in OPTIONS.items()
                   if name in given and name not in RESUMABLE and given[name] != run[name]]
    if differences:
        raise UserError(f"--resume cannot change {', '.join(differences)}; only {_resumable_flags()} may change")
    return checkpoint, TrainConfig.from_dict({**run, **given}), meta


def _nothing_to_do(checkpoint: Path, meta: dict, config: TrainConfig) -> str | None:
    """The line to print instead of training when the checkpoint is already where ``config`` would stop."""
    epoch, step = meta["epoch"], meta["global_step"]
    if config.max_steps and step >= config.max_steps:
        reason, advice = f"{step} steps, and --max-steps is {config.max_steps}", "a larger --max-steps"
    elif epoch >= config.epochs:
        reason, advice = f"{epoch} epoch(s) ({step} steps), and --epochs is {config.epochs}", "a larger --epochs"
    else:
        return None
    return f"nothing to do: {checkpoint} has trained {reason}; nothing was changed (give {advice} to train on)"


def checkpoint_path(path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint_last.npz"
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}")
    return path
