"""`moco-ref bench learn` pairs moco-ref with its PyTorch twin step for step, and reports a correct interval.

The pairing is checked twice: the inputs of every step (views, shuffle permutations, lr, m) are bit-equal
between the twin, our step and the trainer's own loop; and in float64 the two implementations stay equal
(loss, both encoders, the queue) over paired steps across epochs, so the initial state and the optimiser
settings are paired too.  The interval is checked against a direct computation with a tabulated t quantile.
"""

import json
import math
import re
import statistics
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import TINY_LEARN as TINY
from helpers import assert_close, error_line, run_cli

from moco_ref.bench import learn, learn_report
from moco_ref.bench.intervals import incomplete_beta, paired_interval, t_cdf, t_quantile
from moco_ref.data import load_dataset
from moco_ref.run.config import TrainConfig
from moco_ref.run.monitor import Monitor


def tiny_config(folder, **changes) -> TrainConfig:
    return TrainConfig(**{**TINY, "data": folder, **changes})


def paired(config) -> learn.PairedTraining:
    pytest.importorskip("torch")
    return learn.PairedTraining(config, load_dataset(config.data, "train", config.image_size, config.seed))


# ------------------------------------------------------------------ (a) the same inputs, bit for bit
class Recorder:
    """Records what MoCo.step and TorchMoCo.step receive, and the permutation each shuffle of our step draws."""

    def __init__(self, monkeypatch):
        from moco_ref import moco
        from moco_ref.pytorch_moco import TorchMoCo

        self.ours, self.twin, self.shuffles = [], [], []
        step, twin_step, shuffle = moco.MoCo.step, TorchMoCo.step, moco.batch_shuffle

        def our_step(model, x_q, x_k, m=None, lr=None):
            self.ours.append({"x_q": np.array(x_q), "x_k": np.array(x_k), "m": m, "lr": lr, "perms": []})
            return step(model, x_q, x_k, m=m, lr=lr)

        def batch_shuffle(x, rng, comm):
            shuffled, index_unshuffle = shuffle(x, rng, comm)
            self.ours[-1]["perms"].append(np.argsort(np.asarray(index_unshuffle)))  # the permutation applied
            return shuffled, index_unshuffle

        def torch_step(twin, im_q, im_k, perms=None, *, m=None, lr=None):
            self.twin.append(
                {
                    "x_q": im_q.numpy().copy(),
                    "x_k": im_k.numpy().copy(),
                    "m": m,
                    "lr": lr,
                    "perms": [p.numpy().copy() for p in perms],
                }
            )
            return twin_step(twin, im_q, im_k, perms, m=m, lr=lr)

        monkeypatch.setattr(moco.MoCo, "step", our_step)
        monkeypatch.setattr(moco, "batch_shuffle", batch_shuffle)
        monkeypatch.setattr(TorchMoCo, "step", torch_step)

    def take(self):
        taken = self.ours, self.twin
        self.ours, self.twin = [], []
        return taken


def assert_same_inputs(got, expected, what):
    assert len(got) == len(expected), f"{what}: {len(got)} steps, expected {len(expected)}"
    for step, (a, b) in enumerate(zip(got, expected)):
        for view in ("x_q", "x_k"):
            assert a[view].dtype == b[view].dtype and np.array_equal(a[view], b[view]), (
                f"{what}: {view} differs at step {step}"
            )
        assert a["m"] == b["m"] and a["lr"] == b["lr"], f"{what}: m or lr differs at step {step}"
        assert len(a["perms"]) == len(b["perms"]), f"{what}: number of shuffles differs at step {step}"
        for p, q in zip(a["perms"], b["perms"]):
            assert np.array_equal(p, q), f"{what}: shuffle permutation differs at step {step}"


