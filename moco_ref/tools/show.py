"""Pictures of what MoCo sees and learns, as PNG files (``moco-ref show views|neighbours|embedding``).

    views       pairs of augmented views of the same images: the positive pairs of instance
                discrimination ("same image, two augmentations"), drawn as the trainer draws x_q and x_k
    neighbours  test images with their nearest training images by cosine similarity in the space of
                the kNN monitor (encoder_q's normalised output), for the untrained encoder the run
                started from and for the run's learned one: "before and after training"
    embedding   the test features of both encoders projected on their first two principal components,
                coloured by class

Each picture has a function that computes what it shows (``views_data``, ``neighbours_data``,
``embedding_data``: plain NumPy arrays, the arrays drawn) and one that draws it; the ``show_*``
functions do both and return (path, data).  The principal components are computed by hand: the
features are centred and the covariance matrix's eigenvectors found with numpy.linalg.eigh.

Notation: N images, S pixels a side, D feature dimension, Q query images, k neighbours.
The figures are drawn with matplotlib's Agg canvas (no pyplot), at DPI dots per inch, with the sizes
below in inches, so a picture's pixel size is known in advance (the tests check it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from backends import get_backend, to_numpy
from moco_ref.augment import denormalize, make_pipeline
from moco_ref.data import load_dataset
from moco_ref.errors import UserError
from moco_ref.evaluation.features import encode_dataset
from moco_ref.loss import normalize_forward
from moco_ref.paths import check_input, check_output_file, refusal
from moco_ref.run.directory import checkpoint_of
from moco_ref.tools.plot import load_matplotlib
from moco_ref.tools.runs import load_run, untrained_encoder

DPI = 100
VIEW_CELL, VIEW_MARGIN, VIEW_HEIGHT = 1.0, 1.5, 3.75  # inches: a column per image, the labels, the height
NEIGHBOUR_CELL, NEIGHBOUR_MARGIN_W, NEIGHBOUR_MARGIN_H = 0.75, 0.5, 1.0
EMBEDDING_SIZE = (11.0, 5.0)

QUERY, SAME, OTHER = (0.25, 0.45, 0.95), (0.15, 0.65, 0.2), (0.85, 0.15, 0.15)  # border colours


def views_size(count: int) -> tuple[int, int]:
    """Pixel size (width, height) of the views picture of ``count`` images."""
    return round(DPI * (VIEW_CELL * count + VIEW_MARGIN)), round(DPI * VIEW_HEIGHT)


def neighbours_size(queries: int, k: int) -> tuple[int, int]:
    """Pixel size of the neighbours picture: two panels of (1 + k) columns, one row a query."""
    return (
        round(DPI * (2 * (1 + k) * NEIGHBOUR_CELL + NEIGHBOUR_MARGIN_W)),
        round(DPI * (queries * NEIGHBOUR_CELL + NEIGHBOUR_MARGIN_H)),
    )


def embedding_size() -> tuple[int, int]:
    return round(DPI * EMBEDDING_SIZE[0]), round(DPI * EMBEDDING_SIZE[1])


# ------------------------------------------------------------------ what is shown
def pick_per_class(labels, count: int, size: int) -> np.ndarray:
    """Indices of ``count`` of ``size`` images taking each class in turn (the first image of each class,
    then the second, ...); the first ``count`` images when there are no labels."""
    if labels is None:
        return np.arange(min(count, size))
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    picked = [members[i] for i in range(max(len(m) for m in by_class)) for members in by_class if i < len(members)]
    return np.array(picked[:count], dtype=np.int64)


def to_pixels(views) -> np.ndarray:
    """Normalised views (N, 3, S, S) on any backend -> (N, S, S, 3) float in [0, 1] on the host."""
    return np.clip(to_numpy(denormalize(views)).transpose(0, 2, 3, 1), 0.0, 1.0)


def views_data(dataset, aug: str, count: int = 8, seed: int = 0) -> dict:
    """Two augmented views of ``count`` images of ``dataset``, drawn from ``default_rng(seed)`` in the
    trainer's order (x_q of the batch, then x_k).

    Returns:
        {"index" (n,), "originals" (n, S, S, 3) uint8, "view_q", "view_k" (n, S, S, 3) float in [0, 1],
        "names" (n,) class names or "", "aug"}.
    """
    index = pick_per_class(dataset.labels, count, len(dataset))
    images = dataset.images[index]  # (n, S, S, 3) uint8
    pipeline = make_pipeline(aug, dataset.image_size)
    rng = np.random.default_rng(seed)
    view_q = pipeline(images, rng, "numpy")  # (n, 3, S, S) normalised
    view_k = pipeline(images, rng, "numpy")
    labelled = dataset.labels is not None and bool(dataset.classes)
    names = [dataset.classes[label] for label in dataset.labels[index]] if labelled else [""] * len(index)
    return {
        "index": index,
        "originals": images,
        "view_q": to_pixels(view_q),
        "view_k": to_pixels(view_k),
        "names": names,
        "aug": aug,
    }


def _unit_features(encoder, images, backend) -> np.ndarray:
    """The kNN monitor's features: encoder output (fc) in eval mode, L2-normalised, on the host, (N, D)."""
    pipeline = make_pipeline("test", images.shape[1])
    return to_numpy(normalize_forward(encode_dataset(encoder, images, pipeline, backend, head=True))[0])


