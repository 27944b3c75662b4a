"""Train MoCo on CIFAR-10 with the recipe of the official CIFAR-10 demo, when you have the data.

The recipe (``--preset cifar-demo``, moco_ref/run/config.py; docs/official-moco.md): ResNet-18 with a 3×3 stem and no
max-pool, width 64, fc 512 → 128; SplitBatchNorm with 8 splits (shuffle BN on one device); batch
512, SGD lr 0.06 cosine over 200 epochs, momentum 0.9, weight decay 5e-4; K 4096, m 0.99, T 0.1;
the demo's augmentation; kNN monitor every epoch.  The demo reports kNN top-1 82.6 % after 200
epochs (asymmetric loss; 85.3 % with --symmetric).

The full recipe is a GPU's work: use ``--backend cupy`` there, or shrink the run (``--width 16 --epochs 5``)
to watch it learn on a CPU (docs/speed.md has the step times of this network on both).

Get the data (the "python version", 163 MB) from the CIFAR page of the University of Toronto
(cifar-10-python.tar.gz), extract it, and give the folder that holds cifar-10-batches-py (or that
folder itself):

    python examples/train_cifar10.py ~/data                     # the full recipe (the default folder: ./data)
    python examples/train_cifar10.py ~/data --backend cupy --symmetric
    python examples/train_cifar10.py ~/data --width 16 --epochs 5 -b 256
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from moco_ref.data.cifar import CIFAR10, find_cifar
from moco_ref.errors import UserError
from moco_ref.run.config import PRESETS, TrainConfig
from moco_ref.run.trainer import Trainer

RECIPE = PRESETS["cifar-demo"]
HOW_TO_GET_IT = (
    "download cifar-10-python.tar.gz (the CIFAR-10 python version) from the CIFAR page of the "
    "University of Toronto, extract it, and give the folder that holds cifar-10-batches-py"
)


def find_cifar10(path) -> Path | None:
    """The cifar-10-batches-py folder at or directly under path, or None (after saying why)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        print(
            f"no CIFAR-10 at {root}: {'no such folder' if not root.exists() else 'not a folder'}; {HOW_TO_GET_IT}",
            file=sys.stderr,
        )
        return None
    try:
        found = find_cifar(root)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return None
    if found is None or found[0] is not CIFAR10:
        what = "CIFAR-100, not CIFAR-10" if found else "no cifar-10-batches-py"
        print(f"no CIFAR-10 at {root} ({what}); {HOW_TO_GET_IT}", file=sys.stderr)
        return None
    return found[1]


def main(
    path,
    epochs: int = RECIPE["epochs"],
    width: int = RECIPE["width"],
    batch_size: int = RECIPE["batch_size"],
    K: int = RECIPE["K"],
    bn_splits: int = RECIPE["bn_splits"],
    symmetric: bool = False,
    max_steps: int = 0,
    knn_every: int = RECIPE["knn_every"],
    backend: str = "numpy",
    seed: int = 0,
    out=None,
) -> int:
    """Trains with the cifar-demo recipe (any argument overrides it); returns an exit code.

    0 when the run finished; 2, after one line on stderr, when there is no CIFAR-10 at ``path`` or
    the data or settings cannot be used.
    """
    folder = find_cifar10(path)
    if folder is None:
        return 2
    values = {
        **TrainConfig().to_dict(),
        **RECIPE,
        "data": str(folder),
        "epochs": epochs,
        "width": width,
        "batch_size": batch_size,
        "K": K,
        "bn_splits": bn_splits,
        "symmetric": symmetric,
        "max_steps": max_steps,
        "knn_every": knn_every,
        "backend": backend,
        "seed": seed,
    }
    config = TrainConfig.from_dict(values)
    run_dir = Path(out) if out else Path("runs") / datetime.now().strftime("example-cifar10-%Y%m%d-%H%M%S")
    try:
        trainer = Trainer(config, run_dir)
        print(
            f"MoCo, CIFAR-10 demo recipe: {len(trainer.train_set)} training images, {config.arch} width "
            f"{width}, batch {batch_size} in {bn_splits} BN splits, K {K}, m {config.m}, "
            f"T {config.T}, lr {config.lr} cosine, {epochs} epoch(s) of {trainer.steps_per_epoch} "
            f"steps, {'symmetric' if symmetric else 'asymmetric'} loss, backend {backend}"
        )
        final = trainer.run()
    except UserError as error:  # a bad batch, a missing GPU, a loss that became NaN, ...
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"trained {final['epoch']} epoch(s), {final['global_step']} steps; final InfoNCE loss {final['loss']:.3f}")
    if final.get("knn_top1") is not None:
        print(
            f"kNN top-1 on the {len(trainer.monitor.test_set)} test images: {final['knn_top1']:.2f}% "
            f"(untrained encoder: {final['knn_top1_untrained']:.2f}%; the demo: 82.6% after 200 epochs)"
        )
    print(f"run directory: {run_dir}; continue it with: moco-ref train --resume {run_dir}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "path",
        nargs="?",
        default="data",
        help="the folder that holds cifar-10-batches-py (or that folder) [default: ./data]",
    )
    parser.add_argument("--epochs", type=int, default=RECIPE["epochs"])
    parser.add_argument("--width", type=int, default=RECIPE["width"], help="base width of the ResNet-18")
    parser.add_argument("-b", "--batch-size", type=int, default=RECIPE["batch_size"])
    parser.add_argument("--moco-k", dest="K", type=int, default=RECIPE["K"], help="queue size K")
    parser.add_argument("--bn-splits", type=int, default=RECIPE["bn_splits"])
    parser.add_argument("--symmetric", action="store_true", help="the demo's symmetric loss")
    parser.add_argument("--max-steps", type=int, default=0, help="stop after N steps (0 = no limit)")
    parser.add_argument("--knn-every", type=int, default=RECIPE["knn_every"], help="kNN monitor every N epochs")
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="run directory")
    args = parser.parse_args()
    sys.exit(
        main(
            args.path,
            args.epochs,
            args.width,
            args.batch_size,
            args.K,
            args.bn_splits,
            args.symmetric,
            args.max_steps,
            args.knn_every,
            args.backend,
            args.seed,
            args.out,
        )
    )
