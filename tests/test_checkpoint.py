"""Tests of moco_ref.run.checkpoint: atomic writes, the round trip, and files that must be refused.

A checkpoint is an .npz of plain arrays plus a JSON ``__meta__`` entry, written to a temporary file
and renamed over the target, and read with ``allow_pickle=False``.  Each test writes into tmp_path.
"""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest

from moco_ref.errors import CheckpointError, UserError
from moco_ref.run.checkpoint import META_KEY, load_checkpoint, save_checkpoint


def sample_arrays(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "encoder_q.conv1.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "encoder_k.bn1.running_var": rng.random(4),  # float64
        "encoder_q.bn1.num_batches_tracked": np.array(7, dtype=np.int64),  # 0-d
        "queue": rng.standard_normal((8, 16)).astype(np.float32),
        "queue_ptr": np.array([5], dtype=np.int64),
        "mask": np.array([True, False, True]),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }


def sample_meta() -> dict:
    rng = np.random.default_rng(3)
    return {
        "format": "moco-ref checkpoint v1",
        "epoch": 2,
        "global_step": 17,
        "note": "θ_k ← m·θ_k",
        "config": {"lr": 0.06, "schedule": [120, 160], "cos": True, "data": "builtin"},
        "rng": rng.bit_generator.state,
    }  # PCG64 state: integers wider than 64 bits


def leftovers(folder) -> list[str]:
    """Files in folder other than finished checkpoints (temporary files of an interrupted write)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".npz"))


def refused(path, *phrases) -> str:
    """load_checkpoint(path) must raise a one-line CheckpointError (a UserError) with every phrase."""
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert isinstance(info.value, UserError)
    message = str(info.value)
    assert "\n" not in message, f"message spans lines: {message!r}"
    for phrase in phrases:
        assert phrase in message, f"{phrase!r} not in {message!r}"
    return message


# ---------------------------------------------------------------------------- round trip


def test_round_trip_keeps_every_array_bit_for_bit_and_the_meta(tmp_path):
    arrays, meta = sample_arrays(), sample_meta()
    path = save_checkpoint(tmp_path / "run" / "checkpoint_last.npz", arrays, meta)
    assert path == tmp_path / "run" / "checkpoint_last.npz"  # the folder is created
    loaded, loaded_meta = load_checkpoint(path)
    assert sorted(loaded) == sorted(arrays)  # __meta__ is taken out
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype, name
        assert loaded[name].shape == array.shape, name
        assert np.array_equal(loaded[name], array), name
    assert loaded_meta == meta


def test_rng_state_in_the_meta_restores_the_same_draws(tmp_path):
    rng = np.random.default_rng(12345)
    rng.standard_normal(10)
    save_checkpoint(tmp_path / "c.npz", {}, {"rng": rng.bit_generator.state})
    expected = rng.standard_normal(5)
    _, meta = load_checkpoint(tmp_path / "c.npz")
    restored = np.random.default_rng()
    restored.bit_generator.state = meta["rng"]
    assert np.array_equal(restored.standard_normal(5), expected)


def test_file_is_a_plain_npz_readable_without_pickle(tmp_path):
    path = save_checkpoint(tmp_path / "c.npz", sample_arrays(), sample_meta())
    with np.load(path, allow_pickle=False) as data:
        assert META_KEY in data.files and data[META_KEY].dtype == np.uint8
        assert json.loads(data[META_KEY].tobytes().decode("utf-8"))["global_step"] == 17
        assert all(data[name].dtype != object for name in data.files)


def test_saving_again_replaces_the_file_and_leaves_no_temporary_files(tmp_path):
    save_checkpoint(tmp_path / "c.npz", sample_arrays(0), {"step": 1})
    save_checkpoint(tmp_path / "c.npz", sample_arrays(1), {"step": 2})
    arrays, meta = load_checkpoint(tmp_path / "c.npz")
    assert meta == {"step": 2}
    assert np.array_equal(arrays["queue"], sample_arrays(1)["queue"])
    assert leftovers(tmp_path) == [] and [p.name for p in tmp_path.iterdir()] == ["c.npz"]


# ----------------------------------------------------------------------- atomic writes


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()], ids=["OSError", "KeyboardInterrupt"])
def test_a_write_that_fails_half_way_keeps_the_previous_checkpoint(tmp_path, monkeypatch, failure):
    path = save_checkpoint(tmp_path / "checkpoint_last.npz", sample_arrays(0), {"step": 1})
    before = path.read_bytes()

    def savez_then_fail(file, **arrays):
        file.write(b"PK\x03\x04 half a zip archive")  # some bytes reach the temporary file ...
        raise failure  # ... then the write dies

    monkeypatch.setattr(np, "savez", savez_then_fail)
    with pytest.raises(type(failure)):
        save_checkpoint(path, sample_arrays(1), {"step": 2})
    assert path.read_bytes() == before, "the previous checkpoint was touched"
    assert leftovers(tmp_path) == [], "a temporary file was left behind"
    assert load_checkpoint(path)[1] == {"step": 1}


def test_a_failed_rename_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "checkpoint_last.npz", sample_arrays(0), {"step": 1})
    before = path.read_bytes()

    def no_rename(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError, match="rename failed"):
        save_checkpoint(path, sample_arrays(1), {"step": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_the_temporary_file_lives_beside_the_target(tmp_path, monkeypatch):
    """The rename is atomic only within one file system: the temporary file must be in the same folder."""
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((os.path.dirname(os.path.abspath(src)), os.path.abspath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    save_checkpoint(tmp_path / "c.npz", sample_arrays(), {})
    assert seen == [(str(tmp_path), str(tmp_path / "c.npz"))]


# ------------------------------------------------------------------ files that are refused


class OpensAFile:
    """Unpickling this object calls open(marker, "w"): proof that the pickle ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_an_object_array_is_refused_and_its_pickle_never_runs(tmp_path):
    marker = tmp_path / "pickle-ran"
    path = tmp_path / "evil.npz"
    meta = np.frombuffer(json.dumps({"epoch": 0}).encode(), dtype=np.uint8)
    np.savez(path, payload=np.array([OpensAFile(marker)], dtype=object), **{META_KEY: meta})

    refused(path, "allow_pickle=False")
    assert not marker.exists(), "the pickled payload was executed"

    # The payload is live: loading it with pickle allowed does run it (so the check above can fail).
    with np.load(path, allow_pickle=True) as data:
        data["payload"][0].close()
    assert marker.exists()


