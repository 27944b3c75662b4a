"""``moco-ref bench``: the benchmarks' one command line: the speed suites (moco_ref/bench/suites.py),
``bench gpu`` (moco_ref/bench/gpu_compare.py) and ``bench learn`` (moco_ref/bench/learn.py)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from backends import BACKEND_NAMES
from moco_ref.bench import gpu_compare, learn, learn_report, suites
from moco_ref.cli.options import PLOT_NOTE, config_options, force_option
from moco_ref.paths import check_output, check_output_file, refused
from moco_ref.progress import Progress
from moco_ref.run.config import PRESETS, TrainConfig


class BenchGroup(click.Group):
    """``moco-ref bench``'s group: its commands in the order declared, and ``step`` when no SUITE is named
    (``moco-ref bench --quick`` is ``moco-ref bench step --quick``; an unknown SUITE is an error)."""

    default = "step"

    def list_commands(self, ctx):
        return list(self.commands)

    def parse_args(self, ctx, args):
        if not args or (args[0].startswith("-") and args[0] not in ctx.help_option_names):
            args = [self.default, *args]
        return super().parse_args(ctx, args)


@click.group(cls=BenchGroup)
def bench():
    """Measure moco-ref against PyTorch: speed (figures only, medians after warm-up, PyTorch in the
    same run where installed), and whether it learns what PyTorch learns (learn).

    \b
    moco-ref bench SUITE [--backend numpy|cupy] [--quick] [--out FILE]   (a speed suite; step by default)
    moco-ref bench gpu [--parts] [--out FILE]
    moco-ref bench learn [--seeds N] [--epochs E] [--data DIR] [flags of train]

    `moco-ref bench SUITE --help` gives a suite's flags.
    """


def _speed_suite(suite: str, summary: str) -> click.Command:
    """The command of one speed suite of moco_ref/bench/suites.py."""

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
        suites.run(suite, backend=backend, quick=quick, out=out, echo=click.echo, command=shlex.join(words))

    return command


for _suite, _summary in suites.SUITES.items():
    bench.add_command(_speed_suite(_suite, _summary))


@bench.command(name="gpu", short_help="the CIFAR demo config on CuPy against PyTorch (cuDNN), float32 and TF32")
@click.option(
    "--parts",
    is_flag=True,
    help="Instead, where our step's time goes on the GPU (the parts suite at this config, CuPy only).",
)
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the figures as JSON here.")
@force_option
def bench_gpu(parts, out, force):
    """Measure the CIFAR demo config on CuPy against PyTorch (cuDNN), float32 and TF32, each in its own
    process; exits with 1 unless both ran."""
    if out:
        check_output_file(out, "--out", force)
    figures = gpu_compare.parts(echo=click.echo) if parts else gpu_compare.run(echo=click.echo)
    if out:
        with refused(out, "--out"):
            Path(out).write_text(json.dumps(figures, indent=2, default=suites.json_value) + "\n")
    sys.exit(0 if parts or len(figures) == 2 else 1)


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
