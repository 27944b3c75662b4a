"""`moco-ref bench learn --control --drift EVERY`: PyTorch′ starts one ulp off the twin and takes the same steps,
the drift instrument measures the right models, and the report and the table carry both differences.

In float64 ours and the twin are the same program (tests/test_bench_learn.py), so the drift of ours from
PyTorch stays at rounding level while PyTorch′, nudged at the start, is never equal to PyTorch; in float32
the drift record has every layer and finite values.  The tests of the spread comparison check the F and
Welch tests against tables and the formulas, and the permutation test on cases whose answer is known.
"""

import json
import math
import statistics

import numpy as np
import pytest
from helpers import TINY_LEARN as TINY
from helpers import run_cli

from moco_ref.bench import drift, learn, learn_report
from moco_ref.bench.intervals import exchangeable_test, f_cdf, t_cdf, variance_ratio_test, welch_test
from moco_ref.data import load_dataset
from moco_ref.run.config import TrainConfig


def paired(folder, drift_every=0, **changes) -> learn.PairedTraining:
    pytest.importorskip("torch")
    config = TrainConfig(**{**TINY, "data": folder, **changes})
    train = load_dataset(config.data, "train", config.image_size, config.seed)
    return learn.PairedTraining(config, train, control=True, drift_every=drift_every)


def train(pair) -> None:
    pair.drift.observe(pair)  # step 0, as run_seed does
    while not pair.stopped():
        pair.run_epoch()
    pair.drift.observe(pair, force=True)


# ------------------------------------------------------------------ PyTorch′: one ulp off, nothing else
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_control_starts_one_ulp_off_the_twin_in_every_parameter_and_equal_elsewhere(folder, dtype):
    pair = paired(folder, dtype=dtype)
    twin, control = pair.twin, pair.control
    twin_q, control_q = twin.encoder_q.state_dict(), control.encoder_q.state_dict()
    parameters = {name for name, _ in twin.encoder_q.named_parameters()}
    ups = []
    for name, value in twin_q.items():
        a, b = value.numpy(), control_q[name].numpy()
        assert a.dtype == b.dtype == (np.dtype(dtype) if a.dtype.kind == "f" else a.dtype)
        if name in parameters:
            one_ulp = (b == np.nextafter(a, np.inf)) | (b == np.nextafter(a, -np.inf))
            assert np.all(a != b) and np.all(one_ulp), f"{name}: not every element one ulp off the twin's"
            ups.append((b > a).ravel())
        else:
            assert np.array_equal(a, b), f"{name}: a buffer differs"
    assert 0.45 < np.concatenate(ups).mean() < 0.55  # up or down, half each
    for name, value in control.encoder_k.state_dict().items():  # encoder_k starts as a copy of encoder_q
        assert np.array_equal(value.numpy(), control_q[name].numpy()), f"encoder_k.{name}"
    assert np.array_equal(control.queue.numpy(), twin.queue.numpy()) and control.ptr == twin.ptr
    assert control.optimizer.defaults == twin.optimizer.defaults and (control.m, control.T) == (twin.m, twin.T)


def test_the_control_takes_the_twins_steps(folder, monkeypatch):
    """Every step of PyTorch′ receives what the twin's receives: the same views, permutations, m and lr."""
    pytest.importorskip("torch")
    from moco_ref.pytorch_moco import TorchMoCo

    calls = []
    step = TorchMoCo.step

    def recorded(twin, im_q, im_k, perms=None, *, m=None, lr=None):
        calls.append((twin, im_q.numpy().copy(), im_k.numpy().copy(), [p.numpy().copy() for p in perms], m, lr))
        return step(twin, im_q, im_k, perms, m=m, lr=lr)

    monkeypatch.setattr(TorchMoCo, "step", recorded)
    pair = paired(folder, max_steps=4)
    train(pair)
    assert [call[0] for call in calls] == [pair.twin, pair.control] * 4
    for twin_call, control_call in zip(calls[::2], calls[1::2]):
        for a, b in zip(twin_call[1:3], control_call[1:3]):
            assert np.array_equal(a, b)
        assert all(np.array_equal(p, q) for p, q in zip(twin_call[3], control_call[3]))
        assert twin_call[4:] == control_call[4:]