def test_a_file_without_meta_is_refused(tmp_path):
    np.savez(tmp_path / "plain.npz", queue=np.zeros((4, 8), dtype=np.float32))
    refused(tmp_path / "plain.npz", "not a moco-ref checkpoint", META_KEY)


def test_meta_that_is_not_utf8_json_is_refused(tmp_path):
    np.savez(tmp_path / "c.npz", queue=np.zeros(3), **{META_KEY: np.frombuffer(b"\xff\xfe{", dtype=np.uint8)})
    refused(tmp_path / "c.npz", "corrupt metadata")


@pytest.mark.parametrize("meta", [b"[1, 2]", b"17", b'"text"', b"null"])
def test_meta_that_is_not_a_json_object_is_refused(tmp_path, meta):
    np.savez(tmp_path / "c.npz", queue=np.zeros(3), **{META_KEY: np.frombuffer(meta, dtype=np.uint8)})
    refused(tmp_path / "c.npz", "corrupt metadata", "not a JSON object")


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_a_truncated_file_is_refused(tmp_path, keep):
    path = save_checkpoint(tmp_path / "c.npz", sample_arrays(), sample_meta())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    refused(path, str(path))


def test_a_file_with_damaged_bytes_inside_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "c.npz", {"queue": np.arange(4096, dtype=np.float32)}, {})
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.getinfo("queue.npy")
    middle = info.header_offset + 200 + info.compress_size // 2  # inside the stored array bytes
    data[middle : middle + 8] = b"\x00\x11\x22\x33\x44\x55\x66\x77"
    path.write_bytes(bytes(data))
    refused(path, "cannot read checkpoint")


@pytest.mark.parametrize(
    "content", [b"", b"not a checkpoint at all\n", b"\x80\x04K\x01."], ids=["empty", "text", "a pickle"]
)
def test_files_that_are_not_npz_archives_are_refused(tmp_path, content):
    (tmp_path / "c.npz").write_bytes(content)
    refused(tmp_path / "c.npz", "not a moco-ref checkpoint")


def test_a_npy_file_named_npz_is_refused(tmp_path):
    with open(tmp_path / "c.npz", "wb") as f:
        np.save(f, np.zeros(3))
    refused(tmp_path / "c.npz", "not a moco-ref checkpoint")


def test_a_missing_file_and_a_folder_are_refused(tmp_path):
    refused(tmp_path / "nothing.npz", "not found")
    refused(tmp_path, "not found")
