"""Can augmentation keep up with training?  Images/s of the augmentation pipelines against the step.

A source image costs two views (query and key), so the augmentation rate is given in
source images per second — batches of N uint8 images in, two (N, 3, S, S) float32
views out — and compared with the training step's images/s (each image of a step is
likewise two views).  A ratio above 1 means augmentation alone would not hold the
step back; on a CPU both compete for the same cores in a real training loop.
"""

from __future__ import annotations

import numpy as np

from backends import get_backend
from moco_ref.augment import make_pipeline
from moco_ref.bench.clock import interleaved, median
from moco_ref.bench.tables import banner, table
from moco_ref.bench.workload import REFERENCE, TINY, make_ours


def plan(quick: bool, tiny: bool = False) -> dict:
    if tiny:
        return dict(pipelines=("cifar", "v2"), batch=8, size=8, reps=1, warmup=0, step_config=TINY)
    return dict(pipelines=("cifar", "v2"), batch=256, size=32, reps=3 if quick else 5, warmup=1, step_config=REFERENCE)


def run_augment(
    backend_name: str,
    echo,
    pipelines,
    batch: int,
    size: int,
    reps: int,
    warmup: int,
    step_config,
    training_images_per_s: float | None = None,
) -> dict:
    """Two views of a batch per repetition, for each pipeline; the step's rate measured unless given."""
    banner(f"augment: two views of {batch} {size}×{size} images vs training throughput", echo)
    backend = get_backend(backend_name)
    images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    rng = np.random.default_rng(1)
    results = {}
    for name in pipelines:
        pipe = make_pipeline(name, size)
        seconds = median(
            interleaved(
                {name: (lambda: (pipe(images, rng, backend), pipe(images, rng, backend)), backend.synchronize)},
                reps,
                warmup,
            )[name]
        )
        results[name] = {"median_s_two_views": seconds, "images_per_s": batch / seconds}

    source = "step suite"
    if training_images_per_s is None:
        source = f"measured here ({step_config.label})"
        model, step, sync = make_ours(step_config, backend_name)
        training_images_per_s = step_config.batch / median(interleaved({"step": (step, sync)}, reps, warmup)["step"])
        del model
    for figures in results.values():
        figures["ratio_augment_over_training"] = figures["images_per_s"] / training_images_per_s
    table(
        ["pipeline", "s per 2 views", "images/s", "× training rate"],
        [
            [name, f["median_s_two_views"], f["images_per_s"], f["ratio_augment_over_training"]]
            for name, f in results.items()
        ],
        echo,
    )
    echo(f"training: {training_images_per_s:.1f} images/s ({source}); medians of {reps} after {warmup} warm-up.")
    return {
        "batch": batch,
        "size": size,
        "pipelines": results,
        "training_images_per_s": training_images_per_s,
        "training_source": source,
    }