@pytest.mark.parametrize("symmetric", [False, True])
def test_the_twin_our_step_and_the_trainer_see_bit_equal_inputs(folder, tmp_path, monkeypatch, symmetric):
    pytest.importorskip("torch")
    from moco_ref.run.trainer import Trainer

    recorder = Recorder(monkeypatch)
    config = tiny_config(folder, symmetric=symmetric)
    Trainer(TrainConfig.from_dict({**config.to_dict(), "knn_every": 0}), tmp_path / "run").run()
    by_trainer, _ = recorder.take()

    pair = paired(config)
    while not pair.stopped():
        pair.run_epoch()
    ours, twin = recorder.take()

    assert len(by_trainer) == 9
    assert len({s["lr"] for s in by_trainer}) == 3 and len({s["m"] for s in by_trainer}) == 9  # both vary
    assert all(len(s["perms"]) == (2 if symmetric else 1) for s in by_trainer)
    assert_same_inputs(ours, by_trainer, "bench learn's step against the trainer's")
    assert_same_inputs(twin, ours, "the twin's step against ours")


# ------------------------------------------------------------------ (b) float64: the two stay equal
RTOL = 1e-9


@pytest.mark.parametrize("changes", [{}, {"symmetric": True, "mlp": True, "bn_splits": 4, "m_cos": False}])
def test_in_float64_both_implementations_stay_equal_over_paired_epochs(folder, changes):
    pair = paired(tiny_config(folder, dtype="float64", **changes))
    while not pair.stopped():
        losses = pair.run_epoch()
        assert_close(losses["ours"], losses["pytorch"], RTOL, f"mean loss of epoch {pair.epoch}")
    assert pair.global_step == 9
    for prefix, ours, theirs in (
        ("encoder_q", pair.model.encoder_q, pair.twin.encoder_q),
        ("encoder_k", pair.model.encoder_k, pair.twin.encoder_k),
    ):
        torch_state = theirs.state_dict()
        for name, value in ours.state_dict().items():
            assert_close(value, torch_state[name].numpy(), RTOL, f"{prefix}.{name} after 9 steps")
    assert_close(pair.model.queue.state_dict()["queue"], pair.twin.queue.numpy(), RTOL, "queue (D, K)")
    assert pair.model.queue.ptr == pair.twin.ptr
    # moco-ref's measures see the twin's encoder_q exactly: its weights and BatchNorm buffers
    loaded = pair.encoders()["pytorch"].state_dict()
    for name, value in pair.twin.encoder_q.state_dict().items():
        assert np.array_equal(np.asarray(loaded[name]), value.numpy()), f"twin_encoder: {name}"


def test_each_measure_is_of_the_right_encoder_at_the_right_epoch(folder, monkeypatch):
    """run_seed's bookkeeping, with the measures replaced by counters: the kNN of both after epochs 0, 2 and 3
    (--knn-every 2 of 3 epochs), ours of our encoder_q, PyTorch's of the twin's, the final kNN the last point."""
    pytest.importorskip("torch")
    pairs, calls = [], []
    build = learn.PairedTraining.__init__

    def remember(pair, *args):
        build(pair, *args)
        pairs.append(pair)

    def knn(encoder, *args, **kwargs):
        calls.append(("knn", encoder, pairs[0].epoch, pairs[0].global_step))
        return {"top1": float(len(calls))}

    def probe(encoder, *args, **kwargs):
        calls.append(("linear", encoder, pairs[0].epoch, pairs[0].global_step))
        return {"top1": float(len(calls))}

    monkeypatch.setattr(learn.PairedTraining, "__init__", remember)
    monkeypatch.setattr(learn, "knn_accuracy", knn)
    monkeypatch.setattr(learn, "linear_probe", probe)
    record = learn.run_seed(tiny_config(folder, knn_every=2), probe_epochs=1)
    ours = pairs[0].model.encoder_q
    assert [(kind, epoch, step) for kind, _, epoch, step in calls] == [
        ("knn", 0, 0),
        ("knn", 0, 0),
        ("knn", 2, 6),
        ("knn", 2, 6),
        ("knn", 3, 9),
        ("knn", 3, 9),
        ("linear", 3, 9),
        ("linear", 3, 9),
    ]
    assert all((encoder is ours) == (i % 2 == 0) for i, (_, encoder, _, _) in enumerate(calls))
    for name, first in (("ours", 1), ("pytorch", 2)):
        curve = record[name]["knn_curve"]
        assert [(p["epoch"], p["global_step"], p["top1"]) for p in curve] == [
            (0, 0, first),
            (2, 6, first + 2),
            (3, 9, first + 4),
        ]
        assert record[name]["knn_top1"] == first + 4 and record[name]["linear_top1"] == first + 6
        assert len(record[name]["loss"]) == 3
    assert record["seed"] == TINY["seed"] and record["steps"] == 9 and record["steps_per_epoch"] == 3


