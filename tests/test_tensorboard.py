"""``moco-ref train --tensorboard``: TensorBoard's own reader (event_accumulator) sees every number of metrics.jsonl's
time series once, at its step, with the chance levels, the configuration as hyper-parameters and the probe set for
the Projector; a resumed run appends without a step twice, also after a run that logged past its checkpoint."""

import json
import math
import shutil
from types import SimpleNamespace

import pytest
from helpers import run_cli, write_image_folder

from moco_ref.run.directory import LOCK_NAME
from moco_ref.run.tensorboard import scalars

pytest.importorskip("tensorboardX")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

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
    "1",
    "--epochs",
    "3",
    "--tensorboard",
]
STEP_FIELDS = ("loss", "acc1", "lr", "m", "images_per_s", "data_share")
EPOCH_FIELDS = ("loss", "acc1", "lr", "seconds")


def expected_series(records: list[dict]) -> dict:
    """{tag: [(step, value)]}: what TensorBoard must hold of the metrics, derived here field by field."""
    series = {}

    def add(tag, step, value):
        if value is not None:
            series.setdefault(tag, []).append((step, value))

    for r in records:
        step = r["global_step"]
        if r["kind"] == "step":
            for name in STEP_FIELDS:
                add(f"step/{name}", step, r[name])
        elif r["kind"] == "epoch" and r["complete"]:
            for name in EPOCH_FIELDS:
                add(f"epoch/{name}", step, r[name])
        elif r["kind"] == "instruments":
            for name, value in r.items():
                if name not in ("kind", "epoch", "global_step"):
                    add(f"instruments/{name}", step, value)
        if r["kind"] != "final" and "knn_top1" in r:
            add("knn/top1", step, r["knn_top1"])
    return series


def read_back(tb) -> event_accumulator.EventAccumulator:
    accumulator = event_accumulator.EventAccumulator(str(tb), size_guidance={event_accumulator.SCALARS: 0})
    accumulator.Reload()
    return accumulator