# ------------------------------------------------------------------ the drift instrument
def test_relative_distance():
    assert drift.relative_distance([3.0, 4.0], [3.0, 4.0]) == 0.0
    assert drift.relative_distance([3.0, 5.0], [3.0, 4.0]) == pytest.approx(1 / 5)
    assert drift.relative_distance(np.zeros(3), np.zeros(3)) == 0.0  # ‖a − b‖ where b is zero
    assert drift.relative_distance([0.0, 2.0], [0.0, 0.0]) == 2.0
    assert drift.relative_distance(np.full(4, 5e-324), np.zeros(4)) > 0  # one ulp off zero: subnormal, not 0


def test_in_float64_ours_stays_on_pytorch_and_the_control_does_not(folder):
    pair = paired(folder, drift_every=2, dtype="float64")
    train(pair)
    record = pair.drift.record()
    parameters = list(pair.model.encoder_q.params)
    assert record["every"] == 2 and record["steps"] == [0, 2, 4, 6, 8, 9]
    running = [name for name in pair.model.encoder_q.buffers if not name.endswith("num_batches_tracked")]
    assert sorted(record["layers"]) == sorted(parameters + running + ["queue"]) and len(running) > 0
    for step, ours in zip(record["steps"], record["ours_vs_pytorch"]):
        worst = int(np.argmax(ours))
        assert ours[worst] <= 1e-10, f"step {step}: ours is {ours[worst]:.2e} from PyTorch in {record['layers'][worst]}"
    first = dict(zip(record["layers"], record["control_vs_pytorch"][0]))
    for name, distance in first.items():  # one ulp in parameters only: at most 2⁻⁵² relative
        if name in parameters:
            assert 0 < distance <= 2.0**-52, f"{name}: PyTorch′ starts {distance:.2e} from PyTorch"
        else:
            assert distance == 0.0, f"{name}: PyTorch′ starts {distance:.2e} from PyTorch"
    for step, control in zip(record["steps"][1:], record["control_vs_pytorch"][1:]):
        assert max(control) > 0.0 and all(math.isfinite(d) for d in control), f"step {step}"


def test_in_float32_the_drift_record_has_every_layer_and_finite_values(folder):
    pair = paired(folder, drift_every=4, max_steps=5)
    train(pair)
    record = pair.drift.record()
    assert record["steps"] == [0, 4, 5]
    layers = len(record["layers"])
    assert (
        record["layers"][-1] == "queue" and "conv1.weight" in record["layers"] and "bn1.running_var" in record["layers"]
    )
    for key in ("ours_vs_pytorch", "control_vs_pytorch"):
        rows = record[key]
        assert len(rows) == 3 and all(len(row) == layers for row in rows)
        assert all(math.isfinite(d) and d >= 0 for row in rows for d in row)
    assert max(record["ours_vs_pytorch"][0]) == 0.0  # the same start
    assert max(record["ours_vs_pytorch"][-1]) > 0.0  # two programs, two roundings
    lines = drift.summary_lines(4, record)
    assert lines[0] == f"seed 4 drift, median over {layers} layers of ‖a − b‖/‖b‖:"
    assert lines[1].startswith("  ours − PyTorch: step 0 ") and lines[2].startswith("  PyTorch′ − PyTorch: step 0 ")
    assert "step 5 " in lines[1] and "largest" in lines[3] and "largest" in lines[4]


