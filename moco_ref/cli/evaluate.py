"""``moco-ref eval``: a trained encoder measured by the kNN monitor (``eval knn``) and the linear probe
(``eval linear``; the work: moco_ref/evaluation/)."""

from __future__ import annotations

import json

import click

from backends import BACKEND_NAMES
from moco_ref.augment import make_pipeline
from moco_ref.cli.options import FiniteFloatRange, parse_schedule
from moco_ref.data import load_dataset
from moco_ref.errors import UserError
from moco_ref.evaluation.knn import knn_accuracy
from moco_ref.evaluation.linear import linear_probe
from moco_ref.progress import Progress
from moco_ref.run.directory import checkpoint_of
from moco_ref.tools.runs import load_run


@click.group(name="eval")
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
