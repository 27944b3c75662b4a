"""``moco-ref plot``: reading metrics.jsonl, the series drawn, the PNG, one-line errors (with and without
matplotlib)."""

import json
import sys

import pytest
from helpers import run_cli

from moco_ref.errors import UserError
from moco_ref.tools.plot import (
    INSTRUMENTS,
    PLOT_INSTALL,
    curves,
    plot_run,
    read_metrics,
)


def instruments(epoch, global_step, drift):
    return {
        "kind": "instruments",
        "epoch": epoch,
        "global_step": global_step,
        "alignment": 1.0 - 0.1 * epoch,
        "uniformity": -1.0 - 0.2 * epoch,
        "feature_std": 0.05 + 0.01 * epoch,
        "logit_pos": 4.0 + epoch,
        "logit_neg": 0.5 - 0.1 * epoch,
        "key_drift": drift,
        "queue_age": min(global_step, 3),
        "probe_images": 256,
    }


def write_run(run_dir, epochs=3, steps_per_epoch=4, knn_every=1, K=64, with_instruments=False):
    """A run directory as moco_ref.run.trainer writes it: the untrained kNN, step and epoch records, the final summary
    (and, if asked, the instruments before training and after each epoch)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps({"K": K, "dim": 16}))
    records = [{"kind": "knn", "epoch": 0, "global_step": 0, "knn_top1": 12.5, "untrained": True}]
    if with_instruments:
        records.append(instruments(0, 0, None))
    for epoch in range(epochs):
        lr = 0.06 * (0.5**epoch)
        for step in range(1, steps_per_epoch + 1):
            g = epoch * steps_per_epoch + step
            records.append(
                {
                    "kind": "step",
                    "epoch": epoch,
                    "global_step": g,
                    "loss": 4.0 - 0.1 * g,
                    "acc1": 5.0 * g,
                    "lr": lr,
                    "images_per_s": 100.0,
                }
            )
        record = {
            "kind": "epoch",
            "epoch": epoch,
            "global_step": (epoch + 1) * steps_per_epoch,
            "loss": 3.0,
            "acc1": 40.0,
            "lr": lr,
            "seconds": 1.0,
            "complete": True,
        }
        if knn_every and (epoch + 1) % knn_every == 0:
            record["knn_top1"] = 20.0 + 10 * epoch
        records.append(record)
        if with_instruments:
            records.append(instruments(epoch + 1, (epoch + 1) * steps_per_epoch, 0.9 + 0.02 * epoch))
    records.append(
        {
            "kind": "final",
            "epoch": epochs,
            "global_step": epochs * steps_per_epoch,
            "knn_top1": records[-1].get("knn_top1"),
            "knn_top1_untrained": 12.5,
        }
    )
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run_dir


def hide_matplotlib(monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)


# ------------------------------------------------------------------ reading
def test_series_follow_the_training_log(tmp_path):
    series = curves(read_metrics(write_run(tmp_path / "run")))
    assert series["loss"][0] == list(range(1, 13))  # against the global step
    assert series["lr"][1][:4] == [0.06] * 4 and series["lr"][1][-1] == 0.015
    assert series["acc1"][1][-1] == 60.0
    # kNN against epochs completed: 0 = untrained, the record of epoch index e counts e + 1
    assert series["knn"] == ([0, 1, 2, 3], [12.5, 20.0, 30.0, 40.0])


def test_instruments_series_follow_their_records(tmp_path):
    series = curves(read_metrics(write_run(tmp_path / "run", with_instruments=True)))
    assert series["alignment"] == ([0, 4, 8, 12], pytest.approx([1.0, 0.9, 0.8, 0.7]))
    assert series["logit_neg"][1] == pytest.approx([0.5, 0.4, 0.3, 0.2])
    assert series["key_drift"] == ([4, 8, 12], pytest.approx([0.9, 0.92, 0.94]))  # none at the first measurement
    assert series["queue_age"] == ([0, 4, 8, 12], [0, 3, 3, 3])
    assert series["knn"] == ([0, 1, 2, 3], [12.5, 20.0, 30.0, 40.0])  # the other series as before


def test_without_instruments_records_their_series_are_empty(tmp_path):
    series = curves(read_metrics(write_run(tmp_path / "run")))
    assert all(series[name] == ([], []) for name in INSTRUMENTS)


def test_final_knn_fills_in_when_no_epoch_record_has_it(tmp_path):
    run = write_run(tmp_path / "run", epochs=2, knn_every=0)
    records = read_metrics(run)
    records[-1]["knn_top1"] = 33.0
    assert curves(records)["knn"] == ([0, 2], [12.5, 33.0])


@pytest.mark.parametrize(
    "setup,message",
    [
        (lambda d: None, "no run directory"),
        (lambda d: d.mkdir(), "holds no metrics"),
        (lambda d: (d.mkdir(), (d / "metrics.jsonl").write_text("")), "holds no metrics"),
        (lambda d: (d.mkdir(), (d / "metrics.jsonl").write_text("[1, 2]\n")), "holds no metrics"),
    ],
)
def test_bad_run_directories_raise_one_line(tmp_path, setup, message):
    run = tmp_path / "run"
    setup(run)
    with pytest.raises(UserError, match=message) as info:
        read_metrics(run)
    assert "\n" not in str(info.value)


def test_a_line_cut_short_is_dropped_as_every_reader_drops_it(tmp_path):
    """A kill or a full disk in the middle of a write leaves a torn last line: plot reads what is whole."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"kind": "step", "global_step": 1}\n{"kind": "ste')
    assert read_metrics(run) == [{"kind": "step", "global_step": 1}]