def _run_and_splits(run, backend):
    loaded = load_run(run, backend)
    c = loaded.config
    train = load_dataset(c.data, "train", c.image_size, c.seed)
    try:
        test = load_dataset(c.data, "test", c.image_size, c.seed)
    except UserError as error:
        raise UserError(f"the run's data has no held-out split to show ({error})") from None
    untrained = untrained_encoder(c, backend or c.backend)
    return loaded, untrained, train, test


def neighbours_data(run, queries: int = 6, k: int = 5, backend=None) -> dict:
    """The k training images most similar (cosine of the kNN features) to each of ``queries`` test images,
    for the untrained encoder and for RUN's encoder_q.

    Returns:
        {"query_index" (Q,), "query_labels" (Q,) or None, "classes", "epoch", "global_step", "checkpoint",
        "untrained" and "trained": {"index" (Q, k) training-image indices, most similar first,
        "similarity" (Q, k), "same_class" (Q, k) bool or None}, "train_images", "test_images"}.
    """
    loaded, untrained, train, test = _run_and_splits(run, backend)
    b = get_backend(backend or loaded.config.backend)
    query_index = pick_per_class(test.labels, queries, len(test))
    result = {
        "query_index": query_index,
        "classes": list(train.classes),
        "checkpoint": str(loaded.checkpoint),
        "epoch": loaded.meta.get("epoch"),
        "global_step": loaded.meta.get("global_step"),
        "query_labels": None if test.labels is None else test.labels[query_index],
        "train_images": train.images,
        "test_images": test.images,
        "seed": loaded.config.seed,
    }
    k = min(k, len(train))
    for name, encoder in (("untrained", untrained), ("trained", loaded.encoder_q)):
        bank = _unit_features(encoder, train.images, b)  # (N, D) unit rows
        q = _unit_features(encoder, test.images[query_index], b)  # (Q, D)
        similarity = q @ bank.T  # (Q, N) cosines
        top = np.argsort(-similarity, axis=1, kind="stable")[:, :k]  # (Q, k)
        same = (
            None
            if train.labels is None or test.labels is None
            else train.labels[top] == test.labels[query_index][:, None]
        )
        result[name] = {"index": top, "similarity": np.take_along_axis(similarity, top, axis=1), "same_class": same}
    return result


