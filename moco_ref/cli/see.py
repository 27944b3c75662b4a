"""The commands that let you see MoCo work: ``moco-ref ablate`` and ``moco-ref show``.

``ablate`` takes every option of ``moco-ref train`` (moco_ref/cli/options.py), its help showing the
ablation's own defaults.  The work is in moco_ref/tools/ablate.py and moco_ref/tools/show.py.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from backends import BACKEND_NAMES, get_backend
from moco_ref.cli.options import config_options, force_option
from moco_ref.run.config import AUGMENTATIONS, PRESETS
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
from moco_ref.tools.show import show_embedding, show_neighbours, show_views

PLOT_NOTE = "pip install 'moco-ref[plot]'"


def _have_matplotlib() -> bool:
    try:
        from matplotlib.figure import Figure  # noqa: F401 (imported only to see whether matplotlib is there)
    except ImportError:
        return False
    return True


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s" if seconds >= 60 else f"{seconds:.0f} s"


# ------------------------------------------------------------------ ablate
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


# ------------------------------------------------------------------ show
@click.group()
def show():
    """Pictures (PNG) of what MoCo sees and learns; needs matplotlib (pip install 'moco-ref[plot]').

    \b
    moco-ref show views                 two augmentations of the same images: the positive pairs
    moco-ref show neighbours RUN        nearest training images of test images, before and after training
    moco-ref show embedding RUN         the test features on two principal components, by class
    """


@show.command(name="views", short_help="Pairs of augmented views of the same images (the positive pairs).")
@click.option(
    "--aug",
    type=click.Choice(AUGMENTATIONS),
    default="cifar",
    show_default=True,
    help="The recipe: v1, v2 (MoCo v2, --aug-plus) or cifar (the CIFAR demo's).",
)
@click.option(
    "--data",
    default="builtin",
    show_default=True,
    help="'builtin', 'digits' (./digits is a folder), a folder of images or a CIFAR folder.",
)
@click.option("--image-size", default=32, show_default=True, type=click.IntRange(8), help="Side of the views.")
@click.option(
    "--images",
    "count",
    default=8,
    show_default=True,
    type=click.IntRange(1, 32),
    help="How many images (one of each class in turn).",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the data and the augmentation.")
@click.option("--out", type=click.Path(dir_okay=False), help="The PNG to write. [default: views-AUG.png]")
@force_option
def views_command(aug, data, image_size, count, seed, out, force):
    """Draw pairs of augmented views of the same images: the positive pairs MoCo learns to match.

    A row of images, then the view each gets as a query (x_q) and as a key (x_k), drawn from
    one generator seeded with --seed in the trainer's order.
    """
    path, drawn = show_views(data, aug, count, image_size, seed, out, force)
    click.echo(f"wrote {path}: {len(drawn['index'])} images of {data}, two views each with aug {aug}")


@show.command(name="neighbours", short_help="Nearest training images of test images, before and after training.")
@click.argument("run", type=click.Path())
@click.option(
    "--queries",
    default=6,
    show_default=True,
    type=click.IntRange(1, 30),
    help="Test images to query (one of each class in turn).",
)
@click.option("-k", "k", default=5, show_default=True, type=click.IntRange(1, 20), help="Neighbours shown.")
@click.option("--backend", type=click.Choice(BACKEND_NAMES), help="[default: the run's]")
@click.option("--out", type=click.Path(dir_okay=False), help="The PNG to write. [default: RUN/neighbours.png]")
@force_option
def neighbours_command(run, queries, k, backend, out, force):
    """Draw test images with their k nearest training images by cosine similarity, in the space of
    the kNN monitor (normalised encoder output), for the untrained encoder RUN started from (its
    seed's weights) and for RUN's learned encoder_q. RUN: a run directory or a checkpoint file.
    """
    path, drawn = show_neighbours(run, queries, k, backend, out, force)
    counts = [
        f"{name} {int(drawn[name]['same_class'].sum())}/{drawn[name]['same_class'].size}"
        for name in ("untrained", "trained")
        if drawn[name]["same_class"] is not None
    ]
    click.echo(f"wrote {path}" + (f"; neighbours of the query's class: {', '.join(counts)}" if counts else ""))


@show.command(name="embedding", short_help="The test features on two principal components, coloured by class.")
@click.argument("run", type=click.Path())
@click.option("--backend", type=click.Choice(BACKEND_NAMES), help="[default: the run's]")
@click.option("--out", type=click.Path(dir_okay=False), help="The PNG to write. [default: RUN/embedding.png]")
@force_option
def embedding_command(run, backend, out, force):
    """Draw the held-out features (normalised encoder output) of the untrained encoder and of RUN's
    encoder_q, each projected on its first two principal components (PCA by hand: centre, then the
    eigenvectors of the covariance), coloured by class. RUN: a run directory or a checkpoint file.
    """
    path, drawn = show_embedding(run, backend, out, force)
    shares = ", ".join(f"{name} {100 * drawn[name]['explained'].sum():.0f} %" for name in ("untrained", "trained"))
    click.echo(f"wrote {path}; variance on the two components: {shares}")
