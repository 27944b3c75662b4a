"""The linear probe of MoCo (the official main_lincls.py protocol), forward and backward by hand.

The encoder is frozen: a new linear classifier is trained on the pooled features of encoder_q
without its fc (the 8w-dimensional output of global average pooling), with the encoder in eval
mode, so its BatchNorm layers use their running statistics and nothing in the encoder changes.

Notation: N images in a batch, D = 8w feature dimension, C classes.

    logits = f·Wᵀ + b                                     # (N, C), W (C, D) ~ N(0, 0.01²), b = 0
    L = mean_n ( logsumexp(logits_n) − logits_n,y_n )     # softmax cross-entropy, y_n the label
    ∂L/∂logits = (softmax(logits) − onehot(y)) / N        # each row sums to zero

The protocol, as main_lincls.py: SGD with lr 30, momentum 0.9, weight decay 0, 100 epochs, lr ×0.1
at epochs 60 and 80 (here, for another number of epochs, at 60 % and 80 % of them unless a schedule
is given), batches of 256 in a fresh random order each epoch, the last partial batch kept. Before
and after training the encoder's parameters and buffers are fingerprinted; if they differ a
RuntimeError is raised (main_lincls's ``sanity_check``).

Transforms:
- validation: the "test" pipeline (resize when the size differs, normalise) — main_lincls uses
  Resize(256) → CenterCrop(224), the same thing up to where the sampling points fall;
- training with ``augment=True``: RandomResizedCrop(S, scale 0.08–1) → RandomHorizontalFlip →
  normalise, main_lincls's train transform, built from the augment package's transforms
  (:func:`lincls_train_pipeline`). Then the features of every batch are recomputed by the encoder
  each epoch: the slow part on a CPU.
- training with ``augment=False``: the train images go through the "test" pipeline once and their
  features are kept, so each epoch is a few matrix products. This departs from the protocol (no
  crops, no flips) and is the fast CPU path; ``moco-ref eval linear`` uses it by default on NumPy.
The validation features never change (frozen encoder, deterministic transform), so they are
computed once and the probe is evaluated after every epoch at little cost.

Accuracies are in %. Top-k counts a sample as correct when fewer than k classes have a logit
strictly larger than the true class's (ties resolved in the sample's favour). main_lincls reports
the best validation top-1 over the epochs; here ``top1``/``top5`` are those of the final classifier
and ``best_top1``/``best_epoch`` the official figure.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np

from backends import get_array_module, get_backend, to_numpy
from moco_ref.augment import make_pipeline
from moco_ref.augment.pipeline import Pipeline
from moco_ref.augment.transforms import RandomHorizontalFlip, RandomResizedCrop
from moco_ref.errors import UserError
from moco_ref.evaluation.features import encode_dataset
from moco_ref.layers.basic import linear_backward, linear_forward
from moco_ref.loss import cross_entropy_backward, cross_entropy_forward
from moco_ref.optim import SGD, learning_rate
from moco_ref.progress import NoProgress


def topk_correct(logits, labels, k: int):
    """Number of rows whose true class is among the k largest logits (0-d int array on the backend)."""
    xp = get_array_module(logits)
    true_logit = xp.take_along_axis(logits, labels[:, None], axis=1)  # (N, 1)
    rank = (logits > true_logit).sum(axis=1)  # (N,) classes above the truth
    return (rank < k).sum()


# ------------------------------------------------------------------ frozen encoder


def encoder_fingerprint(encoder) -> dict:
    """{name: sha256 of the bytes} of every parameter and buffer of the encoder."""
    return {
        name: hashlib.sha256(np.asarray(to_numpy(a), order="C").tobytes()).hexdigest()
        for name, a in encoder.state_dict().items()
    }


def check_unchanged(before: dict, after: dict) -> None:
    """RuntimeError naming the arrays that changed (main_lincls's sanity check)."""
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    if changed:
        raise RuntimeError(
            f"the frozen encoder changed during the linear probe: {', '.join(changed[:5])}"
            + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        )


def lincls_train_pipeline(image_size: int) -> Pipeline:
    """main_lincls's train transform: RandomResizedCrop(S, scale 0.08–1) → flip → normalise."""
    return Pipeline(
        name="lincls", image_size=image_size, transforms=(RandomResizedCrop(image_size), RandomHorizontalFlip())
    )


def default_schedule(epochs: int) -> tuple:
    """The milestones (60, 80) of 100 epochs, scaled to ``epochs``: 60 % and 80 % of them."""
    return (int(round(0.6 * epochs)), int(round(0.8 * epochs)))


# ------------------------------------------------------------------ the probe


def _check_datasets(train, val) -> int:
    for name, dataset in (("training", train), ("validation", val)):
        if dataset.labels is None:
            raise UserError(f"the {name} data {dataset.name} has no labels (put images in class sub-folders)")
        if len(dataset) == 0:
            raise UserError(f"the {name} data {dataset.name} has no images")
    if train.classes and val.classes and list(train.classes) != list(val.classes):
        raise UserError(
            f"the training data ({len(train.classes)} classes) and the validation data "
            f"({len(val.classes)} classes) name different classes; labels would not match"
        )
    num_classes = max(len(train.classes), int(train.labels.max()) + 1)
    if int(val.labels.max()) >= num_classes:
        raise UserError(
            f"the validation data has label {int(val.labels.max())}, but the training data "
            f"has only {num_classes} classes"
        )
    return num_classes


def evaluate_classifier(features, labels, weight, bias, num_classes: int, batch_size: int = 1024) -> dict:
    """Top-1 and top-5 (in %) of the classifier on precomputed features (N, D) and labels (N,)."""
    correct1 = correct5 = 0
    for start in range(0, features.shape[0], batch_size):
        logits, _ = linear_forward(features[start : start + batch_size], weight, bias)  # (B, C)
        target = labels[start : start + batch_size]
        correct1 = correct1 + topk_correct(logits, target, 1)
        correct5 = correct5 + topk_correct(logits, target, min(5, num_classes))
    n = features.shape[0]
    return {"top1": 100.0 * int(to_numpy(correct1)) / n, "top5": 100.0 * int(to_numpy(correct5)) / n}


def linear_probe(
    encoder,
    train,
    val,
    backend,
    epochs: int = 100,
    lr: float = 30.0,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    schedule=None,
    batch_size: int = 256,
    seed: int = 0,
    augment: bool = True,
    progress=NoProgress,
) -> dict:
    """Trains a linear classifier on the frozen encoder and measures it on ``val``.

    Args:
        encoder: a ResNetEncoder (its ``features`` are used, the fc is ignored); never modified.
        train, val: labelled :class:`moco_ref.data.Dataset` objects with the same classes.
        backend: "numpy", "cupy" or a Backend (the encoder's).
        epochs, lr, momentum, weight_decay, batch_size: main_lincls's settings.
        schedule: epochs (counted from 0) where the lr is multiplied by 0.1; None = 60 % and 80 %
            of ``epochs``, i.e. (60, 80) for 100 epochs.
        seed: seeds the classifier's initial weights, the batch order and the augmentation.
        augment: recompute augmented train features each epoch (the protocol), or encode the train
            images once with the test transform (fast; see the module docstring).
        progress: the class that shows the epochs' progress (moco_ref.progress; NoProgress: none): a plain
            line every tenth of the epochs, and the feature passes that take more than a few seconds.

    Returns:
        {"top1", "top5"} of the final classifier on ``val`` (in %), "best_top1", "best_epoch", the
        last epoch's "train_loss" and "train_top1", the counts and the settings.

    Raises:
        ValueError: epochs or batch_size below 1.
        UserError: unlabelled data, classes that do not match, or a loss that became NaN or infinite.
        RuntimeError: the encoder's weights changed (they must not).
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be at least 1, got {epochs} and {batch_size}")
    backend = get_backend(backend)
    xp = backend.xp
    started = time.perf_counter()
    num_classes = _check_datasets(train, val)
    schedule = tuple(int(m) for m in (default_schedule(epochs) if schedule is None else schedule))
    image_size = train.image_size
    test_pipeline = make_pipeline("test", image_size)
    train_pipeline = lincls_train_pipeline(image_size)

    rng = np.random.default_rng(seed)
    before = encoder_fingerprint(encoder)

    val_features = encode_dataset(
        encoder,
        val.images,
        test_pipeline,
        backend,
        head=False,
        rng=rng,
        progress=progress,
        label="linear probe: validation features",
    )  # (N_val, D)
    feature_dim = int(val_features.shape[1])
    dtype = val_features.dtype
    val_labels = backend.to_device(val.labels)
    train_labels = backend.to_device(train.labels)
    train_features = (
        None
        if augment
        else encode_dataset(
            encoder,
            train.images,
            test_pipeline,
            backend,
            head=False,
            rng=rng,
            progress=progress,
            label="linear probe: training features",
        )
    )

    # main_lincls: fc.weight ~ N(0, 0.01), fc.bias = 0; drawn on the host
    params = {
        "weight": backend.to_device(rng.normal(0.0, 0.01, (num_classes, feature_dim)).astype(dtype)),
        "bias": xp.zeros(num_classes, dtype=dtype),
    }
    optimizer = SGD(params, lr, momentum=momentum, weight_decay=weight_decay)

    N = len(train)
    best_top1, best_epoch = -1.0, 0
    bar = progress(epochs, "linear probe epoch", every=max(1, epochs // 10))
    for epoch in range(epochs):
        epoch_lr = learning_rate(lr, epoch, epochs, cos=False, schedule=schedule)
        order = rng.permutation(N)
        loss_sum, correct = 0.0, 0
        for start in range(0, N, batch_size):
            index = order[start : start + batch_size]
            if train_features is None:  # augment
                features = encoder.features(train_pipeline(train.images[index], rng, backend))  # (B, D)
            else:
                features = train_features[backend.to_device(index)]  # (B, D)
            labels = train_labels[backend.to_device(index)]  # (B,)
            logits, linear_cache = linear_forward(features, params["weight"], params["bias"])  # (B, C)
            loss, loss_cache = cross_entropy_forward(logits, labels)
            _, d_weight, d_bias = linear_backward(cross_entropy_backward(loss_cache), linear_cache)
            optimizer.step_({"weight": d_weight, "bias": d_bias}, lr=epoch_lr)
            loss_sum = loss_sum + loss * float(len(index))
            correct = correct + topk_correct(logits, labels, 1)
        train_loss = float(to_numpy(loss_sum)) / N
        train_top1 = 100.0 * int(to_numpy(correct)) / N
        if not np.isfinite(train_loss):
            raise UserError(f"the linear probe's loss became {train_loss} in epoch {epoch + 1}; try a lower --lr")
        val_result = evaluate_classifier(val_features, val_labels, params["weight"], params["bias"], num_classes)
        if val_result["top1"] > best_top1:
            best_top1, best_epoch = val_result["top1"], epoch + 1
        bar.show(
            epoch + 1,
            [
                f"lr {epoch_lr:.4g}",
                f"loss {train_loss:.4f}",
                f"train top-1 {train_top1:.2f}%",
                f"val top-1 {val_result['top1']:.2f}%",
                f"top-5 {val_result['top5']:.2f}%",
            ],
        )
    bar.close()

    check_unchanged(before, encoder_fingerprint(encoder))
    return {
        "top1": val_result["top1"],
        "top5": val_result["top5"],
        "best_top1": best_top1,
        "best_epoch": best_epoch,
        "train_loss": train_loss,
        "train_top1": train_top1,
        "epochs": epochs,
        "lr": lr,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "schedule": list(schedule),
        "batch_size": batch_size,
        "augment": augment,
        "seed": seed,
        "train_images": N,
        "val_images": len(val),
        "num_classes": num_classes,
        "feature_dim": feature_dim,
        "seconds": time.perf_counter() - started,
    }
