"""The ``moco-ref`` command line: the group, and its commands (train: moco_ref/cli/train.py; ablate and
show: moco_ref/cli/see.py; gradcheck, eval, export, plot and bench here).

Every error a user can cause (a path, an image, a flag, a checkpoint, a
missing GPU) ends in one line on stderr and exit code 2; click's own usage
errors also exit with 2.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from backends import BACKEND_NAMES, BackendUnavailable
from moco_ref.augment import make_pipeline
from moco_ref.bench import cli_entry, gpu_compare, learn, learn_report
from moco_ref.cli.options import FiniteFloatRange, config_options, force_option, parse_schedule
from moco_ref.cli.see import PLOT_NOTE, ablate, show
from moco_ref.cli.train import train
from moco_ref.data import load_dataset
from moco_ref.errors import UserError
from moco_ref.evaluation.knn import knn_accuracy
from moco_ref.evaluation.linear import linear_probe
from moco_ref.paths import check_output, check_output_file, refusal, refused
from moco_ref.run.config import PRESETS, TrainConfig
from moco_ref.run.directory import checkpoint_of
from moco_ref.run.progress import Progress
from moco_ref.tools.export import export_encoder, loading_snippet
from moco_ref.tools.gradcheck import run_all
from moco_ref.tools.plot import plot_run
from moco_ref.tools.runs import load_run


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="moco-ref")
def cli():
    """moco-ref: MoCo (Momentum Contrast) from scratch on NumPy and CuPy, every gradient by hand.

    \b
    Start with:
      moco-ref train                 train on the built-in shapes, CPU-sized defaults
      moco-ref gradcheck             prove each hand-derived gradient by finite differences
    """


cli.add_command(train)
cli.add_command(ablate)
cli.add_command(show)


# --------------------------------------------------------------- gradcheck
@cli.command()
@click.option("--seed", default=0, show_default=True, help="Seed of the random inputs.")
def gradcheck(seed):
    """Check every hand-derived gradient against float64 finite differences.

    Prints one row per layer and input: the relative error max|analytic − numeric| / max|·|
    and pass/fail against 1e-6 (layers) or 1e-5 (the whole encoder, along random directions).
    Exits with 1 if any check fails.
    """
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
    """(encoder_q of the checkpoint at ``checkpoint`` on ``backend``, the run's configuration)."""
    run = load_run(checkpoint_of(checkpoint, "--checkpoint"), backend)
    return run.encoder_q, run.config


@evaluate.command(name="knn")
@click.option("--checkpoint", required=True, type=click.Path(), help="A checkpoint file or run directory.")
@click.option("--train-data", help="Labelled data for the memory bank. [default: the run's data]")
@click.option("--val-data", help="Labelled data to classify. [default: the test split of --train-data]")
@click.option("-k", "k", default=200, show_default=True, type=click.IntRange(1), help="Neighbours.")
@click.option(
    "-t", "t", default=0.1, show_default=True, type=FiniteFloatRange(0, min_open=True), help="Temperature of the votes."
)
@click.option("--backend", type=click.Choice(BACKEND_NAMES), help="[default: the run's]")
def knn_command(checkpoint, train_data, val_data, k, t, backend):
    """kNN top-1 of encoder_q (the CIFAR demo's monitor); prints one JSON object."""
    encoder, config = _encoder_from_checkpoint(checkpoint, backend)
    train_source = train_data or config.data
    train_set = load_dataset(train_source, "train", config.image_size, config.seed)
    val_set = load_dataset(val_data or train_source, "train" if val_data else "test", config.image_size, config.seed)
    for name, dataset in (("--train-data", train_set), ("--val-data", val_set)):
        if dataset.labels is None:
            raise UserError(f"{name} {dataset.name} has no labels (put images in class sub-folders)")
    result = knn_accuracy(
        encoder, train_set, val_set, make_pipeline("test", config.image_size), encoder.backend, k, t, progress=Progress
    )
    click.echo(json.dumps(result))


@evaluate.command(name="linear", short_help="Linear probe of encoder_q (main_lincls); prints one JSON object.")
@click.option("--checkpoint", required=True, type=click.Path(), help="A checkpoint file or run directory.")
@click.option("--train-data", help="Labelled data to train the classifier on. [default: the run's data]")
@click.option("--val-data", help="Labelled data to measure it on. [default: the test split of --train-data]")
@click.option("--train-size", type=click.IntRange(1), help="Use a seeded random subset of N training images.")
@click.option("--val-size", type=click.IntRange(1), help="Use a seeded random subset of N validation images.")
@click.option("--epochs", default=100, show_default=True, type=click.IntRange(1), help="Epochs of the classifier.")
@click.option(
    "--lr", default=30.0, show_default=True, type=FiniteFloatRange(0, min_open=True), help="Base learning rate."
)
@click.option("--momentum", default=0.9, show_default=True, type=FiniteFloatRange(0, 1), help="SGD momentum.")
@click.option("--wd", default=0.0, show_default=True, type=FiniteFloatRange(0), help="Weight decay.")
@click.option("--schedule", callback=parse_schedule, help="Epochs where lr ×0.1. [default: 60% and 80% of --epochs]")
@click.option("-b", "--batch-size", default=256, show_default=True, type=click.IntRange(1), help="Images per step.")
@click.option(
    "--augment/--no-augment",
    default=None,
    help="Crop+flip the training images, features recomputed each epoch (the protocol), or encode "
    "them once (fast). [default: --no-augment on numpy, --augment on cupy]",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the classifier, batch order and crops.")
@click.option("--backend", type=click.Choice(BACKEND_NAMES), help="[default: the run's]")
def linear_command(
    checkpoint,
    train_data,
    val_data,
    train_size,
    val_size,
    epochs,
    lr,
    momentum,
    wd,
    schedule,
    batch_size,
    augment,
    seed,
    backend,
):
    """Linear probe of encoder_q (main_lincls): a new fc on the frozen features; prints one JSON object.

    The protocol: encoder without fc, frozen, BatchNorm in eval mode; fc initialised N(0, 0.01);
    SGD lr 30, momentum 0.9, no weight decay, 100 epochs, lr ×0.1 at 60 and 80.  On NumPy the
    training images are encoded once without crops or flips (--no-augment), so an epoch is a
    matrix product rather than a pass of the encoder; --augment follows the protocol (crop +
    flip, features recomputed each epoch).  Progress goes to stderr: a bar on a terminal, else a line
    every tenth of the epochs.
    """
    encoder, config = _encoder_from_checkpoint(checkpoint, backend)
    train_source = train_data or config.data
    train_set = load_dataset(train_source, "train", config.image_size, config.seed, train_size)
    val_set = load_dataset(
        val_data or train_source, "train" if val_data else "test", config.image_size, config.seed, val_size
    )
    if augment is None:
        augment = encoder.backend.accelerated  # the protocol where it is cheap, features once on a CPU
    click.echo(
        f"linear probe of {config.arch} width {config.width} ({encoder.feature_dim}-d features) on "
        f"{train_set.name}: {len(train_set)} training, {len(val_set)} validation images, {epochs} "
        f"epochs, {'augmented' if augment else 'features encoded once (--no-augment)'}, backend "
        f"{encoder.backend.name}",
        err=True,
    )
    result = linear_probe(
        encoder,
        train_set,
        val_set,
        encoder.backend,
        epochs=epochs,
        lr=lr,
        momentum=momentum,
        weight_decay=wd,
        schedule=schedule,
        batch_size=batch_size,
        seed=seed,
        augment=augment,
        progress=Progress,
    )
    result["checkpoint"] = str(checkpoint_of(checkpoint))
    click.echo(json.dumps(result))


# ------------------------------------------------------------------ export
@cli.command(short_help="Write encoder_q as a PyTorch state_dict (.npz, .safetensors).")
@click.option("--checkpoint", required=True, type=click.Path(), help="A checkpoint file or run directory.")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="FILE.npz, or FILE.safetensors (also writes FILE.npz; needs the safetensors package).",
)
@click.option("--keep-fc", is_flag=True, help="Keep the fc head (default: dropped, as the official recipe).")
@force_option
def export(checkpoint, out, keep_fc, force):
    """Export encoder_q as a PyTorch state_dict with torchvision names (encoder_q. stripped, fc dropped).

    Prints the files written and a snippet that loads them with torch.from_numpy.
    """
    result = export_encoder(checkpoint_of(checkpoint, "--checkpoint"), out, keep_fc, force)
    dropped = f", dropped {', '.join(result['dropped'])}" if result["dropped"] else ""
    for path in result["files"]:
        click.echo(f"wrote {path}")
    click.echo(f"{result['arrays']} arrays of {result['arch']} width {result['width']}{dropped}")
    click.echo("load it into PyTorch with:\n")
    click.echo(
        loading_snippet(
            result["files"][0], result["arch"], result["width"], result["dim"], bool(result["mlp"]), keep_fc
        )
    )


# -------------------------------------------------------------------- plot
@cli.command(short_help="Draw a run's training curves to a PNG (needs matplotlib).")
@click.argument("run_dir", type=click.Path())
@click.option("--out", type=click.Path(dir_okay=False), help="The PNG to write. [default: RUN_DIR/curves.png]")
@force_option
def plot(run_dir, out, force):
    """Draw loss, instance accuracy, kNN top-1 and lr of a run to a PNG (needs matplotlib).

    matplotlib is an optional extra: pip install 'moco-ref[plot]'.
    """
    click.echo(f"wrote {plot_run(run_dir, out, force)}")


# ------------------------------------------------------------------- bench
SPEED_SUITES = {  # the speed suites of moco_ref/bench/cli_entry.py, and what each measures
    "step": "the full MoCo step, images/s, ratio to PyTorch, GFLOP/s, % of GEMM peak",
    "parts": "where a step's time goes (conv GEMMs, im2col, BatchNorm, ...)",
    "scaling": "step time against batch, K and width",
    "memory": "peak memory, ours and PyTorch's (fresh processes)",
    "augment": "augmentation throughput against training throughput",
    "all": "all of the above",
    "dp": "one process against mpiexec -n 2 (data parallel) and PyTorch, with the time in communication "
    '(needs mpi4py and mpiexec; not part of "all")',
}


class BenchGroup(click.Group):
    """``moco-ref bench``'s group: its commands in the order declared, and ``step`` when no SUITE is named
    (``moco-ref bench --quick`` is ``moco-ref bench step --quick``)."""

    default = "step"

    def list_commands(self, ctx):
        return list(self.commands)

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names):
            args = [self.default, *args]
        return super().parse_args(ctx, args)