# ------------------------------------------------------------------ the spreads compared
def test_the_f_and_welch_tests_against_the_tables_and_the_formulas():
    assert abs(f_cdf(4.5337, 4, 6) - 0.95) < 1e-4  # F(0.95; 4, 6)
    assert abs(f_cdf(15.439, 3, 3) - 0.975) < 1e-4  # F(0.975; 3, 3)
    assert abs(f_cdf(1.0, 5, 5) - 0.5) < 1e-12
    a, b = [1.0, 2.5, 3.0, 5.0, 4.2], [1.0, 1.1, 1.3, 0.9]
    f = variance_ratio_test(a, b)
    assert f["f"] == pytest.approx(statistics.variance(a) / statistics.variance(b)) and f["dof"] == [4, 3]
    assert f["p"] == pytest.approx(2 * (1 - f_cdf(f["f"], 4, 3)))
    va, vb = statistics.variance(a) / 5, statistics.variance(b) / 4
    welch = welch_test(a, b)
    assert welch["t"] == pytest.approx((statistics.mean(a) - statistics.mean(b)) / math.sqrt(va + vb))
    assert welch["dof"] == pytest.approx((va + vb) ** 2 / (va**2 / 4 + vb**2 / 3))
    assert welch["p"] == pytest.approx(2 * (1 - t_cdf(abs(welch["t"]), welch["dof"])))
    assert variance_ratio_test([1.0], b)["p"] is None and welch_test([1.0], b)["p"] is None


def test_the_permutation_test_knows_chaos_from_a_shift():
    base = [70.0, 74.5, 77.0, 71.2, 75.3]
    shifted = exchangeable_test([x + 10 for x in base], base, [x + 0.1 for x in base])
    assert shifted["exact"] and shifted["relabellings"] == 6**5 and shifted["p"] < 0.01
    same = exchangeable_test(base, base, base)  # nothing to tell apart: every relabelling ties
    assert same["statistic"] == 0.0 and same["p"] == 1.0
    many = exchangeable_test(base * 2, base * 2, base * 2, draws=500)
    assert not many["exact"] and many["relabellings"] == 500


# ------------------------------------------------------------------ the summary, the table, the command
def made_up_runs():
    knn = {"ours": [77.6, 74.0, 71.5], "pytorch": [70.3, 75.1, 72.0], "control": [73.0, 71.2, 76.4]}
    linear = {"ours": [80.0, 81.0, 79.0], "pytorch": [79.5, 80.0, 80.5], "control": [80.0, 79.0, 81.0]}
    return [
        {
            "seed": seed,
            **{name: {"knn_top1": knn[name][i], "linear_top1": linear[name][i]} for name in knn},
        }
        for i, seed in enumerate((11, 12, 13))
    ]


def test_the_summary_and_the_table_carry_both_differences():
    runs = made_up_runs()
    summary = learn_report.summarise(runs)
    knn = summary["knn_top1"]
    assert knn["difference"]["differences"] == pytest.approx([7.3, -1.1, -0.5])  # ours − PyTorch
    assert knn["control_difference"]["differences"] == pytest.approx([-2.7, 3.9, -4.4])  # PyTorch − PyTorch′
    assert knn["control"]["mean"] == pytest.approx(statistics.mean([73.0, 71.2, 76.4]))
    spreads = knn["spreads"]
    assert spreads["ours_vs_pytorch_std"] == knn["difference"]["std"]
    assert spreads["pytorch_vs_control_std"] == knn["control_difference"]["std"]
    assert spreads["f_test"]["p"] is not None and spreads["welch"]["p"] is not None
    assert spreads["permutation"]["exact"] and spreads["permutation"]["relabellings"] == 216
    lines = learn_report.table_lines({"runs": runs, "summary": summary})
    assert lines[0] == (
        "| seed | kNN ours | kNN PyTorch | kNN PyTorch′ | kNN ours − PyTorch | kNN PyTorch − PyTorch′ | linear ours "
        "| linear PyTorch | linear PyTorch′ | linear ours − PyTorch | linear PyTorch − PyTorch′ |"
    )
    assert lines[2] == "| 11 | 77.60 | 70.30 | 73.00 | +7.30 | -2.70 | 80.00 | 79.50 | 80.00 | +0.50 | -0.50 |"
    text = "\n".join(lines)
    assert "kNN top-1, ours − PyTorch: " in text and "kNN top-1, PyTorch − PyTorch′: " in text
    d, c = knn["difference"], knn["control_difference"]
    row = next(line for line in lines if line.startswith("| ours − PyTorch (bias and chaos) |"))
    assert f"| {d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] |" in row
    row = next(line for line in lines if line.startswith("| PyTorch − PyTorch′ (chaos alone) |"))
    assert f"| {c['mean']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}] |" in row
    assert any(line.startswith("kNN top-1: std of ours − PyTorch ") and "permutations" in line for line in lines)
    plain = learn_report.table_lines(
        {
            "runs": runs,
            "summary": learn_report.summarise([{k: v for k, v in r.items() if k != "control"} for r in runs]),
        }
    )
    assert "PyTorch′" not in "\n".join(plain)  # without the control, the table of before


