"""The kNN monitor of the MoCo CIFAR-10 demo.

Every training image is encoded by encoder_q in eval mode (test transform),
L2-normalised and kept as a memory bank (Nb, D).  A test image with unit
feature f is classified by its k most similar bank entries, each voting for
its label with weight exp(cos(f, b)/t):

    score_c = Σ_{j ∈ top-k} exp(sim_j / t) · 1[label_j = c]        prediction = argmax_c score_c

Defaults as the demo: k = 200, t = 0.1.  The vote uses a one-hot product, not
a scatter, so it runs unchanged on NumPy and CuPy.
"""

from __future__ import annotations

from backends import get_array_module, get_backend, to_numpy
from moco_ref.evaluation.features import encode_dataset
from moco_ref.loss import normalize_forward
from moco_ref.progress import NoProgress


def knn_predict(features, bank, bank_labels, num_classes: int, k: int = 200, t: float = 0.1, chunk: int = 512):
    """Weighted kNN votes; returns predicted labels (Nq,) on the backend.

    Args:
        features: (Nq, D) unit-norm queries.  bank: (Nb, D) unit-norm.  bank_labels: (Nb,) int on the backend.
    """
    xp = get_array_module(features)
    k = min(k, bank.shape[0])
    one_hot = xp.eye(num_classes, dtype=features.dtype)[bank_labels]  # (Nb, C)
    predictions = []
    for start in range(0, features.shape[0], chunk):
        sim = features[start : start + chunk] @ bank.T  # (B, Nb)
        top = xp.argpartition(-sim, k - 1, axis=1)[:, :k]  # (B, k) indices, unordered
        top_sim = xp.take_along_axis(sim, top, axis=1)  # (B, k)
        weights = xp.exp(top_sim * (1.0 / t))  # (B, k)
        scores = (weights[:, :, None] * one_hot[top]).sum(axis=1)  # (B, C)
        predictions.append(scores.argmax(axis=1))
    return xp.concatenate(predictions)


def knn_accuracy(
    encoder, train, test, pipeline, backend, k: int = 200, t: float = 0.1, batch_size: int = 256, progress=NoProgress
) -> dict:
    """kNN top-1 accuracy (in %) of ``encoder`` with ``train`` as the bank, measured on ``test``.

    ``train`` and ``test`` are :class:`moco_ref.data.Dataset` objects with labels; ``progress`` shows the
    feature passes that take more than a few seconds (encode_dataset's).
    """
    backend = get_backend(backend)
    passes = dict(head=True, batch_size=batch_size, progress=progress)
    bank = normalize_forward(encode_dataset(encoder, train.images, pipeline, backend, label="kNN bank", **passes))[
        0
    ]  # (Nb, D), unit rows
    queries = normalize_forward(encode_dataset(encoder, test.images, pipeline, backend, label="kNN queries", **passes))[
        0
    ]  # (Nq, D)
    num_classes = max(len(train.classes), int(train.labels.max()) + 1)
    predicted = knn_predict(queries, bank, backend.to_device(train.labels), num_classes, k, t)
    correct = int((to_numpy(predicted) == test.labels).sum())
    return {
        "top1": 100.0 * correct / len(test.labels),
        "k": k,
        "t": t,
        "correct": correct,
        "test_images": len(test.labels),
        "bank_images": len(train.labels),
    }
