"""Checkpoints: one ``.npz`` of named arrays plus JSON metadata, written atomically, read without pickle.

This module alone knows the file: its entries, their prefixes and the format tag.  The trainer hands it the
state dicts of the state's owners (MoCo's, the monitor's, its own) and gets them back the same way
(:func:`checkpoint_entries`, :func:`checkpoint_states`).  Layout of a file (all entries are plain arrays,
so ``numpy.load(path, allow_pickle=False)`` reads it):

    encoder_q.<name>, encoder_k.<name>   both encoders, PyTorch names and layouts     (MoCo)
    queue (D, K), queue_ptr (1,)         the key queue, the official form             (MoCo)
    optimizer.momentum_buffer.<name>     SGD state of the query encoder               (MoCo's optimiser)
    instruments.probe_keys (n, D)        the probe keys of the last measurement       (the monitor, with
    instruments.queue_labels (K,)        the class behind each queue slot (−1: none)  the instruments on)
    __meta__                             UTF-8 JSON as uint8, the object below

    {"format": "moco-ref checkpoint v1",
     "epoch", "step_in_epoch", "global_step"     where the run stands                 (the trainer)
     "arch", "config", "world_size"              the run's settings and processes     (the trainer)
     "logged_this_epoch": {"loss", "acc1", "count"}  sums of the epoch's records      (the trainer)
     "knn_top1_untrained"                        the untrained encoder's kNN (%)      (the monitor)
     "rng": {"augment",                          the augmentation generator's state   (the trainer)
             "shuffle"}                          the shuffle generator's state        (MoCo)}

Each epoch's data order has no entry: it is derived from the seed and the epoch (moco_ref/run/epoch.py).  A
checkpoint of an earlier version also holds "rng": {"data_epoch_start"}, the state of the generator that drew
its epoch's order: it reads as any other (the entry is ignored), and the run continues with the orders of
``epoch_order``.

Reading refuses a checkpoint whose float arrays hold a NaN or ±inf (moco_ref/run/finite.py decides), naming
the first such array: every reader (resume, eval, export, show, ablate) gets a finite state or one line.

Writing goes to a temporary file in the same folder, which is flushed,
fsync'ed and renamed over the target: a crash at any moment leaves either the
old checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from backends import to_numpy
from moco_ref.errors import CheckpointError
from moco_ref.run.finite import first_non_finite

META_KEY = "__meta__"
FORMAT = "moco-ref checkpoint v1"
OPTIMIZER, INSTRUMENTS = "optimizer.", "instruments."  # the prefixes of the optimiser's and the monitor's arrays
# The entries of the owners' state dicts that go into the metadata rather than the arrays.
MODEL_META, MONITOR_META = ("optimizer", "shuffle_rng"), ("knn_top1_untrained",)


def model_arrays(model: dict) -> dict:
    """The arrays of ``MoCo.state_dict()`` by their names in the file (encoder_q.*, encoder_k.*, queue, queue_ptr,
    optimizer.*): the arrays themselves, on their device."""
    arrays = {name: a for name, a in model.items() if name not in MODEL_META}
    arrays.update({OPTIMIZER + name: a for name, a in model["optimizer"].items()})
    return arrays


def checkpoint_entries(model: dict, monitor: dict, trainer: dict) -> tuple[dict, dict]:
    """(arrays, meta) of a run's checkpoint, from the state dicts of MoCo, the monitor and the trainer (the
    layout in the module docstring)."""
    arrays = model_arrays(model)
    arrays.update({INSTRUMENTS + name: a for name, a in monitor.items() if name not in MONITOR_META})
    meta = {
        "format": FORMAT,
        "epoch": trainer["epoch"],
        "step_in_epoch": trainer["step_in_epoch"],
        "global_step": trainer["global_step"],
        "arch": trainer["arch"],
        "config": trainer["config"],
        "world_size": trainer["world_size"],
        "logged_this_epoch": trainer["logged_this_epoch"],
        "knn_top1_untrained": monitor.get("knn_top1_untrained"),
        "rng": {"augment": trainer["rng"]["augment"], "shuffle": model["shuffle_rng"]},
    }
    return arrays, meta


def checkpoint_states(arrays: dict, meta: dict) -> tuple[dict, dict, dict]:
    """The state dicts of MoCo, the monitor and the trainer held by a checkpoint's (arrays, meta): the inverse of
    :func:`checkpoint_entries`.  A checkpoint of an earlier version lacks what it did not write (the logged
    sums, the untrained kNN, the instruments' arrays): those entries are left out, or None; what it wrote and
    this version does not (the "data_epoch_start" generator state) is ignored."""
    prefixed = (OPTIMIZER, INSTRUMENTS)
    model = {name: a for name, a in arrays.items() if not name.startswith(prefixed)}
    model["optimizer"] = {name[len(OPTIMIZER) :]: a for name, a in arrays.items() if name.startswith(OPTIMIZER)}
    model["shuffle_rng"] = meta["rng"]["shuffle"]
    monitor = {name[len(INSTRUMENTS) :]: a for name, a in arrays.items() if name.startswith(INSTRUMENTS)}
    monitor["knn_top1_untrained"] = meta.get("knn_top1_untrained")
    trainer = {name: meta[name] for name in ("epoch", "step_in_epoch", "global_step") if name in meta}
    trainer.update({name: meta[name] for name in ("arch", "config", "logged_this_epoch") if name in meta})
    trainer["world_size"] = meta.get("world_size", 1)
    trainer["rng"] = {"augment": meta["rng"]["augment"]}  # an earlier version's "data_epoch_start" is ignored
    return model, monitor, trainer


def save_checkpoint(path, arrays: dict, meta: dict) -> Path:
    """Atomically writes ``arrays`` (host or device) and the JSON-able ``meta`` to ``path``."""
    payload = {name: to_numpy(a) for name, a in arrays.items()}
    payload[META_KEY] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    return write_atomically(path, lambda f: np.savez(f, **payload))  # type: ignore[arg-type]  # numpy's stub reads **arrays as allow_pickle


def write_atomically(path, write) -> Path:
    """Calls ``write(file)`` on a temporary file beside ``path``, then fsyncs it and renames it over ``path``.

    The file gets the permissions an ordinary ``open`` would give (mkstemp's are 0600), and the folder
    is fsync'ed too so that the rename itself survives a crash.  On any error the temporary file is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def load_checkpoint(path) -> tuple[dict, dict]:
    """Reads a checkpoint written by :func:`save_checkpoint`; returns (arrays, meta).

    Raises:
        CheckpointError: missing, not a moco-ref checkpoint, truncated or unreadable, or an array holds a
            NaN or ±inf (the line names the first such array).
    """
    path = Path(path)
    arrays = _read(path, lambda data: {name: data[name] for name in data.files})
    if META_KEY not in arrays:
        raise CheckpointError(f"{path} is not a moco-ref checkpoint (no {META_KEY} entry)")
    meta = _parse_meta(path, arrays.pop(META_KEY))
    broken = first_non_finite(arrays)
    if broken is not None:
        raise CheckpointError(
            f"{path} cannot be used: its array {broken} holds NaN or infinite values (the "
            f"state of a diverged run); nothing was changed"
        )
    broken = first_non_finite(_numbers_of(meta, META_KEY))
    if broken is not None:
        raise CheckpointError(f"{path} cannot be used: its metadata's {broken} is NaN or infinite; nothing was changed")
    return arrays, meta


def _numbers_of(value, name: str) -> dict:
    """The floats of a JSON value, by their dotted path ("__meta__.logged_this_epoch.loss"), as 0-d arrays."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _numbers_of(item, f"{name}.{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _numbers_of(item, f"{name}.{i}").items()}
    return {name: np.asarray(value)} if isinstance(value, float) else {}


def load_checkpoint_meta(path) -> dict:
    """The metadata of a checkpoint alone (its configuration, position, …), without reading the arrays.

    Raises:
        CheckpointError: as :func:`load_checkpoint`.
    """
    path = Path(path)
    meta = _read(path, lambda data: data[META_KEY] if META_KEY in data.files else None)
    if meta is None:
        raise CheckpointError(f"{path} is not a moco-ref checkpoint (no {META_KEY} entry)")
    return _parse_meta(path, meta)


def _read(path: Path, take):
    """``take(npz)`` on the opened checkpoint, every way reading can fail turned into a CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):  # np.load would try a .npy or a pickle instead
        raise CheckpointError(f"{path} is not a moco-ref checkpoint (not an .npz archive, or truncated)")
    try:
        with np.load(path, allow_pickle=False) as data:
            return take(data)
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError) as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from None


def _parse_meta(path: Path, raw: np.ndarray) -> dict:
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: corrupt metadata ({error})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: corrupt metadata (not a JSON object)")
    return meta