def test_nothing_to_plot_is_an_error(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "final", "epoch": 0, "global_step": 0}) + "\n")
    with pytest.raises(UserError, match="nothing|no step"):
        plot_run(run)


# ------------------------------------------------------------------ without matplotlib
def test_without_matplotlib_the_error_names_the_install(tmp_path, monkeypatch):
    hide_matplotlib(monkeypatch)
    with pytest.raises(UserError, match=r"pip install 'moco-ref\[plot\]'"):
        plot_run(write_run(tmp_path / "run"))
    assert not (tmp_path / "run" / "curves.png").exists()


def test_cli_without_matplotlib_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    hide_matplotlib(monkeypatch)
    code, out, err = run_cli(["plot", str(write_run(tmp_path / "run"))], capsys)
    assert code == 2 and out == ""
    expected = f"moco-ref: error: plotting needs matplotlib, an optional extra: {PLOT_INSTALL}"
    assert err.strip().splitlines() == [expected]


@pytest.mark.parametrize("content", [None, "", "{not json\n"])
def test_cli_bad_run_dir_exits_2_with_one_line(tmp_path, capsys, content):
    run = tmp_path / "run"
    if content is not None:
        run.mkdir()
        (run / "metrics.jsonl").write_text(content)
    code, out, err = run_cli(["plot", str(run)], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("moco-ref: error:"), err


# ------------------------------------------------------------------ the PNG
def test_png_is_written_to_the_run_directory(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from PIL import Image

    run = write_run(tmp_path / "run")
    code, out, err = run_cli(["plot", str(run)], capsys)
    assert code == 0, err
    png = run / "curves.png"
    assert out.strip() == f"wrote {png}"
    with Image.open(png) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert width > 800 and height > 500


def test_png_has_the_instruments_panels_below_when_the_run_has_them(tmp_path):
    """Eight panels (four rows) with instruments, the four of before (two rows) without: the same width, about
    twice the height."""
    pytest.importorskip("matplotlib")
    from PIL import Image

    sizes = {}
    for with_instruments in (False, True):
        run = write_run(tmp_path / f"run-{with_instruments}", with_instruments=with_instruments)
        with Image.open(plot_run(run)) as image:
            sizes[with_instruments] = image.size
    assert sizes[True][0] == sizes[False][0]
    assert sizes[True][1] == pytest.approx(2 * sizes[False][1], rel=0.02)


def test_png_has_the_false_negative_panels_when_the_instruments_hold_them(tmp_path):
    """Labelled data: one more row (the queue's false negatives and the logits by class), 5/4 of the height."""
    pytest.importorskip("matplotlib")
    from PIL import Image

    plain = write_run(tmp_path / "plain", with_instruments=True)
    labelled = write_run(tmp_path / "labelled", with_instruments=True)
    records = [json.loads(line) for line in (labelled / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        if r["kind"] == "instruments" and r["global_step"] > 0:
            r.update(false_negatives=0.1, logit_same_class=2.0, logit_other_class=0.5)
    (labelled / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert curves(read_metrics(labelled))["false_negatives"][1] == [0.1, 0.1, 0.1]
    with Image.open(plot_run(plain)) as a, Image.open(plot_run(labelled)) as b:
        assert b.size[1] == pytest.approx(5 / 4 * a.size[1], rel=0.02)


def test_png_with_out_and_without_knn(tmp_path):
    pytest.importorskip("matplotlib")
    run = write_run(tmp_path / "run", knn_every=0)
    out = plot_run(run, tmp_path / "elsewhere.png")
    assert out == tmp_path / "elsewhere.png" and out.stat().st_size > 10_000
    with pytest.raises(UserError, match=r"must end in \.png"):
        plot_run(run, tmp_path / "curves.jpg")


@pytest.mark.parametrize("symmetric,terms", [(False, 1), (True, 2)])
def test_loss_and_accuracy_are_drawn_against_their_chance_levels(tmp_path, monkeypatch, symmetric, terms):
    """ln(K+1) a loss term (two with --symmetric) beside the loss, 1/(K+1) beside the instance accuracy."""
    pytest.importorskip("matplotlib")
    import math

    from matplotlib.figure import Figure

    run = write_run(tmp_path / "run", K=64)
    (run / "config.json").write_text(json.dumps({"K": 64, "dim": 16, "symmetric": symmetric}))
    drawn = []
    monkeypatch.setattr(Figure, "savefig", lambda figure, *args, **kwargs: drawn.append(figure))
    plot_run(run)
    loss_panel, accuracy_panel = drawn[0].axes[:2]

    def levels(ax):
        return [line.get_ydata()[0] for line in ax.get_lines() if line.get_label().startswith("chance")]

    assert levels(loss_panel) == pytest.approx([terms * math.log(65)])
    assert levels(accuracy_panel) == pytest.approx([100 / 65])