@cli.group(cls=BenchGroup)
def bench():
    """Measure moco-ref against PyTorch: speed (figures only, medians after warm-up, PyTorch in the
    same run where installed), and whether it learns what PyTorch learns (learn).

    \b
    moco-ref bench SUITE [--backend numpy|cupy] [--quick] [--out FILE]   (a speed suite; step by default)
    moco-ref bench gpu [--out FILE]
    moco-ref bench learn [--seeds N] [--epochs E] [--data DIR] [flags of train]

    `moco-ref bench SUITE --help` gives a suite's flags.
    """


def _speed_suite(suite: str, summary: str) -> click.Command:
    """The command of one speed suite of moco_ref/bench/cli_entry.py."""

    @click.command(name=suite, short_help=summary, help=f"Measure {summary}.")
    @click.option(
        "--backend",
        type=click.Choice(BACKEND_NAMES),
        default="numpy",
        show_default=True,
        help="Backend of our step (PyTorch runs on the matching device).",
    )
    @click.option("--quick", is_flag=True, help="Fewer configurations and repetitions.")
    @click.option("--out", type=click.Path(dir_okay=False), help="Also write the figures as JSON here.")
    @force_option
    def command(backend, quick, out, force):
        if out:
            check_output_file(out, "--out", force)  # before the figures, not after them
        words = (
            ["moco-ref", "bench", suite, "--backend", backend]
            + (["--quick"] if quick else [])
            + (["--out", out] if out else [])
        )
        cli_entry.run(suite, backend=backend, quick=quick, out=out, echo=click.echo, command=shlex.join(words))

    return command


