"""Encoding a whole dataset with a frozen encoder: the one loop the kNN monitor and the linear probe share."""

from __future__ import annotations

import numpy as np

from backends import get_backend


def encode_dataset(encoder, images, pipeline, backend, *, head: bool, rng=None, batch_size: int = 256):
    """Features of every image, in eval mode (BatchNorm on its running statistics), not normalised.

    Args:
        encoder: a ResNetEncoder; never modified.
        images: (N, S, S, 3) uint8 host array.
        pipeline: the transform each batch goes through (``make_pipeline("test", ...)`` or an augmentation).
        backend: "numpy", "cupy" or a Backend (the encoder's).
        head: the fc output, (N, dim) (the kNN monitor's features), or the pooled features before fc,
            (N, 8w) (the linear probe's).
        rng: the host generator the pipeline draws from (None: a fixed one; the test transform draws nothing).
    Returns:
        (N, dim) or (N, 8w) array on the backend.
    """
    backend = get_backend(backend)
    rng = np.random.default_rng(0) if rng is None else rng
    chunks = []
    for start in range(0, len(images), batch_size):
        x = pipeline(images[start:start + batch_size], rng, backend)
        chunks.append(encoder.forward(x, training=False).out if head else encoder.features(x))
    return backend.xp.concatenate(chunks, axis=0)