def pca_2d(features) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Projection of ``features`` (N, D) on its first two principal components.

    X̄ = X − mean(X);  C = X̄ᵀX̄ / (N − 1) (D, D);  C = V Λ Vᵀ (eigh);  P = X̄ · V[:, top 2]   (N, 2).
    Each component's sign is fixed so that its largest-magnitude entry is positive.

    Returns:
        (projection (N, 2), components (2, D), explained variance ratio (2,)).
    """
    x = np.asarray(features, dtype=np.float64)
    centred = x - x.mean(axis=0)  # (N, D)
    covariance = centred.T @ centred / max(len(x) - 1, 1)  # (D, D)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending
    components = eigenvectors[:, ::-1][:, :2].T  # (2, D), largest first
    signs = np.sign(components[np.arange(2), np.abs(components).argmax(axis=1)])
    components = components * np.where(signs == 0, 1.0, signs)[:, None]
    total = eigenvalues.sum()
    explained = eigenvalues[::-1][:2] / total if total > 0 else np.zeros(2)
    return centred @ components.T, components, explained


def embedding_data(run, backend=None) -> dict:
    """The held-out features (kNN space) of the untrained encoder and of RUN's encoder_q, each projected
    by its own PCA: {"labels", "classes", "untrained" and "trained": {"features" (N, D), "projection"
    (N, 2), "explained" (2,)}, "epoch", "checkpoint"}."""
    loaded, untrained, _, test = _run_and_splits(run, backend)
    b = get_backend(backend or loaded.config.backend)
    result = {
        "labels": test.labels,
        "classes": list(test.classes),
        "epoch": loaded.meta.get("epoch"),
        "global_step": loaded.meta.get("global_step"),
        "checkpoint": str(loaded.checkpoint),
        "seed": loaded.config.seed,
    }
    for name, encoder in (("untrained", untrained), ("trained", loaded.encoder_q)):
        features = _unit_features(encoder, test.images, b)
        projection, _, explained = pca_2d(features)
        result[name] = {"features": features, "projection": projection, "explained": explained}
    return result


# ------------------------------------------------------------------ drawing
def mosaic(cells: np.ndarray, borders=None, border: int = 2, gap: int = 2) -> np.ndarray:
    """Images (R, C, S, S, 3) in [0, 1] laid out in a grid on white, each framed by its colour in
    ``borders`` (R, C, 3) (none when None); returns one (H, W, 3) image."""
    rows, cols, size = cells.shape[0], cells.shape[1], cells.shape[2]
    step = size + 2 * border + gap
    out = np.ones((rows * step - gap, cols * step - gap, 3))
    for r in range(rows):
        for c in range(cols):
            top, left = r * step, c * step
            if borders is not None:
                out[top : top + size + 2 * border, left : left + size + 2 * border] = borders[r, c]
            out[top + border : top + border + size, left + border : left + border + size] = cells[r, c]
    return out


def _figure(size):
    Figure, FigureCanvasAgg, _ = load_matplotlib()
    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def check_out(out, default: Path, replace: bool = False) -> Path:
    """The PNG path to write (``out`` or ``default``); UserError unless it ends in .png in an existing folder,
    PathRefused where a file is already at ``out`` (unless ``replace``, --force) or the OS refuses it."""
    out = check_output_file(out, "--out", replace) if out else default
    if out.suffix.lower() != ".png":
        raise UserError(f"--out {out} must end in .png")
    if not out.parent.is_dir():
        raise UserError(f"no folder {out.parent} to write {out.name} into")
    return out


def _save(figure, out: Path) -> Path:
    try:
        figure.savefig(out, dpi=DPI)
    except OSError as error:
        raise refusal(out, error, "--out") from None
    return out


def draw_views(data: dict, out) -> Path:
    n, size = len(data["index"]), data["view_q"].shape[1]
    originals = data["originals"].astype(np.float64) / 255.0  # (n, S, S, 3), S = the views' side
    cells = np.stack([originals, data["view_q"], data["view_k"]])  # (3, n, S, S, 3)
    figure = _figure((VIEW_CELL * n + VIEW_MARGIN, VIEW_HEIGHT))
    ax = figure.subplots()
    ax.imshow(mosaic(cells), interpolation="nearest")
    step = size + 6
    ax.set_yticks([step * r + size / 2 + 2 for r in range(3)], ["image", "view 1 (x_q)", "view 2 (x_k)"])
    ax.set_xticks([step * c + size / 2 + 2 for c in range(n)], data["names"], fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(f"two augmentations of the same image: the positive pairs (aug {data['aug']})", fontsize=10)
    return _save(figure, Path(out))


def _trained_for(data: dict) -> str:
    """ "10 epochs of MoCo (310 steps)": how long the shown encoder trained."""
    epochs = data["epoch"]
    return f"{epochs} epoch{'' if epochs == 1 else 's'} of MoCo ({data['global_step']} steps)"


def _neighbour_panel(ax, data: dict, name: str, title: str) -> None:
    part, query_index = data[name], data["query_index"]
    queries = data["test_images"][query_index].astype(np.float64) / 255.0  # (Q, S, S, 3)
    found = data["train_images"][part["index"]].astype(np.float64) / 255.0  # (Q, k, S, S, 3)
    cells = np.concatenate([queries[:, None], found], axis=1)  # (Q, 1 + k, S, S, 3)
    borders = np.empty(cells.shape[:2] + (3,))
    borders[:, 0] = QUERY
    if part["same_class"] is None:
        borders[:, 1:] = 0.6
        counted = ""
    else:
        borders[:, 1:] = np.where(part["same_class"][..., None], SAME, OTHER)
        counted = f": {int(part['same_class'].sum())} of {part['same_class'].size} of the query's class"
    ax.imshow(mosaic(cells, borders), interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title + counted, fontsize=9)


def draw_neighbours(data: dict, out) -> Path:
    queries, k = data["trained"]["index"].shape
    figure = _figure(
        ((2 * (1 + k) * NEIGHBOUR_CELL + NEIGHBOUR_MARGIN_W), queries * NEIGHBOUR_CELL + NEIGHBOUR_MARGIN_H)
    )
    left, right = figure.subplots(1, 2)
    _neighbour_panel(left, data, "untrained", f"before: the untrained encoder (seed {data['seed']})")
    _neighbour_panel(right, data, "trained", f"after {_trained_for(data)}")
    figure.suptitle(
        f"query (blue) and its {k} nearest training images by cosine; green = same class, red = another", fontsize=10
    )
    return _save(figure, Path(out))


def draw_embedding(data: dict, out) -> Path:
    from matplotlib import colormaps

    figure = _figure(EMBEDDING_SIZE)
    axes = figure.subplots(1, 2)
    labels, classes = data["labels"], data["classes"]
    palette = colormaps["tab10" if len(classes) <= 10 else "turbo"]
    for ax, name, title in (
        (axes[0], "untrained", f"untrained encoder (seed {data['seed']})"),
        (axes[1], "trained", f"after {_trained_for(data)}"),
    ):
        points, explained = data[name]["projection"], data[name]["explained"]
        if labels is None:
            ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.7)
        else:
            for c, class_name in enumerate(classes):
                chosen = labels == c
                colour = palette(c if len(classes) <= 10 else c / max(len(classes) - 1, 1))
                ax.scatter(points[chosen, 0], points[chosen, 1], s=5, alpha=0.8, color=colour, label=class_name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"PC 1 ({100 * explained[0]:.0f} % of the variance)")
        ax.set_ylabel(f"PC 2 ({100 * explained[1]:.0f} %)")
        ax.grid(True, alpha=0.3)
    if labels is not None and len(classes) <= 20:
        axes[1].legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, markerscale=2, frameon=False)
    figure.suptitle(
        "held-out features (normalised encoder output) on their first two principal components", fontsize=10
    )
    return _save(figure, Path(out))


# ------------------------------------------------------------------ the commands
def _default_beside(run, name: str) -> Path:
    path = check_input(run)
    return (path if path.is_dir() else path.parent) / name


def show_views(
    data_source: str = "builtin",
    aug: str = "cifar",
    count: int = 8,
    image_size: int = 32,
    seed: int = 0,
    out=None,
    replace: bool = False,
) -> tuple[Path, dict]:
    """``moco-ref show views``: computes :func:`views_data` and draws it; returns (PNG path, data)."""
    out = check_out(out, Path(f"views-{aug}.png"), replace)
    load_matplotlib()  # one line, before any work, when matplotlib is missing
    dataset = load_dataset(data_source, "train", image_size, seed)
    data = views_data(dataset, aug, count, seed)
    return draw_views(data, out), data


def show_neighbours(
    run, queries: int = 6, k: int = 5, backend=None, out=None, replace: bool = False
) -> tuple[Path, dict]:
    """``moco-ref show neighbours RUN``: computes :func:`neighbours_data` and draws it."""
    checkpoint_of(run)
    out = check_out(out, _default_beside(run, "neighbours.png"), replace)
    load_matplotlib()
    data = neighbours_data(run, queries, k, backend)
    return draw_neighbours(data, out), data


def show_embedding(run, backend=None, out=None, replace: bool = False) -> tuple[Path, dict]:
    """``moco-ref show embedding RUN``: computes :func:`embedding_data` and draws it."""
    checkpoint_of(run)
    out = check_out(out, _default_beside(run, "embedding.png"), replace)
    load_matplotlib()
    data = embedding_data(run, backend)
    return draw_embedding(data, out), data
