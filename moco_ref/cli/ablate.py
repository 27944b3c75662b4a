"""``moco-ref ablate``: one of the paper's ablations, short runs of one recipe that differ in one setting.

It takes every option of ``moco-ref train`` (moco_ref/cli/options.py), its help showing the ablation's own
defaults.  The work, and each study's values and checks, are in moco_ref/tools/ablate.py.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from backends import get_backend
from moco_ref.cli.options import PLOT_NOTE, config_options
from moco_ref.run.config import PRESETS
from moco_ref.run.stopping import StoppedBySignal, StopSignals
from moco_ref.tools.ablate import (
    ABLATION_DEFAULTS,
    PROBE_EPOCHS,
    STUDIES,
    base_config,
    markdown,
    picture_of,
    run_ablation,
    write_report,
)


def _have_matplotlib() -> bool:
    try:
        from matplotlib.figure import Figure  # noqa: F401 (imported only to see whether matplotlib is there)
    except ImportError:
        return False
    return True


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s" if seconds >= 60 else f"{seconds:.0f} s"


@click.command(short_help="Short runs that differ in one setting (m, K, BN groups): a table and kNN curves.")
@click.argument("study", type=click.Choice(list(STUDIES)))
@click.option("--preset", type=click.Choice(sorted(PRESETS)), help="Start from a documented recipe; flags override it.")
@config_options(ABLATION_DEFAULTS)
@click.option(
    "--values",
    help="The settings to run, comma-separated, e.g. 0,0.9,0.99 (momentum), 64,256 "
    "(queue), 8,1 (shuffle-bn: BatchNorm groups). [default: see above]",
)
@click.option(
    "--probe-epochs",
    default=PROBE_EPOCHS,
    show_default=True,
    type=click.IntRange(0),
    help="Epochs of the linear probe of each run (0 = no probe).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Folder of the runs, the table and the picture. [default: runs/ablate-STUDY]",
)
def ablate(study, preset, values, probe_epochs, out, **flags):
    """Reproduce one of the paper's ablations: short runs of one recipe that differ in one setting.

    \b
    STUDY: momentum    m in 0, 0.9, 0.99, 0.999 (the key encoder's momentum: consistent keys)
           queue       K in the four largest of 16, 64, 256, 1024, ... up to the training
                       set (16, 64, 256, 1024 on the 2000 built-in images: many negatives),
                       with the share of the queue's keys of the query's class
           shuffle-bn  S = 8 BatchNorm groups (the paper's 8 GPUs; --bn-splits S for another)
                       with the keys shuffled across them, the same groups with every key in
                       its query's group (the paper's control, --no-shuffle-bn), and 1 group

    Each run is a normal run directory DIR/<setting>, trained with `moco-ref train`'s recipe
    and the flags given (only --knn-every defaults differently, to 2, for the curves), then
    measured by the linear probe of `moco-ref eval linear` (features encoded once). Prints a
    table (kNN top-1, linear top-1, loss, instance accuracy, time; the paper's ImageNet numbers
    in their own column where it gives them, and one line computed from the numbers on whether
    the shape agrees), and writes
    DIR/ablation.md, DIR/ablation.json and DIR/ablation.png (the kNN curves; needs matplotlib).

    Interrupted? Run the same command again: finished runs are read back, an unfinished one
    resumes from its checkpoint. `--backend cupy` runs it on a GPU. Progress goes to stderr,
    the table to stdout.
    """
    chosen = STUDIES[study]
    given = {k: v for k, v in flags.items() if v is not None}
    chosen.check_flags(given)
    base = base_config(given, PRESETS.get(preset, {}))
    get_backend(base.backend)  # no GPU: one line now, not after the first run
    if values is None:
        values = chosen.values_from_flags(given)
    parsed = chosen.parse(values) if values else None
    out_dir = Path(out) if out else Path("runs") / f"ablate-{study}"
    plotting = _have_matplotlib()
    if not plotting:
        click.echo(
            f"note: matplotlib is not installed: the table will be written, the picture needs {PLOT_NOTE}", err=True
        )
    started = time.perf_counter()
    with StopSignals() as signals:  # Ctrl-C: the run in progress stops after a step, saved
        try:
            report = run_ablation(study, base, out_dir, parsed, probe_epochs, stop=signals)
        except StoppedBySignal as stopped:
            click.echo(
                f"ablate {study}: stopped by {stopped.name}; the runs so far are kept in {out_dir}: "
                f"run the same command again to continue",
                err=True,
            )
            sys.exit(stopped.exit_code)
    written = write_report(report, out_dir, picture=plotting)
    click.echo(markdown(report), nl=False)
    click.echo("")
    if plotting:
        click.echo(f"wrote {', '.join(map(str, written))}")
    else:
        click.echo(
            f"wrote {written[0]} and {written[1]}; the picture {picture_of(out_dir)} needs matplotlib: {PLOT_NOTE}"
        )
    click.echo(
        f"ablate {study}: {len(report['rows'])} runs, {_minutes(time.perf_counter() - started)} in this command",
        err=True,
    )