def fake_record(config, probe_epochs, log, progress=None, control=False, drift_every=0):
    figures = {"knn_top1": 40.0 + config.seed, "linear_top1": 50.0 + config.seed, "knn_curve": [], "loss": []}
    record = {"seed": config.seed, "steps": 1, "steps_per_epoch": 1, "ours": dict(figures), "pytorch": dict(figures)}
    if control:
        record["control"] = {**figures, "knn_top1": 39.0 + config.seed}
    return record


def test_resuming_keeps_the_control_and_refuses_a_report_without_it(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    trained = []

    def run_seed(config, *args, **options):
        trained.append((config.seed, options["control"]))
        return fake_record(config, *args, **options)

    monkeypatch.setattr(learn, "run_seed", run_seed)
    out, values = tmp_path / "learn.json", TrainConfig(epochs=3).to_dict()
    first = learn.run_learn(values, seeds=2, probe_epochs=4, out=out, control=True)
    more = learn.run_learn(values, seeds=3, probe_epochs=4, out=out, control=True)
    assert trained == [(0, True), (1, True), (2, True)]
    assert more["runs"][:2] == first["runs"] and all("control" in run for run in more["runs"])
    written = json.loads(out.read_text())
    assert written["control"] is True and written["summary"]["knn_top1"]["control_difference"]["n"] == 3
    assert written["summary"]["knn_top1"]["control_difference"]["mean"] == pytest.approx(1.0)
    with pytest.raises(learn.UserError, match="differs in --control"):
        learn.run_learn(values, seeds=4, probe_epochs=4, out=out)
    plain = tmp_path / "plain.json"
    learn.run_learn(values, seeds=1, probe_epochs=4, out=plain)
    with pytest.raises(learn.UserError, match="differs in --control"):
        learn.run_learn(values, seeds=2, probe_epochs=4, out=plain, control=True)


def test_bench_learn_control_and_drift_end_to_end(folder, tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "learn.json"
    flags = ["--data", folder, "--image-size", "16", "--width", "2", "--moco-dim", "8", "--moco-k", "32", "-b", "8"]
    flags += ["--bn-splits", "2", "--knn-k", "5", "--probe-epochs", "2", "--epochs", "1", "--png", tmp_path / "p.png"]
    code, stdout, err = run_cli(
        ["bench", "learn", *flags, "--seeds", "2", "--control", "--drift", "2", "--out", out], capsys
    )
    assert code == 0, err
    report = json.loads(out.read_text())
    assert report["control"] is True and report["seeds"] == [0, 1]
    for run in report["runs"]:
        assert 0 <= run["control"]["knn_top1"] <= 100 and 0 <= run["control"]["linear_top1"] <= 100
        assert run["control"]["knn_curve"][0]["top1"] == run["pytorch"]["knn_curve"][0]["top1"]
        assert run["drift"]["steps"] == [0, 2, 3] and len(run["drift"]["control_vs_pytorch"]) == 3
    for metric in ("knn_top1", "linear_top1"):
        summary = report["summary"][metric]
        assert set(summary) == {"ours", "pytorch", "control", "difference", "control_difference", "spreads"}
    assert "| kNN PyTorch′ |" in stdout and "| kNN PyTorch − PyTorch′ |" in stdout
    assert "linear top-1, PyTorch − PyTorch′: " in stdout and "| PyTorch − PyTorch′ (chaos alone) |" in stdout
    assert err.count("drift, median over") == 2
    assert "loss ours " in err and "PyTorch′ " in err