def test_the_knn_curve_is_measured_where_the_trainers_monitor_measures():
    for every, epochs in ((5, 20), (3, 10), (1, 2), (0, 4)):
        config = TrainConfig(knn_every=every, epochs=epochs)
        due = {e for e in range(1, epochs + 1) if Monitor.due(SimpleNamespace(config=config), e)}
        assert learn.knn_epochs(config) == {0, epochs} | due, (every, epochs)


# ------------------------------------------------------------------ (c) the interval
@pytest.mark.parametrize(
    "p,dof,table",
    [
        (0.975, 1, 12.7062),
        (0.975, 2, 4.3027),
        (0.975, 4, 2.7764),
        (0.975, 9, 2.2622),
        (0.975, 30, 2.0423),
        (0.995, 5, 4.0321),
        (0.95, 10, 1.8125),
        (0.9, 3, 1.6377),
    ],
)
def test_the_t_quantile_matches_the_tables(p, dof, table):
    assert abs(t_quantile(p, dof) - table) < 5e-5
    assert abs(t_quantile(1 - p, dof) + table) < 5e-5  # symmetric
    assert abs(t_cdf(t_quantile(p, dof), dof) - p) < 1e-12


def test_the_incomplete_beta_matches_a_binomial_sum_and_the_cauchy_cdf():
    # I_x(a, n − a + 1) = P(Binomial(n, x) ≥ a) for integers; ν = 1 is the Cauchy distribution.
    x, n, a = 0.4, 4, 2
    assert (
        abs(
            incomplete_beta(a, n - a + 1, x) - sum(math.comb(n, j) * x**j * (1 - x) ** (n - j) for j in range(a, n + 1))
        )
        < 1e-13
    )
    for t in (-3.0, -0.5, 0.0, 0.7, 10.0):
        assert abs(t_cdf(t, 1) - (0.5 + math.atan(t) / math.pi)) < 1e-13


def test_the_paired_interval_against_a_direct_computation():
    ours = [85.0, 87.25, 86.1, 84.9, 88.0]
    theirs = [86.0, 86.5, 87.0, 85.5, 87.1]
    differences = [a - b for a, b in zip(ours, theirs)]
    mean, std = statistics.mean(differences), statistics.stdev(differences)
    half = 2.7764 * std / math.sqrt(5)  # t(0.975; 4) from the table
    result = paired_interval(ours, theirs)
    assert abs(result["mean"] - mean) < 1e-12 and abs(result["std"] - std) < 1e-12 and result["n"] == 5
    assert abs(result["low"] - (mean - half)) < 1e-4 and abs(result["high"] - (mean + half)) < 1e-4
    assert result["contains_zero"] is True
    shifted = paired_interval([a + 3.0 for a in ours], theirs)  # the same spread, 3 points up
    assert shifted["contains_zero"] is False and abs(shifted["low"] - (mean + 3.0 - half)) < 1e-4
    single = paired_interval([80.0], [81.5])
    assert single["mean"] == -1.5 and single["low"] is None and single["contains_zero"] is None