for _suite, _summary in SPEED_SUITES.items():
    bench.add_command(_speed_suite(_suite, _summary))


@bench.command(name="gpu", short_help="the CIFAR demo config on CuPy against PyTorch (cuDNN), float32 and TF32")
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the figures as JSON here.")
@force_option
def bench_gpu(out, force):
    """Measure the CIFAR demo config on CuPy against PyTorch (cuDNN), float32 and TF32, each in its own
    process; exits with 1 unless both ran."""
    if out:
        check_output_file(out, "--out", force)
    records = gpu_compare.run(echo=click.echo)
    if out:
        with refused(out, "--out"):
            Path(out).write_text(json.dumps(records, indent=2) + "\n")
    sys.exit(0 if len(records) == 2 else 1)


@bench.command(
    name="learn",
    short_help="moco-ref and its PyTorch twin trained side by side over seeds: "
    "kNN and linear top-1, paired difference with its 95 % interval",
)
@click.option("--preset", type=click.Choice(sorted(PRESETS)), help="Start from a documented recipe; flags override it.")
@config_options()
@click.option(
    "--seeds", default=3, show_default=True, type=click.IntRange(1), help="How many seeds: --seed, --seed + 1, ..."
)
@click.option(
    "--probe-epochs",
    default=learn.PROBE_EPOCHS,
    show_default=True,
    type=click.IntRange(1),
    help="Epochs of each linear probe (features encoded once).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="Write the report as JSON here (after every seed); the seeds it already holds are read back.",
)
@click.option(
    "--png",
    type=click.Path(dir_okay=False),
    help="The picture of the kNN curves. [default: --out with .png, else bench-learn.png]",
)
@click.option(
    "--control",
    is_flag=True,
    help="Also train PyTorch′, the twin with its initial weights one ulp off (each element up or down, "
    "seeded), on the same steps: PyTorch - PyTorch′ is rounding amplified by training (chaos), shown "
    "beside ours - PyTorch with its interval, and their spreads compared.",
)
@click.option(
    "--drift",
    "drift_every",
    type=click.IntRange(1),
    metavar="EVERY",
    help="Every EVERY steps, record per layer (parameters, BatchNorm running statistics, the queue) "
    "the relative distance ||a - b||/||b|| of ours, and of PyTorch′, from PyTorch; in the report, and "
    "summarised after each seed.",
)
def bench_learn(preset, seeds, probe_epochs, out, png, control, drift_every, **flags):
    """Does moco-ref learn what PyTorch learns?  Train both on the same steps, over seeds.

    For each seed (--seed, default 0, to --seed + --seeds - 1), the configuration of `moco-ref
    train` (its defaults, the preset, the flags) trains moco-ref and its PyTorch twin (autograd,
    torch.optim.SGD; on the CPU, in --dtype) from the same initial weights and queue, on the same
    batches, augmented views and shuffle-BN permutations, with the same lr per epoch and m per
    step.  Both are measured by moco-ref's own code: the kNN monitor (--knn-k, --knn-t; before
    training, every --knn-every epochs and at the end) and the linear probe.

    Prints a table (per seed: kNN and linear top-1 of both, mean ± std) and the paired
    difference ours - PyTorch with its 95 % Student-t interval.  With --control, a third model,
    PyTorch′, differs from the twin only by one ulp in its initial weights: PyTorch - PyTorch′
    and its interval, printed beside ours - PyTorch, say how far rounding alone carries a run, so
    a bias (ours - PyTorch beyond it) and chaos can be told apart.  Writes the JSON report (--out)
    and the kNN curves of both per seed (--png; needs matplotlib).  Needs PyTorch: pip install
    torch.  Progress goes to stderr: a bar per epoch on a terminal, else a line every --log-every
    steps, and one line per seed and epoch.  --save-every and --tensorboard have no effect here (no
    run directory is written).

    Interrupted, or want more seeds?  Run it again with the same flags and --out (a larger
    --seeds, or another --seed, for more): the seeds the report holds are read back and kept,
    the others trained; the table covers them all.
    """
    given = {k: v for k, v in flags.items() if v is not None}
    values = {**TrainConfig().to_dict(), **PRESETS.get(preset, {}), **given}
    for path, flag in ((out, "--out"), (png, "--png")):  # both read back or redrawn by the next run
        if path:
            check_output(path, flag)
    learn.require_torch()
    picture = Path(png) if png else (Path(out).with_suffix(".png") if out else Path("bench-learn.png"))
    plotting = learn_report.can_draw()
    if not plotting:
        click.echo(
            f"note: matplotlib is not installed: the table is printed (and --out written), the picture "
            f"needs {PLOT_NOTE}",
            err=True,
        )
    try:
        report = learn.run_learn(
            values,
            seeds=seeds,
            first_seed=values["seed"],
            probe_epochs=probe_epochs,
            out=out,
            log=lambda line: click.echo(line, err=True),
            progress=Progress,
            control=control,
            drift_every=drift_every or 0,
        )
    except KeyboardInterrupt:
        kept = f"the seeds finished so far are in {out}" if out else "nothing was written (no --out)"
        click.echo(f"moco-ref bench learn: interrupted; {kept}", err=True)
        sys.exit(130)
    for line in learn_report.table_lines(report):
        click.echo(line)
    click.echo("")
    if out:
        click.echo(f"wrote {out}")
    if plotting:
        click.echo(f"wrote {learn_report.draw_curves(report, picture)}")


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
    except OSError as error:  # a path the OS refused where no entry point looked first
        if error.filename is None:
            raise
        click.echo(f"moco-ref: error: {refusal(error.filename, error)}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("moco-ref: interrupted; the last checkpoint is kept", err=True)
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
