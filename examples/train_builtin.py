"""Train MoCo on the built-in shapes with the Python API, then compare the kNN accuracy with the untrained encoder's.

The same run as ``moco-ref train`` with its defaults, written out with the two classes behind it:

    config = TrainConfig(data="builtin", epochs=20, ...)   # every flag of `moco-ref train` is a field
    trainer = Trainer(config, run_dir)                     # loads the data, builds MoCo
    final = trainer.run()                                  # trains; returns the last metrics record

The built-in data are 2000 training and 1000 test images (32 × 32) of ten shape classes, generated
from the seed, so nothing is downloaded.  The kNN monitor (the MoCo CIFAR-10 demo's: cosine
similarity to the features of every training image, 200 neighbours, votes weighted by exp(sim/0.1))
measures the encoder before any training and after the last epoch; chance is 10 %.  With the
defaults (resnet10 of width 8, 20 epochs) this is `moco-ref train`'s default run: its time and figures
(kNN top-1 from 20.8 % to 48.2 % on the project's machine) are in docs/results.md.

    python examples/train_builtin.py                       # the defaults of `moco-ref train`
    python examples/train_builtin.py --epochs 2 --width 8  # quicker
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from moco_ref.run.config import TrainConfig
from moco_ref.run.trainer import Trainer

DEFAULTS = TrainConfig()


def main(
    epochs: int = DEFAULTS.epochs,
    width: int = DEFAULTS.width,
    batch_size: int = DEFAULTS.batch_size,
    image_size: int = DEFAULTS.image_size,
    K: int = DEFAULTS.K,
    dim: int = DEFAULTS.dim,
    bn_splits: int = DEFAULTS.bn_splits,
    max_steps: int = 0,
    backend: str = "numpy",
    seed: int = 0,
    out=None,
    quiet: bool = False,
) -> dict:
    """Trains on the built-in data into ``out`` (default runs/example-builtin-<time>); returns the final record.

    The record holds "knn_top1" (after training) and "knn_top1_untrained" (before), in %.
    """
    config = TrainConfig(
        data="builtin",
        epochs=epochs,
        width=width,
        batch_size=batch_size,
        image_size=image_size,
        K=K,
        dim=dim,
        bn_splits=bn_splits,
        max_steps=max_steps,
        backend=backend,
        seed=seed,
        knn_every=epochs,
    )  # the monitor before training and at the end only
    run_dir = Path(out) if out else Path("runs") / datetime.now().strftime("example-builtin-%Y%m%d-%H%M%S")
    trainer = Trainer(config, run_dir, log=(lambda message: None) if quiet else None)
    print(
        f"MoCo on {len(trainer.train_set)} built-in images ({len(trainer.monitor.test_set)} held out): "
        f"{config.arch} width {width}, batch {batch_size}, K {K}, m {config.m}, T {config.T}, "
        f"{epochs} epoch(s) of {trainer.steps_per_epoch} steps, backend {backend}"
    )

    final = trainer.run()

    chance = 100.0 / len(trainer.train_set.classes)
    trained, untrained = final["knn_top1"], final["knn_top1_untrained"]
    print(f"trained {final['epoch']} epoch(s), {final['global_step']} steps; final InfoNCE loss {final['loss']:.3f}")
    print(
        f"kNN top-1 on the held-out images: {trained:.2f}% after training, "
        f"{untrained:.2f}% with the untrained encoder ({trained - untrained:+.2f} points; chance {chance:.0f}%)"
    )
    print(f"run directory: {run_dir} (config.json, metrics.jsonl, checkpoint_last.npz)")
    return final


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=DEFAULTS.epochs)
    parser.add_argument("--width", type=int, default=DEFAULTS.width, help="base width of the ResNet")
    parser.add_argument("-b", "--batch-size", type=int, default=DEFAULTS.batch_size)
    parser.add_argument("--image-size", type=int, default=DEFAULTS.image_size)
    parser.add_argument("--moco-k", dest="K", type=int, default=DEFAULTS.K, help="queue size K")
    parser.add_argument("--bn-splits", type=int, default=DEFAULTS.bn_splits)
    parser.add_argument("--max-steps", type=int, default=0, help="stop after N steps (0 = no limit)")
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="run directory")
    args = parser.parse_args()
    main(
        args.epochs,
        args.width,
        args.batch_size,
        args.image_size,
        args.K,
        DEFAULTS.dim,
        args.bn_splits,
        args.max_steps,
        args.backend,
        args.seed,
        args.out,
    )