def test_the_summary_and_the_table_of_made_up_runs():
    knn = {"ours": [47.0, 47.4, 45.0], "pytorch": [47.3, 45.2, 46.1]}
    linear = {"ours": [54.4, 56.0, 52.5], "pytorch": [59.6, 55.1, 53.0]}
    runs = [
        {
            "seed": seed,
            **{name: {"knn_top1": knn[name][i], "linear_top1": linear[name][i]} for name in ("ours", "pytorch")},
        }
        for i, seed in enumerate((0, 1, 2))
    ]
    summary = learn_report.summarise(runs)
    assert summary["knn_top1"]["ours"]["mean"] == pytest.approx(statistics.mean(knn["ours"]))
    assert summary["knn_top1"]["pytorch"]["std"] == pytest.approx(statistics.stdev(knn["pytorch"]))
    assert summary["knn_top1"]["difference"] == paired_interval(knn["ours"], knn["pytorch"])
    assert summary["linear_top1"]["difference"]["mean"] == pytest.approx(-4.8 / 3)  # ours − PyTorch
    lines = learn_report.table_lines({"runs": runs, "summary": summary})
    assert lines[2] == "| 0 | 47.00 | 47.30 | -0.30 | 54.40 | 59.60 | -5.20 |"
    assert lines[3] == "| 1 | 47.40 | 45.20 | +2.20 | 56.00 | 55.10 | +0.90 |"
    assert lines[5].startswith("| mean ± std | 46.47 ± 1.29 | 46.20 ± 1.05 | +0.27 ± 1.72 |")
    difference = summary["knn_top1"]["difference"]
    assert lines[7] == (
        f"kNN top-1, ours − PyTorch: +0.27 points, 95 % interval [{difference['low']:+.2f}, "
        f"{difference['high']:+.2f}] (Student's t, 2 degrees of freedom, t = 4.303; width "
        f"{difference['high'] - difference['low']:.2f}): contains 0"
    )