def assert_tensorboard_holds_the_metrics(run_dir) -> dict:
    """Every tag's steps and values against metrics.jsonl (float32 in the event files); returns {tag: steps}."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    expected = expected_series(records)
    accumulator = read_back(run_dir / "tb")
    tags = set(accumulator.Tags()["scalars"])
    assert tags == set(expected) | {"chance/loss", "chance/acc1"}, tags ^ (
        set(expected) | {"chance/loss", "chance/acc1"}
    )
    shown = {}
    for tag, points in expected.items():
        events = accumulator.Scalars(tag)
        assert [e.step for e in events] == [step for step, _ in points], f"{tag}: steps"
        for event, (step, value) in zip(events, points):
            assert event.value == pytest.approx(value, rel=1e-6, abs=1e-6), f"{tag} at step {step}"
        shown[tag] = [e.step for e in events]
    steps = [step for step, _ in expected["step/loss"]]
    for tag, level in (("chance/loss", math.log(21)), ("chance/acc1", 100 / 21)):  # K = 20
        events = accumulator.Scalars(tag)
        assert [e.step for e in events] == steps and all(e.value == pytest.approx(level) for e in events), tag
    return shown


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("images"), size=20)  # 24 training images: 3 steps an epoch


def test_a_run_writes_every_number_of_its_metrics_once_at_its_step(tmp_path, data, capsys):
    run_dir = tmp_path / "run"
    code, _, err = run_cli(["train", "--data", str(data), *TINY, "--out", str(run_dir)], capsys)
    assert code == 0, err
    shown = assert_tensorboard_holds_the_metrics(run_dir)
    assert shown["step/loss"] == list(range(1, 10)) and shown["epoch/loss"] == [3, 6, 9]
    assert shown["knn/top1"] == [0, 3, 6, 9] and shown["instruments/alignment"] == [0, 3, 6, 9]


def test_the_configuration_is_the_hyper_parameters(tmp_path, data, capsys):
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_dir = tmp_path / "run"
    code, _, err = run_cli(["train", "--data", str(data), *TINY, "--max-steps", "1", "--out", str(run_dir)], capsys)
    assert code == 0, err
    content = read_back(run_dir / "tb").PluginTagToContent("hparams")
    starts = [plugin_data_pb2.HParamsPluginData.FromString(c).session_start_info for c in content.values()]
    hparams = next(s.hparams for s in starts if s.hparams)
    config = json.loads((run_dir / "config.json").read_text())
    assert hparams["K"].number_value == config["K"] == 20 and hparams["T"].number_value == pytest.approx(0.2)
    assert hparams["tensorboard"].bool_value is True and hparams["data"].string_value == str(data)
    assert hparams["schedule"].string_value == "[120, 160]"
    assert set(hparams) == set(config)


def test_the_probe_set_is_written_for_the_projector_with_its_labels_and_images(tmp_path, data, capsys):
    run_dir = tmp_path / "run"
    code, _, err = run_cli(["train", "--data", str(data), *TINY, "--max-steps", "2", "--out", str(run_dir)], capsys)
    assert code == 0, err
    projector = (run_dir / "tb" / "projector_config.pbtxt").read_text()
    assert 'tensor_name: "probe_set:00002"' in projector and "sprite.png" in projector, projector
    folder = run_dir / "tb" / "00002" / "probe_set"
    rows = [[float(x) for x in line.split("\t")] for line in (folder / "tensors.tsv").read_text().splitlines()]
    assert len(rows) == 8 and all(len(row) == 16 for row in rows)  # the 8 held-out images, dim 16
    assert all(sum(x * x for x in row) == pytest.approx(1, abs=1e-4) for row in rows)  # normalised outputs
    assert sorted(set((folder / "metadata.tsv").read_text().split())) == ["0", "1"]
    assert (folder / "sprite.png").stat().st_size > 0


def started_at(monkeypatch, second: int) -> None:
    """The event files written from now on are named for ``second`` (each run of a test, a second of its own; in
    the same second two runs from the same step share a file name, and the later one replaces the earlier)."""
    import tensorboardX.event_file_writer

    monkeypatch.setattr(tensorboardX.event_file_writer, "time", SimpleNamespace(time=lambda: float(second)))


def test_a_resumed_run_appends_and_no_step_appears_twice(tmp_path, data, capsys, monkeypatch):
    """Stopped at step 4 (mid-epoch, --max-steps); resumed to step 7, a run that logged past the checkpoint of
    step 4; then resumed again from that checkpoint to the end: steps 5 to 7 are in TensorBoard once, the
    second time's."""
    run_dir = tmp_path / "run"
    started_at(monkeypatch, 1800000000)
    assert run_cli(["train", "--data", str(data), *TINY, "--max-steps", "4", "--out", str(run_dir)], capsys)[0] == 0
    at_step_4 = shutil.copy(run_dir / "checkpoint_last.npz", run_dir / "step4.npz")  # kept in the run's folder
    started_at(monkeypatch, 1800000010)
    assert run_cli(["train", "--resume", str(run_dir), "--max-steps", "7"], capsys)[0] == 0
    started_at(monkeypatch, 1800000020)
    assert read_back(run_dir / "tb").Scalars("step/loss")[-1].step == 7
    code, _, err = run_cli(["train", "--resume", str(at_step_4)], capsys)
    assert code == 0, err
    assert len(list((run_dir / "tb").glob("events.out.tfevents.*"))) == 3
    shown = assert_tensorboard_holds_the_metrics(run_dir)
    assert shown["step/loss"] == list(range(1, 10)) and shown["epoch/loss"] == [3, 6, 9]
    assert shown["knn/top1"] == [0, 3, 6, 9]


def test_a_fresh_run_starts_with_no_events_of_an_earlier_one(tmp_path, data, capsys):
    """A run that stopped before its first checkpoint (its .lock written, TensorBoard's events too) starts again in
    its folder without the earlier start's events."""
    run_dir = tmp_path / "run"
    (run_dir / "tb").mkdir(parents=True)
    (run_dir / LOCK_NAME).write_text("")
    (run_dir / "tb" / "events.out.tfevents.0000000001.old").write_bytes(b"")
    assert run_cli(["train", "--data", str(data), *TINY, "--max-steps", "1", "--out", str(run_dir)], capsys)[0] == 0
    assert not (run_dir / "tb" / "events.out.tfevents.0000000001.old").exists()


def test_records_that_are_not_time_series_give_no_scalars():
    assert scalars({"kind": "final", "global_step": 9, "loss": 1.0, "knn_top1": 50.0}) == []
    assert scalars({"kind": "epoch", "global_step": 4, "loss": 1.0, "complete": False}) == []
    assert scalars({"kind": "knn", "epoch": 0, "global_step": 0, "knn_top1": 12.5, "untrained": True}) == [
        ("knn/top1", 12.5)
    ]
    assert scalars(
        {"kind": "instruments", "global_step": 3, "key_drift": None, "uniformity": -1.5, "logit_pos": float("nan")}
    ) == [("instruments/uniformity", -1.5)]
