"""``moco-ref show``: pictures of what MoCo sees and learns (views, neighbours, embedding).

The drawing is in moco_ref/tools/show.py.
"""

from __future__ import annotations

import click

from backends import BACKEND_NAMES
from moco_ref.cli.options import force_option
from moco_ref.run.config import AUGMENTATIONS
from moco_ref.tools.show import show_embedding, show_neighbours, show_views


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
