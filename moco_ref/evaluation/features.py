"""Encoding a whole dataset with a frozen encoder: the one loop the kNN monitor and the linear probe share."""

from __future__ import annotations

import numpy as np

from backends import get_backend
from moco_ref.progress import SLOW_S, NoProgress


def encode_dataset(
    encoder,
    images,
    pipeline,
    backend,
    *,
    head: bool,
    rng=None,
    batch_size: int = 256,
    progress=NoProgress,
    label: str = "features",
):
    """Features of every image, in eval mode (BatchNorm on its running statistics), not normalised.

    Args:
        encoder: a ResNetEncoder; never modified.
        images: (N, S, S, 3) uint8 host array.
        pipeline: the transform each batch goes through (``make_pipeline("test", ...)`` or an augmentation).
        backend: "numpy", "cupy" or a Backend (the encoder's).
        head: the fc output, (N, dim) (the kNN monitor's features), or the pooled features before fc,
            (N, 8w) (the linear probe's).
        rng: the host generator the pipeline draws from (None: a fixed one; the test transform draws nothing).
        progress: the class that shows the pass's progress (moco_ref.progress), named ``label``, once it has
            taken more than SLOW_S seconds (NoProgress: none).
    Returns:
        (N, dim) or (N, 8w) array on the backend.
    """
    backend = get_backend(backend)
    rng = np.random.default_rng(0) if rng is None else rng
    chunks = []
    bar = progress(len(images), label, every=max(1, len(images) // 4), delay=SLOW_S, leave=False)
    for start in range(0, len(images), batch_size):
        x = pipeline(images[start : start + batch_size], rng, backend)
        chunks.append(encoder.forward(x, training=False).out if head else encoder.features(x))
        bar.show(min(start + batch_size, len(images)))
    bar.close()
    return backend.xp.concatenate(chunks, axis=0)
