"""The ``moco-ref`` command line.

Every error a user can cause (a path, an image, a flag, a checkpoint, a
missing GPU) ends in one line on stderr and exit code 2; click's own usage
errors also exit with 2.
"""

from __future__ import annotations

import json
import shlex
import sys
from datetime import datetime
from pathlib import Path

import click

from backends import BACKEND_NAMES, BackendUnavailable
from moco_ref.config import OPTIONS, PRESETS, RESUMABLE, Option, TrainConfig
from moco_ref.errors import UserError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="moco-ref")
def cli():
    """moco-ref: MoCo (Momentum Contrast) from scratch on NumPy and CuPy, every gradient by hand.

    \b
    Start with:
      moco-ref train                 train on the built-in shapes, CPU-sized defaults
      moco-ref gradcheck             prove each hand-derived gradient by finite differences
    """
    from moco_ref.runtime import reuse_freed_memory

    reuse_freed_memory()  # NumPy's big per-step arrays: keep freed memory instead of re-faulting it (~20 %)


# ------------------------------------------------------------------- train
def _schedule(ctx, param, value):
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


def _config_options(command):
    """Adds one click option per TrainConfig field, generated from its declaration (moco_ref.config.OPTIONS).

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
            settings["callback"] = _schedule
        else:
            settings["type"] = _click_type(declared, default)
        command = click.option(*flags, name, **settings)(command)
    return command


def _resumable_flags() -> str:
    """The flags that may change on --resume (declared resumable in config.py): "--epochs, --backend, …"."""
    return ", ".join(declared.flag for name, declared in OPTIONS.items() if name in RESUMABLE)


@cli.command()
@click.option("--preset", type=click.Choice(sorted(PRESETS)), help="Start from a documented recipe; flags override it.")
@_config_options
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
    from moco_ref.distributed import get_communicator, run_or_abort

    given = {k: v for k, v in flags.items() if v is not None}
    if aug_plus:
        given["aug"] = "v2"
    comm = get_communicator(given.get("backend") or _run_backend(resume, preset))
    return run_or_abort(comm, _train, comm, preset, out, resume, given)


def _run_backend(resume, preset) -> str:
    """The backend the run will use when --backend is not given: the resumed run's, the preset's or the default."""
    if resume:
        from moco_ref.checkpoint import load_checkpoint

        return TrainConfig.from_dict(load_checkpoint(_checkpoint_path(resume))[1].get("config", {})).backend
    return PRESETS.get(preset, {}).get("backend", TrainConfig().backend)


def _train(comm, preset, out, resume, given: dict) -> int:
    """The train command on one process of ``comm``; rank 0 alone prints.

    Returns the exit code: 0, or 128 + the signal's number when SIGINT or SIGTERM stopped the run (its
    checkpoint saved).  Rank 0 first refuses a run directory another process is training into (at once,
    touching nothing); the trainer then holds its lock for the whole run.
    """
    echo = click.echo if comm.rank == 0 else (lambda *args, **kwargs: None)
    if resume:
        trainer = _resumed_trainer(resume, given, preset, out, comm, echo)
        if trainer is None:
            return 0
    else:
        trainer = _new_trainer(preset, out, given, comm, echo)
    return _run(trainer, comm, echo)


def _new_trainer(preset, out, given: dict, comm, echo):
    """The Trainer of a fresh run: the defaults, then the preset, then the flags given."""
    from moco_ref.run_directory import refuse_if_in_use
    from moco_ref.train import Trainer

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
    from moco_ref.run_directory import refuse_if_in_use
    from moco_ref.train import Trainer

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
    from moco_ref.stopping import StoppedBySignal, StopSignals

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
    from moco_ref.checkpoint import load_checkpoint

    checkpoint = _checkpoint_path(resume)
    _, meta = load_checkpoint(checkpoint)
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


def _checkpoint_path(path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint_last.npz"
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}")
    return path


# --------------------------------------------------------------- gradcheck
@cli.command()
@click.option("--seed", default=0, show_default=True, help="Seed of the random inputs.")
def gradcheck(seed):
    """Check every hand-derived gradient against float64 finite differences.

    Prints one row per layer and input: the relative error max|analytic − numeric| / max|·|
    and pass/fail against 1e-6 (layers) or 1e-5 (the whole encoder, along random directions).
    Exits with 1 if any check fails.
    """
    from moco_ref.gradcheck import run_all

    results = run_all(seed)
    width = max(len(r.name) for r in results)
    click.echo(f"{'check'.ljust(width)}  max rel. error  tolerance  result")
    for r in results:
        click.echo(f"{r.name.ljust(width)}  {r.error:14.2e}  {r.tolerance:9.0e}  {'pass' if r.passed else 'FAIL'}")
    failed = [r for r in results if not r.passed]
    click.echo(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    for r in failed:
        click.echo(r.describe(), err=True)
    sys.exit(1 if failed else 0)


# -------------------------------------------------------------------- eval
@cli.group(name="eval")
def evaluate():
    """Evaluate a trained encoder (kNN monitor, linear probe)."""


def _encoder_from_checkpoint(checkpoint, backend):
    from moco_ref.checkpoint import load_checkpoint
    from moco_ref.config import TrainConfig
    from moco_ref.errors import CheckpointError
    from moco_ref.models import build_encoder

    path = _checkpoint_path(checkpoint)
    arrays, meta = load_checkpoint(path)
    config = TrainConfig.from_dict(meta.get("config", {}))
    encoder = build_encoder(config.arch, dim=config.dim, width=config.width, mlp=config.mlp,
                            bn_splits=config.bn_splits, backend=backend or config.backend, dtype=config.dtype)
    try:
        encoder.load_state_dict({k[len("encoder_q."):]: v for k, v in arrays.items() if k.startswith("encoder_q.")})
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{path}: {error}") from None
    return encoder, config


@evaluate.command(name="knn")
@click.option("--checkpoint", required=True, type=click.Path(), help="A checkpoint file or run directory.")
@click.option("--train-data", help="Labelled data for the memory bank. [default: the run's data]")
@click.option("--val-data", help="Labelled data to classify. [default: the test split of --train-data]")
@click.option("-k", "k", default=200, show_default=True, type=click.IntRange(1), help="Neighbours.")
@click.option("-t", "t", default=0.1, show_default=True, type=click.FloatRange(0, min_open=True), help="Temperature of the votes.")
@click.option("--backend", type=click.Choice(BACKEND_NAMES), help="[default: the run's]")
def knn_command(checkpoint, train_data, val_data, k, t, backend):
    """kNN top-1 of encoder_q (the CIFAR demo's monitor); prints one JSON object."""
    from moco_ref.augment import make_pipeline
    from moco_ref.data import load_dataset
    from moco_ref.evaluation.knn import knn_accuracy

    encoder, config = _encoder_from_checkpoint(checkpoint, backend)
    train_source = train_data or config.data
    train_set = load_dataset(train_source, "train", config.image_size, config.seed)
    val_set = load_dataset(val_data or train_source, "train" if val_data else "test", config.image_size, config.seed)
    for name, dataset in (("--train-data", train_set), ("--val-data", val_set)):
        if dataset.labels is None:
            raise UserError(f"{name} {dataset.name} has no labels (put images in class sub-folders)")
    result = knn_accuracy(encoder, train_set, val_set, make_pipeline("test", config.image_size),
                          encoder.backend, k, t)
    click.echo(json.dumps(result))


@evaluate.command(name="linear", short_help="Linear probe of encoder_q (main_lincls); prints one JSON object.")
@click.option("--checkpoint", required=True, type=click.Path(), help="A checkpoint file or run directory.")
@click.option("--train-data", help="Labelled data to train the classifier on. [default: the run's data]")
@click.option("--val-data", help="Labelled data to measure it on. [default: the test split of --train-data]")
@click.option("--train-size", type=click.IntRange(1), help="Use a seeded random subset of N training images.")
@click.option("--val-size", type=click.IntRange(1), help="Use a seeded random subset of N validation images.")
@click.option("--epochs", default=100, show_default=True, type=click.IntRange(1), help="Epochs of the classifier.")
@click.option("--lr", default=30.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Base learning rate.")
@click.option("--momentum", default=0.9, show_default=True, type=click.FloatRange(0, 1), help="SGD momentum.")
@click.option("--wd", default=0.0, show_default=True, type=click.FloatRange(0), help="Weight decay.")
@click.option("--schedule", callback=_schedule, help="Epochs where lr ×0.1. [default: 60% and 80% of --epochs]")
@click.option("-b", "--batch-size", default=256, show_default=True, type=click.IntRange(1), help="Images per step.")
@click.option("--augment/--no-augment", default=None,
              help="Crop+flip the training images, features recomputed each epoch (the protocol), or encode "
                   "them once (fast). [default: --no-augment on numpy, --augment on cupy]")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the classifier, batch order and crops.")
@click.option("--backend", type=click.Choice(BACKEND_NAMES), help="[default: the run's]")
def linear_command(checkpoint, train_data, val_data, train_size, val_size, epochs, lr, momentum, wd, schedule,
                   batch_size, augment, seed, backend):
    """Linear probe of encoder_q (main_lincls): a new fc on the frozen features; prints one JSON object.

    The protocol: encoder without fc, frozen, BatchNorm in eval mode; fc initialised N(0, 0.01);
    SGD lr 30, momentum 0.9, no weight decay, 100 epochs, lr ×0.1 at 60 and 80.  On NumPy the
    training images are encoded once without crops or flips (--no-augment), so an epoch is a
    matrix product rather than a pass of the encoder; --augment follows the protocol (crop +
    flip, features recomputed each epoch).  Progress goes to stderr, one line an epoch.
    """
    from moco_ref.data import load_dataset
    from moco_ref.evaluation.linear import linear_probe

    encoder, config = _encoder_from_checkpoint(checkpoint, backend)
    train_source = train_data or config.data
    train_set = load_dataset(train_source, "train", config.image_size, config.seed, train_size)
    val_set = load_dataset(val_data or train_source, "train" if val_data else "test", config.image_size,
                           config.seed, val_size)
    if augment is None:
        augment = encoder.backend.name != "numpy"
    click.echo(f"linear probe of {config.arch} width {config.width} ({encoder.feature_dim}-d features) on "
               f"{train_set.name}: {len(train_set)} training, {len(val_set)} validation images, {epochs} "
               f"epochs, {'augmented' if augment else 'features encoded once (--no-augment)'}, backend "
               f"{encoder.backend.name}", err=True)
    result = linear_probe(encoder, train_set, val_set, encoder.backend, epochs=epochs, lr=lr, momentum=momentum,
                          weight_decay=wd, schedule=schedule, batch_size=batch_size, seed=seed, augment=augment,
                          log=lambda line: click.echo(line, err=True))
    result["checkpoint"] = str(_checkpoint_path(checkpoint))
    click.echo(json.dumps(result))


# ------------------------------------------------------------------ export
@cli.command(short_help="Write encoder_q as a PyTorch state_dict (.npz, .safetensors).")
@click.option("--checkpoint", required=True, type=click.Path(), help="A checkpoint file or run directory.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="FILE.npz, or FILE.safetensors (also writes FILE.npz; needs the safetensors package).")
@click.option("--keep-fc", is_flag=True, help="Keep the fc head (default: dropped, as the official recipe).")
def export(checkpoint, out, keep_fc):
    """Export encoder_q as a PyTorch state_dict with torchvision names (encoder_q. stripped, fc dropped).

    Prints the files written and a snippet that loads them with torch.from_numpy.
    """
    from moco_ref.export import export_encoder, loading_snippet

    result = export_encoder(_checkpoint_path(checkpoint), out, keep_fc)
    dropped = f", dropped {', '.join(result['dropped'])}" if result["dropped"] else ""
    for path in result["files"]:
        click.echo(f"wrote {path}")
    click.echo(f"{result['arrays']} arrays of {result['arch']} width {result['width']}{dropped}")
    click.echo("load it into PyTorch with:\n")
    click.echo(loading_snippet(result["files"][0], result["arch"], result["width"], result["dim"],
                               bool(result["mlp"]), keep_fc))


# -------------------------------------------------------------------- plot
@cli.command(short_help="Draw a run's training curves to a PNG (needs matplotlib).")
@click.argument("run_dir", type=click.Path())
@click.option("--out", type=click.Path(dir_okay=False), help="The PNG to write. [default: RUN_DIR/curves.png]")
def plot(run_dir, out):
    """Draw loss, instance accuracy, kNN top-1 and lr of a run to a PNG (needs matplotlib).

    matplotlib is an optional extra: pip install 'moco-ref[plot]'.
    """
    from moco_ref.plot import plot_run

    click.echo(f"wrote {plot_run(run_dir, out)}")


# ------------------------------------------------------------------- bench
@cli.command()
@click.argument("suite", type=click.Choice(["step", "parts", "scaling", "memory", "augment", "all", "gpu", "dp"]),
                default="step")
@click.option("--backend", type=click.Choice(BACKEND_NAMES), default="numpy", show_default=True,
              help="Backend of our step (PyTorch runs on the matching device).")
@click.option("--quick", is_flag=True, help="Fewer configurations and repetitions.")
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the figures as JSON here.")
def bench(suite, backend, quick, out):
    """Measure speed: figures only, medians after warm-up, PyTorch in the same run where installed.

    \b
    SUITE: step     the full MoCo step, images/s, ratio to PyTorch, GFLOP/s, % of GEMM peak
           parts    where a step's time goes (conv GEMMs, im2col, BatchNorm, ...)
           scaling  step time against batch, K and width
           memory   peak memory, ours and PyTorch's (fresh processes)
           augment  augmentation throughput against training throughput
           all      all of the above
           gpu      the CIFAR demo config on CuPy against PyTorch (cuDNN), float32 and TF32
           dp       one process against mpiexec -n 2 (data parallel) and PyTorch, with the
                    time in communication (needs mpi4py and mpiexec; not part of "all")
    Results of a run on this project's machine: benchmarks/RESULTS.md in the repository.
    """
    from moco_ref.bench.cli_entry import run  # imported here: `moco-ref train` never loads the benchmarks

    if suite == "gpu":
        from moco_ref.bench import gpu_compare

        records = gpu_compare.run(echo=click.echo)
        if out:
            Path(out).write_text(json.dumps(records, indent=2) + "\n")
        sys.exit(0 if len(records) == 2 else 1)
    command = "moco-ref bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "moco-ref bench"
    run(suite, backend=backend, quick=quick, out=out, echo=click.echo, command=command)


# ------------------------------------------------------------- ablate, show
from moco_ref.cli_see import ablate_command, show  # noqa: E402  (ablate takes train's options, made above)

cli.add_command(ablate_command(_config_options), "ablate")
cli.add_command(show, "show")


# ------------------------------------------------------------------ entry
def main(argv=None) -> None:
    """Console entry point: runs the CLI, turning user errors into one line and exit code 2."""
    try:
        rc = cli.main(args=argv, prog_name="moco-ref", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("moco-ref: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except (UserError, BackendUnavailable) as error:
        click.echo(f"moco-ref: error: {error}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("moco-ref: interrupted; the last checkpoint is kept", err=True)
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
