"""``moco-ref ablate``: one recipe, one setting varied, each run a normal run directory; the table, the
picture, the paper's numbers and the computed shape line; an interrupted ablation continues to the same
table; one-line errors.

The runs use a tiny image folder (2 classes, 12 training and 4 validation images each, cropped to 16)
and a resnet10 of width 2, so a whole ablation takes a few seconds.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys

import numpy as np
import pytest
from helpers import error_line, run_cli, write_image_folder
from PIL import Image

from moco_ref.run.config import TrainConfig
from moco_ref.tools.ablate import PAPER_MOMENTUM, STUDIES, Outcome, shape_line

TINY = [
    "--image-size",
    "16",
    "--width",
    "2",
    "-b",
    "8",
    "--moco-dim",
    "16",
    "--bn-splits",
    "2",
    "--log-every",
    "1",
    "--epochs",
    "2",
    "--knn-every",
    "1",
    "--probe-epochs",
    "3",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def momentum_ablation(tmp_path_factory, data):
    """The momentum ablation with its default settings m = 0, 0.9, 0.99, 0.999, run once in-process:
    (folder, stdout, stderr)."""
    from moco_ref.cli.main import main

    folder = tmp_path_factory.mktemp("ablation") / "momentum"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_:
        main(["ablate", "momentum", "--data", str(data), *TINY, "--out", str(folder)])
    assert exit_.value.code == 0, err.getvalue()
    return folder, out.getvalue(), err.getvalue()


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------ a whole ablation
def test_each_setting_is_a_run_directory_that_differs_in_m_alone(momentum_ablation):
    folder, _, _ = momentum_ablation
    configs = {}
    for name in ("m-0", "m-0.9", "m-0.99", "m-0.999"):
        assert (folder / name / "checkpoint_last.npz").is_file()
        configs[name] = json.loads((folder / name / "config.json").read_text())
    assert [c["m"] for c in configs.values()] == [0.0, 0.9, 0.99, 0.999]
    rest = [{k: v for k, v in c.items() if k != "m"} for c in configs.values()]
    assert all(r == rest[0] for r in rest), "the runs must share every setting but m"
    assert rest[0]["epochs"] == 2 and rest[0]["width"] == 2  # the flags given reach every run


def test_the_table_holds_what_each_run_directory_measured(momentum_ablation):
    folder, _, _ = momentum_ablation
    report = json.loads((folder / "ablation.json").read_text())
    assert [row["value"] for row in report["rows"]] == [0.0, 0.9, 0.99, 0.999]
    for row in report["rows"]:
        run_dir = folder / f"m-{row['value']:g}"
        log = records(run_dir)
        final = log[-1]
        last_epoch = [r for r in log if r["kind"] == "epoch"][-1]
        assert final["kind"] == "final" and row["knn_top1"] == final["knn_top1"]
        assert row["loss"] == last_epoch["loss"] and row["acc1"] == last_epoch["acc1"]
        assert row["train_seconds"] == pytest.approx(sum(r["seconds"] for r in log if r["kind"] == "epoch"))
        assert row["linear_top1"] == json.loads((run_dir / "linear_probe.json").read_text())["top1"]
        assert row["knn_curve"]["epochs"] == [0, 1, 2]  # untrained, then every epoch
        assert row["knn_curve"]["top1"][-1] == row["knn_top1"]
    table = (folder / "ablation.md").read_text()
    assert (
        "| m | kNN top-1 (%) | linear top-1 (%) | loss | instance acc. (%) | train time (s) | paper, ImageNet (%) |"
        in table
    )
    first = report["rows"][0]
    assert f"| m = 0 | {first['knn_top1']:.1f} | {first['linear_top1']:.1f} | {first['loss']:.3f} |" in table


def test_the_paper_and_the_shape_line_are_printed_beside_the_table(momentum_ablation):
    folder, out, err = momentum_ablation
    assert "| m = 0.999 |" in out and out.rstrip().endswith("ablation.png")
    for top1 in PAPER_MOMENTUM.values():
        assert ("fails" if top1 is None else f"{top1:.1f}") in out
    assert "m = 0.9999: 58.9" in out  # the paper's value not run here
    report = json.loads((folder / "ablation.json").read_text())
    assert report["shape"] in out and report["shape"].startswith("shape (linear top-1 here")
    assert "ablate momentum: run 1/4, m = 0," in err and "run 4/4, m = 0.999" in err


def test_the_picture_is_the_knn_curves(momentum_ablation):
    folder, _, _ = momentum_ablation
    with Image.open(folder / "ablation.png") as image:
        assert image.size == (700, 450)


def test_running_it_again_reads_the_finished_runs_back(momentum_ablation, capsys, data):
    folder, out, _ = momentum_ablation
    before = {p: p.stat().st_mtime_ns for p in folder.glob("*/checkpoint_last.npz")}
    code, again, err = run_cli(["ablate", "momentum", "--data", data, *TINY, "--out", folder], capsys)
    assert code == 0, err
    assert err.count("is finished: read back") == 4
    assert {p: p.stat().st_mtime_ns for p in folder.glob("*/checkpoint_last.npz")} == before
    assert again.split("| m |")[1] == out.split("| m |")[1]  # the same table


def test_an_interrupted_ablation_continues_to_the_same_table(tmp_path, data, capsys, monkeypatch):
    from moco_ref.run.trainer import Trainer

    args = ["ablate", "momentum", "--values", "0,0.99", "--data", data, *TINY]
    code, _, err = run_cli([*args, "--out", tmp_path / "whole"], capsys)
    assert code == 0, err

    original, calls = Trainer.run_epoch, []

    def interrupted(self, stop=None):
        calls.append(self.config.m)
        if len(calls) == 4:  # run 1's two epochs, run 2's first; then Ctrl-C
            raise KeyboardInterrupt
        return original(self, stop)

    monkeypatch.setattr(Trainer, "run_epoch", interrupted)
    code, _, err = run_cli([*args, "--out", tmp_path / "cut"], capsys)
    assert code == 130 and calls == [0.0, 0.0, 0.99, 0.99]
    monkeypatch.setattr(Trainer, "run_epoch", original)
    code, out, err = run_cli([*args, "--out", tmp_path / "cut"], capsys)
    assert code == 0, err
    assert "m-0 is finished: read back" in err and "at epoch 2, step 3" in err
    whole = json.loads((tmp_path / "whole" / "ablation.json").read_text())["rows"]
    cut = json.loads((tmp_path / "cut" / "ablation.json").read_text())["rows"]
    for a, b in zip(whole, cut):
        for key in ("knn_top1", "linear_top1", "loss", "acc1", "knn_curve", "global_step"):
            assert a[key] == b[key], f"{b['setting']}: {key} {b[key]} after the interruption, {a[key]} without"


def test_ctrl_c_stops_after_a_step_and_the_same_command_continues_to_the_same_table(
    tmp_path, data, capsys, monkeypatch
):
    import os
    import signal

    from moco_ref.moco import MoCo

    args = ["ablate", "momentum", "--values", "0,0.99", "--data", data, *TINY]
    code, _, err = run_cli([*args, "--out", tmp_path / "whole"], capsys)
    assert code == 0, err
    step, steps = MoCo.step, []

    def step_then_ctrl_c(self, x_q, x_k, **schedule):
        steps.append(self.m)
        if len(steps) == 8:  # run 2 (m = 0.99), epoch 1, its second step
            os.kill(os.getpid(), signal.SIGINT)
        return step(self, x_q, x_k, **schedule)

    monkeypatch.setattr(MoCo, "step", step_then_ctrl_c)
    code, _, err = run_cli([*args, "--out", tmp_path / "cut"], capsys)
    assert code == 130 and len(steps) == 8, err
    assert err.strip().splitlines()[-1] == (
        f"ablate momentum: stopped by SIGINT; the runs so far are kept in "
        f"{tmp_path / 'cut'}: run the same command again to continue"
    )
    monkeypatch.setattr(MoCo, "step", step)
    code, _, err = run_cli([*args, "--out", tmp_path / "cut"], capsys)
    assert code == 0, err
    assert "at epoch 1, step 2" in err  # resumed mid-epoch
    whole = json.loads((tmp_path / "whole" / "ablation.json").read_text())["rows"]
    cut = json.loads((tmp_path / "cut" / "ablation.json").read_text())["rows"]
    for a, b in zip(whole, cut):
        for key in ("knn_top1", "linear_top1", "loss", "acc1", "knn_curve", "global_step"):
            assert a[key] == b[key], f"{b['setting']}: {key} {b[key]} after Ctrl-C, {a[key]} without"


def test_a_run_whose_loss_became_nan_is_reported_as_failed(tmp_path, data, capsys, monkeypatch):
    from moco_ref.moco import MoCo

    step = MoCo.step

    def nan_at_m_0(self, x_q, x_k, **schedule):
        stats = step(self, x_q, x_k, **schedule)
        return {**stats, "loss": np.float32("nan")} if self.m == 0 else stats

    monkeypatch.setattr(MoCo, "step", nan_at_m_0)
    args = ["ablate", "momentum", "--values", "0,0.99", "--data", data, *TINY, "--out", tmp_path]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "| m = 0 | failed | failed |" in out and (tmp_path / "m-0" / "failed.json").is_file()
    code, out, err = run_cli(args, capsys)
    assert code == 0 and "failed before" in err and "| m = 0 | failed |" in out


def test_without_matplotlib_the_table_is_written_and_one_line_says_the_picture_needs_it(
    tmp_path, data, capsys, monkeypatch
):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    code, out, err = run_cli(
        ["ablate", "queue", "--values", "8", "--data", data, *TINY, "--epochs", "1", "--out", tmp_path], capsys
    )
    assert code == 0, err
    assert out.strip().splitlines()[-1] == (
        f"wrote {tmp_path / 'ablation.md'} and {tmp_path / 'ablation.json'}; "
        f"the picture {tmp_path / 'ablation.png'} needs matplotlib: "
        f"pip install 'moco-ref[plot]'"
    )
    assert (tmp_path / "ablation.md").is_file() and not (tmp_path / "ablation.png").exists()


def test_shuffle_bn_runs_the_same_groups_with_and_without_the_shuffle_and_plain_bn(tmp_path, data, capsys):
    """--bn-splits 2: rows of 2 groups shuffled, 2 groups not shuffled, 1 group; each its own run directory."""
    code, out, err = run_cli(
        ["ablate", "shuffle-bn", "--data", data, *TINY, "--epochs", "1", "--probe-epochs", "0", "--out", tmp_path],
        capsys,
    )
    assert code == 0, err
    settings = {
        name: json.loads((tmp_path / name / "config.json").read_text())
        for name in ("bn-2-shuffled", "bn-2-unshuffled", "bn-1")
    }
    assert [(c["bn_splits"], c["shuffle_bn"]) for c in settings.values()] == [(2, True), (2, False), (1, True)]
    for row in ("| 2 groups, keys shuffled |", "| 2 groups, keys not shuffled |", "| 1 group (plain BN) |"):
        assert row in out
    assert "shape: 2 groups without the shuffle against with it" in out


def test_the_queue_table_reports_the_false_negatives_of_each_k(tmp_path, data, capsys):
    code, out, err = run_cli(
        [
            "ablate",
            "queue",
            "--values",
            "8,16",
            "--data",
            data,
            *TINY,
            "--epochs",
            "1",
            "--probe-epochs",
            "0",
            "--out",
            tmp_path,
        ],
        capsys,
    )
    assert code == 0, err
    report = json.loads((tmp_path / "ablation.json").read_text())
    for row in report["rows"]:
        assert 0.0 <= row["false_negatives"] <= 100.0  # two classes: about half the queue
    assert "false negatives (%)" in out and report["paper"]["linear_top1"] == {"4096": 59.0, "65536": 60.6}


# ------------------------------------------------------------------ the settings and the shape line
def test_default_settings_of_each_study():
    base = TrainConfig()
    assert STUDIES["momentum"].default_values(base, 2000) == [0.0, 0.9, 0.99, 0.999]
    assert STUDIES["queue"].default_values(base, 2000) == [16, 64, 256, 1024]  # up to the dataset size
    assert STUDIES["queue"].default_values(base, 50000) == [256, 1024, 4096, 16384]
    assert STUDIES["queue"].default_values(base, 24) == [16]
    # The paper's per-GPU BN: 8 groups (of 8 images at batch 64), shuffled and not, and plain BN.
    assert STUDIES["shuffle-bn"].default_values(base, 2000) == ["8", "8-unshuffled", "1"]
    assert STUDIES["shuffle-bn"].default_values(TrainConfig(bn_splits=4), 2000) == ["4", "4-unshuffled", "1"]
    assert STUDIES["shuffle-bn"].parse("4,1,2") == ["4", "4-unshuffled", "1", "2", "2-unshuffled"]
    assert STUDIES["shuffle-bn"].changes("8-unshuffled") == {"bn_splits": 8, "shuffle_bn": False}
    assert STUDIES["shuffle-bn"].changes("1") == {"bn_splits": 1, "shuffle_bn": True}
    assert STUDIES["shuffle-bn"].run_name("8") == "bn-8-shuffled" and STUDIES["shuffle-bn"].run_name("1") == "bn-1"


def rows(name, scores, acc1=None, false_negatives=None):
    study = STUDIES[name]
    return study, [
        Outcome(
            value=v,
            setting=study.setting(v),
            run_dir="",
            status="finished",
            linear_top1=s,
            knn_top1=s,
            acc1=(acc1 or {}).get(v, 50.0),
            false_negatives=(false_negatives or {}).get(v),
        )
        for v, s in scores.items()
    ]


def test_momentum_shape_line_is_computed_from_the_numbers():
    study, outcomes = rows("momentum", {0.0: 20.0, 0.9: 30.0, 0.99: 40.0, 0.999: 35.0})
    assert shape_line(study, outcomes, True) == (
        "shape (linear top-1 here, ImageNet linear top-1 in the paper): best at m = 0.99 here, at 0.999 in the "
        "paper; m = 0 lowest in both (where the paper's run fails); order here 0.99 > 0.999 > 0.9 > 0, in the "
        "paper 0.999 > 0.99 > 0.9 > 0"
    )
    study, outcomes = rows("momentum", {0.0: 20.0, 0.9: 30.0, 0.99: 40.0, 0.999: 45.0})
    assert "best at m = 0.999 in both" in shape_line(study, outcomes, False)
    assert shape_line(study, outcomes, False).endswith("the same order as the paper")
    study, outcomes = rows("momentum", {0.0: 50.0, 0.9: 30.0})
    assert "lowest at m = 0.9 here, at 0 in the paper" in shape_line(study, outcomes, True)


PAPER_QUEUE_CLAIM = (
    "in the paper accuracy rises with K (59.0 % at K = 4096, 60.6 % at K = 65536, ImageNet linear top-1)"
)


@pytest.mark.parametrize(
    "scores,here",
    [
        (
            {16: 20.0, 64: 25.0, 256: 30.0},
            "this run's linear top-1 rises with K at every step, as in the paper (K 16 → 256: 20.0 → 25.0 → 30.0 %",
        ),  # rising
        (
            {16: 30.0, 64: 25.0, 256: 20.0},
            "this run's linear top-1 does not rise with K (best at K = 16) (K 16 → 256: 30.0 → 25.0 → 20.0 %",
        ),  # falling
        ({16: 20.0, 64: 35.0, 256: 30.0}, "does not rise with K (best at K = 64)"),  # mixed
    ],
    ids=["rising", "falling", "mixed"],
)
def test_the_queue_shape_line_keeps_this_runs_numbers_and_the_papers_apart(scores, here):
    study, outcomes = rows("queue", scores, false_negatives={16: 10.0, 64: 11.0, 256: 9.5})
    line = shape_line(study, outcomes, True)
    assert here in line and line.endswith(PAPER_QUEUE_CLAIM)
    assert "false negatives 10 → 11 → 10 % of the queue" in line
    ours, paper = line.split("; in the paper")
    assert "59.0" not in ours and "60.6" not in ours  # the paper's numbers only as the paper's
    assert all(f"{v:.1f}" not in paper for v in scores.values())  # this run's never as the paper's


@pytest.mark.parametrize(
    "knn,acc1,seen",
    [
        ({"8": 40.0, "8-unshuffled": 30.0, "1": 35.0}, {"8": 60.0, "8-unshuffled": 90.0, "1": 70.0}, "both seen here"),
        (
            {"8": 40.0, "8-unshuffled": 45.0, "1": 35.0},
            {"8": 60.0, "8-unshuffled": 50.0, "1": 70.0},
            "neither seen here",
        ),
        (
            {"8": 40.0, "8-unshuffled": 45.0, "1": 35.0},
            {"8": 60.0, "8-unshuffled": 90.0, "1": 70.0},
            "only the higher pretext accuracy seen here",
        ),
        (
            {"8": 40.0, "8-unshuffled": 30.0, "1": 35.0},
            {"8": 60.0, "8-unshuffled": 50.0, "1": 70.0},
            "only the worse representation seen here",
        ),
    ],
    ids=["cheat", "no-cheat", "pretext-only", "representation-only"],
)
def test_the_shuffle_bn_shape_line_compares_the_same_groups_with_and_without_the_shuffle(knn, acc1, seen):
    study, outcomes = rows("shuffle-bn", knn, acc1=acc1)
    line = shape_line(study, outcomes, True)
    assert line.startswith(
        "shape: 8 groups without the shuffle against with it: instance accuracy "
        f"{acc1['8-unshuffled']:.1f} % vs {acc1['8']:.1f} %, linear top-1 "
        f"{knn['8-unshuffled']:.1f} % vs {knn['8']:.1f} %"
    )
    assert line.endswith(f"without shuffle BN): {seen}")


# ------------------------------------------------------------------ errors and help
@pytest.mark.parametrize(
    "extra,phrases",
    [
        (["momentum", "--moco-m", "0.9"], ["varies --moco-m itself", "--values"]),
        (["queue", "--moco-k", "64"], ["varies --moco-k itself"]),
        (["momentum", "--values", "0,x"], ["--values", "numbers"]),
        (["momentum", "--values", "0,1.5"], ["1.5 is not a possible --moco-m", "at most 1"]),
        (["queue", "--values", "64,0"], ["0 is not a possible --moco-k"]),
        (["shuffle-bn", "--values", "1,3"], ["not a multiple of --bn-splits 3"]),  # before run 1 trains
        (["shuffle-bn", "--no-shuffle-bn"], ["varies --shuffle-bn itself", "--values 8,1"]),
        (["momentum", "--backend", "cupy"], []),
    ],
)
def test_bad_settings_end_in_one_line(tmp_path, data, capsys, extra, phrases):
    if "cupy" in extra:
        from helpers import skip_if_cupy_installed

        skip_if_cupy_installed()
    code, _, err = run_cli(["ablate", *extra, "--data", data, *TINY, "--out", tmp_path / "a"], capsys)
    error_line(code, err, *phrases)


def test_another_recipe_in_the_same_folder_is_refused(momentum_ablation, data, capsys):
    folder, _, _ = momentum_ablation
    code, _, err = run_cli(["ablate", "momentum", "--data", data, *TINY, "--width", "4", "--out", folder], capsys)
    error_line(code, err, "--width 2", "asks for 4", "another --out")


def test_help_explains_the_studies_with_the_ablations_own_defaults(capsys):
    code, out, _ = run_cli(["ablate", "--help"], capsys)
    assert code == 0
    out = " ".join(out.split())  # click wraps the lines
    for phrase in (
        "momentum",
        "queue",
        "shuffle-bn",
        "--knn-every",
        "[default: 2]",
        "--values",
        "--probe-epochs",
        "resumes",
    ):
        assert phrase in out, phrase


def test_ties_are_named_as_ties():
    study, outcomes = rows("momentum", {0.0: 20.0, 0.9: 30.0, 0.99: 40.0, 0.999: 40.0})
    line = shape_line(study, outcomes, True)
    assert "best at m = 0.99 and 0.999 here, at 0.999 in the paper" in line
    assert "order here 0.99 = 0.999 > 0.9 > 0" in line
