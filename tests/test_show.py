"""``moco-ref show views|neighbours|embedding``: each PNG exists with its expected pixel size, and what it
draws is what was computed, checked against an independent computation: the views are the pipeline's
output for the seed, the neighbours are the true top-k by cosine, the PCA projection equals an SVD's up to
sign; the untrained encoder is the one training starts from; one-line errors.

The run is a tiny one (2 classes, 12 training and 4 validation images each, 16 pixels, width 2).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from helpers import error_line, run_cli, write_image_folder
from PIL import Image

from moco_ref.tools.show import (
    embedding_size,
    neighbours_size,
    pca_2d,
    pick_per_class,
    show_embedding,
    show_neighbours,
    show_views,
    views_size,
)

TINY = [
    "--image-size",
    "16",
    "--width",
    "2",
    "-b",
    "8",
    "--moco-k",
    "20",
    "--moco-dim",
    "16",
    "--bn-splits",
    "2",
    "--log-every",
    "1",
    "--knn-every",
    "0",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data):
    """A finished 2-epoch run on the tiny folder."""
    import contextlib
    import io

    from moco_ref.cli.main import main

    run = tmp_path_factory.mktemp("runs") / "run"
    with (
        contextlib.redirect_stderr(io.StringIO()),
        contextlib.redirect_stdout(io.StringIO()),
        pytest.raises(SystemExit) as exit_,
    ):
        main(["train", "--data", str(data), *TINY, "--epochs", "2", "--seed", "3", "--out", str(run)])
    assert exit_.value.code == 0
    return run


def png_size(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def unit_features(encoder, images):
    """The test transform by hand (16-pixel images: Normalize only), the encoder in eval mode, unit rows."""
    from moco_ref.augment import CIFAR_MEAN, CIFAR_STD

    x = (images.astype(np.float32) / 255.0 - np.array(CIFAR_MEAN, np.float32)) / np.array(CIFAR_STD, np.float32)
    out = np.asarray(encoder.forward(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), training=False).out, np.float64)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def encoders_of(run_dir):
    """(untrained, trained) encoders rebuilt without moco_ref.tools.runs: MoCo's own encoder_q, and the checkpoint's
    arrays loaded into it."""
    from moco_ref.moco import MoCo
    from moco_ref.run.config import TrainConfig

    with np.load(run_dir / "checkpoint_last.npz", allow_pickle=False) as arrays:
        stored = {name: arrays[name] for name in arrays.files}
    config = TrainConfig.from_dict(json.loads(stored.pop("__meta__").tobytes().decode())["config"])
    untrained = MoCo(**config.model_arguments()).encoder_q
    trained = MoCo(**config.model_arguments()).encoder_q
    trained.load_state_dict({k[len("encoder_q.") :]: v for k, v in stored.items() if k.startswith("encoder_q.")})
    return untrained, trained


def same_columns_up_to_sign(a, b, tolerance):
    for j in range(a.shape[1]):
        sign = np.sign(a[:, j] @ b[:, j])
        np.testing.assert_allclose(a[:, j], sign * b[:, j], atol=tolerance, err_msg=f"column {j}")


# ------------------------------------------------------------------ views
def test_views_are_the_pipelines_output_for_the_seed(tmp_path, data):
    from moco_ref.augment import denormalize, make_pipeline
    from moco_ref.data import load_dataset

    path, drawn = show_views(str(data), "v2", count=3, image_size=16, seed=5, out=tmp_path / "views.png")
    assert png_size(path) == views_size(3) == (450, 375)
    dataset = load_dataset(str(data), "train", 16, 5)
    assert list(dataset.labels[drawn["index"]]) == [0, 1, 0]  # each class in turn
    assert drawn["names"] == ["green", "red", "green"]
    images = dataset.images[drawn["index"]]
    np.testing.assert_array_equal(drawn["originals"], images)
    rng, pipeline = np.random.default_rng(5), make_pipeline("v2", 16)
    for name in ("view_q", "view_k"):  # x_q first, then x_k, one generator
        expected = np.clip(denormalize(pipeline(images, rng, "numpy")).transpose(0, 2, 3, 1), 0, 1)
        np.testing.assert_array_equal(drawn[name], expected, err_msg=name)
    assert not np.array_equal(drawn["view_q"], drawn["view_k"])  # two different augmentations


def test_show_views_command_writes_the_png(tmp_path, data, capsys):
    out = tmp_path / "pairs.png"
    code, stdout, err = run_cli(
        ["show", "views", "--data", data, "--image-size", "16", "--images", "4", "--aug", "cifar", "--out", out], capsys
    )
    assert code == 0, err
    assert stdout.startswith(f"wrote {out}") and png_size(out) == views_size(4)


def test_pick_per_class_takes_each_class_in_turn():
    labels = np.array([2, 2, 0, 1, 0, 2])
    assert list(pick_per_class(labels, 5, 6)) == [2, 3, 0, 4, 1]
    assert list(pick_per_class(None, 3, 10)) == [0, 1, 2] and list(pick_per_class(None, 3, 2)) == [0, 1]


# ------------------------------------------------------------------ neighbours
def test_the_untrained_encoder_is_the_one_training_starts_from(run_dir):
    from moco_ref.moco import MoCo
    from moco_ref.run.config import TrainConfig
    from moco_ref.tools.runs import untrained_encoder

    config = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    built = untrained_encoder(config).state_dict()
    started = MoCo(**config.model_arguments()).encoder_q.state_dict()
    assert built.keys() == started.keys()
    for name in built:
        np.testing.assert_array_equal(built[name], started[name], err_msg=name)


def test_neighbours_are_the_true_top_k_by_cosine(tmp_path, run_dir, data):
    from moco_ref.data import load_dataset

    path, drawn = show_neighbours(run_dir, queries=3, k=4, out=tmp_path / "n.png")
    assert png_size(path) == neighbours_size(3, 4) == (800, 325)
    train, test = load_dataset(str(data), "train", 16, 3), load_dataset(str(data), "test", 16, 3)
    assert list(test.labels[drawn["query_index"]]) == [0, 1, 0]
    for name, encoder in zip(("untrained", "trained"), encoders_of(run_dir)):
        bank = unit_features(encoder, train.images)
        queries = unit_features(encoder, test.images[drawn["query_index"]])
        cosine = queries @ bank.T
        expected = np.argsort(-cosine, axis=1)[:, :4]  # the brute-force top 4
        np.testing.assert_array_equal(drawn[name]["index"], expected, err_msg=name)
        np.testing.assert_allclose(drawn[name]["similarity"], np.take_along_axis(cosine, expected, 1), atol=1e-5)
        np.testing.assert_array_equal(
            drawn[name]["same_class"], train.labels[expected] == test.labels[drawn["query_index"]][:, None]
        )
    assert not np.array_equal(drawn["untrained"]["index"], drawn["trained"]["index"])


def test_show_neighbours_command_defaults_to_the_run_directory(run_dir, capsys):
    code, stdout, err = run_cli(["show", "neighbours", run_dir], capsys)
    assert code == 0, err
    assert stdout.startswith(f"wrote {run_dir / 'neighbours.png'}; neighbours of the query's class: untrained ")
    assert png_size(run_dir / "neighbours.png") == neighbours_size(6, 5)


# ------------------------------------------------------------------ embedding
def test_pca_equals_an_independent_svd_up_to_sign():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((200, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1]) + 4.0
    projection, components, explained = pca_2d(features)
    centred = features - features.mean(axis=0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    same_columns_up_to_sign(projection, u[:, :2] * s[:2], 1e-9)
    same_columns_up_to_sign(components.T, vt[:2].T, 1e-9)
    np.testing.assert_allclose(explained, s[:2] ** 2 / (s**2).sum(), rtol=1e-9)
    assert (components[np.arange(2), np.abs(components).argmax(axis=1)] > 0).all()  # the sign convention


def test_embedding_projects_each_encoders_test_features(tmp_path, run_dir, data):
    from moco_ref.data import load_dataset

    path, drawn = show_embedding(run_dir, out=tmp_path / "e.png")
    assert png_size(path) == embedding_size() == (1100, 500)
    test = load_dataset(str(data), "test", 16, 3)
    np.testing.assert_array_equal(drawn["labels"], test.labels)
    for name, encoder in zip(("untrained", "trained"), encoders_of(run_dir)):
        features = unit_features(encoder, test.images)
        np.testing.assert_allclose(drawn[name]["features"], features, atol=1e-5)
        u, s, _ = np.linalg.svd(features - features.mean(axis=0), full_matrices=False)
        same_columns_up_to_sign(drawn[name]["projection"], u[:, :2] * s[:2], 1e-4)


def test_show_embedding_command(run_dir, tmp_path, capsys):
    out = tmp_path / "embedding.png"
    code, stdout, err = run_cli(["show", "embedding", run_dir / "checkpoint_last.npz", "--out", out], capsys)
    assert code == 0, err
    assert stdout.startswith(f"wrote {out}; variance on the two components: untrained ")
    assert png_size(out) == embedding_size()


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("command", ["neighbours", "embedding"])
def test_a_bad_run_path_is_one_line(tmp_path, capsys, command):
    code, _, err = run_cli(["show", command, tmp_path / "nowhere"], capsys)
    error_line(code, err, "no run at", "nowhere")
    code, _, err = run_cli(["show", command, tmp_path], capsys)
    error_line(code, err, "holds no checkpoint_last.npz")
    (tmp_path / "garbage.npz").write_bytes(b"not a checkpoint")
    code, _, err = run_cli(["show", command, tmp_path / "garbage.npz"], capsys)
    error_line(code, err, "not a moco-ref checkpoint")


def test_out_must_be_a_png_in_a_folder_that_exists(tmp_path, run_dir, capsys):
    code, _, err = run_cli(["show", "embedding", run_dir, "--out", tmp_path / "e.jpg"], capsys)
    error_line(code, err, "must end in .png")
    code, _, err = run_cli(["show", "views", "--out", tmp_path / "no" / "v.png"], capsys)
    error_line(code, err, "no folder")


@pytest.mark.parametrize("args", [["views"], ["neighbours", "RUN"], ["embedding", "RUN"]])
def test_without_matplotlib_each_command_is_one_line(run_dir, tmp_path, capsys, monkeypatch, args):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    args = [run_dir if a == "RUN" else a for a in args]
    code, _, err = run_cli(["show", *args, "--out", tmp_path / "x.png"], capsys)
    error_line(code, err, "needs matplotlib", "pip install 'moco-ref[plot]'")
    assert not (tmp_path / "x.png").exists()