# ------------------------------------------------------------------ (d) no torch, (e) the command
def test_without_torch_the_command_is_one_line_and_exit_2(folder, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    code, out, err = run_cli(["bench", "learn", "--data", folder, "--seeds", "1"], capsys)
    error_line(code, err, "PyTorch", "pip install torch")
    assert out == ""


def test_bench_learn_end_to_end_writes_its_report(folder, tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "learn.json"
    common = [
        "--data",
        folder,
        "--image-size",
        "16",
        "--width",
        "2",
        "--moco-dim",
        "8",
        "--moco-k",
        "32",
        "-b",
        "8",
        "--bn-splits",
        "2",
        "--knn-k",
        "5",
        "--probe-epochs",
        "2",
    ]
    code, stdout, err = run_cli(
        ["bench", "learn", *common, "--seeds", "2", "--epochs", "2", "--knn-every", "1", "--out", out], capsys
    )
    assert code == 0, err
    report = json.loads(out.read_text())
    assert report["seeds"] == [0, 1] and report["probe_epochs"] == 2 and report["config"]["epochs"] == 2
    assert report["header"]["torch"] and report["header"]["cpu"]
    for run, seed in zip(report["runs"], (0, 1)):
        assert run["seed"] == seed and run["steps"] == 6 and run["steps_per_epoch"] == 3
        for name in ("ours", "pytorch"):
            curve = run[name]["knn_curve"]
            assert [p["epoch"] for p in curve] == [0, 1, 2] and [p["global_step"] for p in curve] == [0, 3, 6]
            assert run[name]["knn_top1"] == curve[-1]["top1"]
            assert 0 <= run[name]["linear_top1"] <= 100 and len(run[name]["loss"]) == 2
        assert run["ours"]["knn_curve"][0] == run["pytorch"]["knn_curve"][0]  # the same untrained encoder
    for metric in ("knn_top1", "linear_top1"):
        summary = report["summary"][metric]
        values = {name: [run[name][metric] for run in report["runs"]] for name in ("ours", "pytorch")}
        assert summary["ours"]["mean"] == pytest.approx(statistics.mean(values["ours"]))
        assert summary["difference"] == paired_interval(values["ours"], values["pytorch"])
    rows = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert rows[2].startswith("| 0 |") and rows[3].startswith("| 1 |") and rows[4].startswith("| mean ± std |")
    assert "kNN top-1, ours − PyTorch" in stdout and "95 % interval" in stdout
    logged = [line for line in err.splitlines() if re.match(r"seed \d( epoch \d/2)?: ", line)]
    assert len(logged) == 2 * 4  # before, 2 epochs, linear
    shown = [line.split(" [")[0] for line in err.splitlines() if re.match(r"seed \d epoch \d/2 \d/3 \[", line)]
    assert shown == [f"seed {s} epoch {e}/2 3/3" for s in (0, 1) for e in (1, 2)]  # --log-every 10: the last step
    if learn_report.can_draw():
        assert (tmp_path / "learn.png").stat().st_size > 0

    monkeypatch.setattr(learn_report, "can_draw", lambda: False)  # no matplotlib: a note, no PNG
    picture = tmp_path / "none.png"
    code, stdout, err = run_cli(
        [
            "bench",
            "learn",
            *common,
            "--seed",
            "5",
            "--seeds",
            "1",
            "--epochs",
            "1",
            "--max-steps",
            "1",
            "--png",
            picture,
        ],
        capsys,
    )
    assert code == 0, err
    assert "| 5 |" in stdout and "one seed: no interval" in stdout
    assert [line for line in err.splitlines() if line.startswith("note: ")] == [
        line for line in err.splitlines() if "matplotlib" in line
    ]
    assert len([line for line in err.splitlines() if "matplotlib" in line]) == 1 and not picture.exists()


# ------------------------------------------------------------------ (f) an interrupted or longer run goes on
def fake_record(config, probe_epochs, log, progress=None, **options):
    """A run record with figures made from the seed, for the bookkeeping of run_learn."""
    figures = {"knn_top1": 40.0 + config.seed, "linear_top1": 50.0 + config.seed, "knn_curve": [], "loss": []}
    return {
        "seed": config.seed,
        "steps": 1,
        "steps_per_epoch": 1,
        "ours": dict(figures),
        "pytorch": {**figures, "knn_top1": 41.0 + config.seed},
    }


def test_the_seeds_of_a_report_are_read_back_and_kept_and_only_the_others_trained(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    trained = []

    def run_seed(config, probe_epochs, log, progress=None, **options):
        trained.append(config.seed)
        return fake_record(config, probe_epochs, log)

    monkeypatch.setattr(learn, "run_seed", run_seed)
    out, values = tmp_path / "learn.json", TrainConfig(epochs=3).to_dict()
    first = learn.run_learn(values, seeds=2, probe_epochs=4, out=out)
    assert trained == [0, 1] and first["seeds"] == [0, 1]
    lines = []
    more = learn.run_learn(values, seeds=3, probe_epochs=4, out=out, log=lines.append)
    assert trained == [0, 1, 2] and lines == [f"seed 0: read back from {out}", f"seed 1: read back from {out}"]
    assert more["runs"][:2] == first["runs"] and more["seeds"] == [0, 1, 2]
    other = learn.run_learn(values, seeds=1, first_seed=5, probe_epochs=4, out=out)  # another --seed: kept too
    assert trained == [0, 1, 2, 5] and other["seeds"] == [0, 1, 2, 5]
    assert json.loads(out.read_text())["seeds"] == [0, 1, 2, 5]
    assert other["summary"]["knn_top1"]["difference"]["mean"] == pytest.approx(-1.0)
    assert other["summary"]["knn_top1"]["difference"]["n"] == 4


@pytest.mark.parametrize("change,named", [({"epochs": 4}, "epochs"), ({"K": 64}, "K"), ({}, "probe_epochs")])
def test_a_report_of_another_configuration_is_refused_in_one_line(tmp_path, monkeypatch, change, named):
    pytest.importorskip("torch")
    monkeypatch.setattr(learn, "run_seed", fake_record)
    out, values = tmp_path / "learn.json", TrainConfig(epochs=3).to_dict()
    learn.run_learn(values, seeds=1, probe_epochs=4, out=out)
    kept = out.read_text()
    with pytest.raises(learn.UserError, match=f"differs in {named}"):
        learn.run_learn({**values, **change}, seeds=2, probe_epochs=4 if change else 5, out=out)
    assert out.read_text() == kept  # nothing the user had is lost
    out.write_text("{not json")
    with pytest.raises(learn.UserError, match="is not a report of moco-ref bench learn"):
        learn.run_learn(values, seeds=1, probe_epochs=4, out=out)
