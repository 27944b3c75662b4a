"""The run directory: the one module that knows its files, and the one writer that writes them.

    RUN/config.json            the resolved configuration (written atomically)
    RUN/metrics.jsonl          one JSON object a line: "step", "epoch", "knn", "instruments", "final" records
    RUN/checkpoint_last.npz    the latest checkpoint (moco_ref/run/checkpoint.py's format)
    RUN/checkpoint_NNNN.npz    the checkpoint of epoch NNNN, kept with --save-every
    RUN/linear_probe.json      an ablation's linear probe of the run (moco-ref ablate)
    RUN/failed.json            an ablation run that failed, and why
    RUN/.lock                  who trains here now
    RUN/tb/                    TensorBoard's event files, with --tensorboard (moco_ref/run/tensorboard.py)

:class:`RunDirectory` reads and writes them: metrics.jsonl with one policy for a line cut short (a kill or
a full disk in the middle of a write: the line is dropped), checkpoints, config.json and the lock.  Ranks
other than 0 of a data-parallel run get a :class:`ReadOnlyRunDirectory`, chosen once where the run is built:
it reads as RunDirectory does and its every write does nothing, so the training loop needs no guard.  The
policy of a resume (which flags may change, whether anything is left to do) is moco_ref/run/resume.py's.

One writer.  A run directory is written by one process only (rank 0 of a data-parallel run).  That
process holds an exclusive ``fcntl.flock`` on ``RUN/.lock`` for as long as it trains; the file holds its
pid, host and start time, so that a second ``moco-ref train`` on the same directory can say who is
running there.  A flock belongs to the open file, so the operating system releases it however the
holder ends, SIGKILL included: a lock file that nobody holds is free, never stale.  The file itself is
never removed (removing it would let two processes lock two different files of the same name).
flock works on local file systems and, on Linux, on NFS (where it is emulated with byte-range locks).

Room.  Before the first step the writer checks that the directory takes new files and has room for two
checkpoints: the latest, and the temporary file of the next, which sits beside it until the rename.

Errors.  Any ``OSError`` while writing (no space, a read-only file system, no permission, a directory
deleted under the run) becomes a :class:`RunDirectoryError`: one line naming the file and the cause.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path

from moco_ref.errors import RunDirectoryError, RunInUse, UserError
from moco_ref.paths import check_input, check_output_folder, reason, refusal, refused
from moco_ref.run.checkpoint import (
    load_checkpoint,
    load_checkpoint_meta,
    save_checkpoint,
    write_atomically,
)

CONFIG, METRICS, LAST_CHECKPOINT = "config.json", "metrics.jsonl", "checkpoint_last.npz"
PROBE, FAILED = "linear_probe.json", "failed.json"
TENSORBOARD = "tb"
LOCK_NAME = ".lock"
# The temporary files of moco-ref's own writes (write_atomically's NAME.<random>.tmp, and the probe).
TEMPORARY_FILES = ("checkpoint_*.npz.*.tmp", "config.json.*.tmp", "metrics.jsonl.*.tmp", ".probe.*.tmp", "*.json.*.tmp")


def kept_checkpoint_name(epoch: int) -> str:
    """The checkpoint kept at the end of ``epoch`` with --save-every: checkpoint_0005.npz."""
    return f"checkpoint_{epoch:04d}.npz"


# A process that only looks (holder_of) holds a shared lock for an instant; an exclusive lock that fails
# is tried again for this long before the directory is called in use.
LOCK_RETRY_S = 0.25


# ------------------------------------------------------------------------------ errors
def _vanished(run_dir: Path) -> str:
    return f"the run directory {run_dir} no longer exists (deleted while the run was writing it)"


def cause_of(error: OSError, run_dir: Path) -> str:
    """The reason ``error`` gives, in the words of moco_ref/paths.py's CAUSES; a vanished run directory by name."""
    if error.errno == errno.ENOENT and not Path(run_dir).is_dir():
        return _vanished(run_dir)
    return reason(error)


@contextmanager
def writing(path, run_dir, outcome: str = ""):
    """Turns an ``OSError`` raised inside the block into one line: "cannot write PATH: CAUSE; OUTCOME".

    A run directory that no longer exists is refused before the block runs: a write must never create it
    again (``write_atomically`` would, for its folder), since the lock that kept other writers out went
    with it.
    """
    run_dir = Path(run_dir)
    tail = f"; {outcome}" if outcome else ""
    if not run_dir.is_dir():
        raise RunDirectoryError(f"cannot write {path}: {_vanished(run_dir)}{tail}")
    try:
        yield
    except OSError as error:
        raise RunDirectoryError(f"cannot write {path}: {cause_of(error, run_dir)}{tail}") from None


# ------------------------------------------------------------------------------- the lock
def _describe_holder(text: str) -> str:
    """ "pid 1234 on host vm, since 2026-12-01 09:00:03" from the lock file's JSON (or what can be said)."""
    try:
        holder = json.loads(text)
        return f"pid {holder['pid']} on host {holder['host']}, since {holder['since']}"
    except (ValueError, KeyError, TypeError):
        return "another process (it has not written its pid yet)"


def _in_use(run_dir: Path, holder: str) -> RunInUse:
    return RunInUse(
        f"{run_dir} is in use by another moco-ref run: {holder}; wait for it to end, or stop it "
        f"(SIGTERM saves a checkpoint) and continue with --resume {run_dir}"
    )


def _read_all(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode("utf-8", "replace")


def holder_of(run_dir) -> str | None:
    """Who holds ``run_dir``'s lock now ("pid … on host …, since …"), or None; reads and changes nothing.

    It takes a shared lock for an instant to find out: that conflicts with a writer's exclusive lock,
    and never with another process that only looks.
    """
    try:
        fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDONLY)
    except OSError:  # no lock file (no run has started here) or none we may read
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _describe_holder(_read_all(fd))
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def refuse_if_in_use(run_dir) -> None:
    """Raises :class:`RunInUse`, naming the holder, if another process trains into ``run_dir`` now."""
    holder = holder_of(run_dir)
    if holder is not None:
        raise _in_use(Path(run_dir), holder)


class RunLock:
    """The exclusive lock of one run directory, held from :meth:`acquire` to :meth:`release` (or death)."""

    def __init__(self, run_dir: Path, fd: int):
        self.run_dir = run_dir
        self.fd: int | None = fd

    @classmethod
    def acquire(cls, run_dir) -> RunLock:
        """Creates ``run_dir`` if needed, locks ``run_dir/.lock`` and writes this process's pid, host and time.

        Raises:
            RunInUse: another process holds the lock (the message names it); nothing was written.
            RunDirectoryError: the directory or its lock file cannot be created or written.
        """
        run_dir = Path(run_dir)
        path = run_dir / LOCK_NAME
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # the folder was never there: nothing of a run's to speak of
            raise refusal(run_dir, error) from None
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # no O_TRUNC: a holder's record stays intact
        except OSError as error:
            raise RunDirectoryError(f"cannot write {path}: {cause_of(error, run_dir)}") from None
        if not _lock_exclusively(fd):
            holder = _describe_holder(_read_all(fd))
            os.close(fd)
            raise _in_use(run_dir, holder)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
        except OSError as error:
            os.close(fd)
            raise RunDirectoryError(f"cannot write {path}: {cause_of(error, run_dir)}") from None
        return cls(run_dir, fd)

    def release(self) -> None:
        """Unlocks (closing the file is enough); the lock file stays, free for the next run."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _lock_exclusively(fd: int) -> bool:
    """flock(LOCK_EX) without waiting, tried again for LOCK_RETRY_S (a process that only looks lets go)."""
    deadline = time.monotonic() + LOCK_RETRY_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)


# ------------------------------------------------------------------------- before the first step
def _megabytes(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def check_writable(run_dir) -> None:
    """Creates and removes a probe file in ``run_dir``: a directory that takes no new files is refused now,
    not at the end of the first epoch."""
    run_dir = Path(run_dir)
    try:
        fd, probe = tempfile.mkstemp(dir=run_dir, prefix=".probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise RunDirectoryError(
            f"the run directory {run_dir} does not take new files: {cause_of(error, run_dir)}; choose another --out"
        ) from None


def check_room(run_dir, checkpoint_bytes: int, present_bytes: int = 0) -> None:
    """Refuses to start unless ``run_dir``'s file system has room for two checkpoints of ``checkpoint_bytes``.

    Saving writes the new checkpoint beside the latest before it replaces it, so two must fit at once;
    ``present_bytes`` (the checkpoint already there, on resume) counts towards them.
    """
    run_dir = Path(run_dir)
    status = os.statvfs(run_dir)
    free = status.f_bavail * status.f_frsize
    needed = 2 * checkpoint_bytes - present_bytes
    if free < needed:
        raise RunDirectoryError(
            f"{run_dir} has {_megabytes(free)} free, too little for two checkpoints of this model (about "
            f"{_megabytes(checkpoint_bytes)} each: the latest, and the next written beside it before it "
            f"replaces it); free some space or choose another --out"
        )


def remove_temporary_files(run_dir) -> list[Path]:
    """Removes the temporary files that a process killed while saving left behind; returns them.

    Only the lock's holder may call it: then no other process can be in the middle of a save here.
    """
    leftovers = sorted(path for pattern in TEMPORARY_FILES for path in Path(run_dir).glob(pattern))
    for path in leftovers:
        path.unlink(missing_ok=True)
    return leftovers


# ------------------------------------------------------------------------- what --out may be
def is_run_folder(path) -> bool:
    """Whether a run has written ``path``: it holds .lock, the first file every run makes."""
    return (Path(path) / LOCK_NAME).exists()


def check_run_folder(run_dir, flag: str = "--out", resumed: Path | None = None) -> Path:
    """``run_dir`` once a run may write there: a folder to be made, an empty one, or one a run has written
    (it holds .lock, the first file every run makes).  A folder with other files in it is the user's: it is
    refused in one line naming one of them, and nothing in it is touched (the checkpoint ``resumed`` from, if
    it lies there, is not counted).  PathRefused where the OS refuses the path (moco_ref/paths.py)."""
    run_dir = check_output_folder(run_dir, flag)
    if not run_dir.is_dir() or is_run_folder(run_dir):
        return run_dir
    with refused(run_dir, flag):
        entries = sorted(
            name
            for name in os.listdir(run_dir)
            if resumed is None or (run_dir / name).resolve() != Path(resumed).resolve()
        )
    if entries:
        others = f" and {len(entries) - 1} more" if len(entries) > 1 else ""
        raise RunDirectoryError(
            f"{run_dir} holds files that no run wrote ({entries[0]}{others}); a run "
            f"writes only into a new folder, an empty one or its own: give a new or empty --out"
        )
    return run_dir


# ------------------------------------------------------------------------- the files, read and written
def checkpoint_of(run, flag: str = "") -> Path:
    """The checkpoint of RUN (given as ``flag``): a run directory's checkpoint_last.npz, or a checkpoint file;
    UserError (one line) where there is none, PathRefused where the OS refuses the path."""
    path = check_input(run, flag)
    if path.is_dir():
        if not (path / LAST_CHECKPOINT).is_file():
            raise UserError(
                f"no checkpoint at {path / LAST_CHECKPOINT}: {path} holds no {LAST_CHECKPOINT}; give "
                f"a run directory of moco-ref train or a checkpoint file"
            )
        return path / LAST_CHECKPOINT
    if not path.is_file():
        raise UserError(
            f"no checkpoint at {path}: no run at {path}; give a run directory of moco-ref train or a checkpoint file"
        )
    return path


def complete_records(text: str) -> list[tuple[str, dict]]:
    """(line, record) for each line of a metrics.jsonl that is a whole JSON object.  A line cut short (a full
    disk, a kill in the middle of a write) is dropped: the one policy of every reader."""
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append((line, record))
    return records


class RunDirectory:
    """The files of one run (see the module docstring), for the process that writes them (rank 0 of a
    data-parallel run; the only one otherwise) or for one that only reads them.

    Args:
        path: the run directory (created by the writer's :meth:`lock`).
    Attributes:
        saved_step: the global step of the checkpoint written or read last, or None.
        resumed_from: the checkpoint file the run continues from (read by :meth:`load`), or None.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.saved_step = None
        self.resumed_from: Path | None = None
        self._resumed: tuple[int, dict] | None = (
            None  # (step, config) of a resume whose metrics and config wait for its first record
        )

    @property
    def last_checkpoint(self) -> Path:
        return self.path / LAST_CHECKPOINT

    @property
    def tensorboard(self) -> Path:
        """The folder of TensorBoard's event files (``tensorboard --logdir RUN/tb``)."""
        return self.path / TENSORBOARD

    # ---------------------------------------------------------------- reading (any process)
    def records(self) -> list[dict]:
        """The complete records of metrics.jsonl, in order ([] where there is none)."""
        path = self.path / METRICS
        return [record for _, record in complete_records(path.read_text())] if path.is_file() else []

    def read_config(self) -> dict | None:
        try:
            return json.loads((self.path / CONFIG).read_text())
        except (OSError, ValueError):
            return None

    def read_json(self, name: str) -> dict | None:
        """One of the run's JSON files (PROBE, FAILED), or None where it is missing or unreadable."""
        try:
            value = json.loads((self.path / name).read_text())
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def load(self, checkpoint=None) -> tuple[dict, dict]:
        """(arrays, meta) of checkpoint_last.npz, or of another checkpoint file the run continues from."""
        self.resumed_from = Path(self.last_checkpoint if checkpoint is None else checkpoint)
        arrays, meta = load_checkpoint(self.resumed_from)
        self.saved_step = meta.get("global_step")
        return arrays, meta

    # ---------------------------------------------------------------- writing (the writer; ReadOnlyRunDirectory skips)
    def refuse_if_in_use(self) -> None:
        """Raises :class:`RunInUse`, naming the holder, if another process trains into the directory now."""
        refuse_if_in_use(self.path)

    def lock(self):
        """The context that holds the run's lock; RunInUse if it is held, and RunDirectoryError before anything
        is written where the folder is the user's (:func:`check_run_folder`)."""
        check_run_folder(self.path, resumed=self.resumed_from)
        return _held(RunLock.acquire(self.path))

    def open(self, checkpoint_bytes: int, step: int, config: dict, log) -> None:
        """Before the first step, holding the lock: the directory must take new files and have room for two
        checkpoints; the temporary files of a save that was killed go.  A fresh run (``step`` 0) empties
        metrics.jsonl and writes config.json now.  A resume from the checkpoint at ``step`` leaves both as
        they are until its first record (:meth:`append`): then the records after ``step`` are dropped and
        config.json is rewritten, so a resume that fails before it logs anything has changed neither.  A fresh
        run also starts with no tb/ (a resume appends to it: moco_ref/run/tensorboard.py)."""
        check_writable(self.path)
        present = self.last_checkpoint.stat().st_size if self.last_checkpoint.exists() else 0
        check_room(self.path, checkpoint_bytes, present)
        for path in remove_temporary_files(self.path):
            log(f"note: removed {path.name}, left by a run that was killed while saving")
        if step == 0:
            with self.writing(self.path / METRICS, step):
                (self.path / METRICS).unlink(missing_ok=True)
            self.write_json(CONFIG, config, step)
            if self.tensorboard.is_dir():
                with self.writing(self.tensorboard, step):
                    shutil.rmtree(self.tensorboard)
        else:
            self._resumed = (step, config)

    def write_json(self, name: str, obj, step: int | None = None) -> None:
        """Writes RUN/name atomically (a kill never leaves half a file)."""
        path, text = self.path / name, json.dumps(obj, indent=2) + "\n"
        with self.writing(path, step):
            write_atomically(path, lambda f: f.write(text.encode("utf-8")))

    def append(self, record: dict) -> None:
        """Appends one record to metrics.jsonl."""
        if self._resumed is not None:  # a resume's first record: its metrics and config now
            step, config = self._resumed
            self._truncate_metrics(step)
            self.write_json(CONFIG, config, step)
            self._resumed = None
        path = self.path / METRICS
        with self.writing(path, record.get("global_step")):
            with open(path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def save(self, arrays: dict, meta: dict, keep_epoch: int | None = None) -> Path | None:
        """Writes checkpoint_last.npz (and checkpoint_NNNN.npz of ``keep_epoch``); returns its path."""
        step = meta["global_step"]
        with self.writing(self.last_checkpoint, step):
            save_checkpoint(self.last_checkpoint, arrays, meta)
        self.saved_step = step
        if keep_epoch is not None:
            kept = self.path / kept_checkpoint_name(keep_epoch)
            with self.writing(kept, step):
                save_checkpoint(kept, arrays, meta)
        return self.last_checkpoint

    def _truncate_metrics(self, step: int) -> None:
        """On resume, drops the records logged after the checkpoint (they will be logged again), and the "final"
        and unfinished "epoch" records written when the run stopped there (it goes on)."""
        path = self.path / METRICS
        if not path.exists():
            return

        def superseded(record: dict) -> bool:
            at = record.get("global_step", -1)
            stopped_here = record.get("kind") == "final" or (
                record.get("kind") == "epoch" and not record.get("complete", True)
            )
            return at > step or (at == step and stopped_here)

        kept = [line for line, record in complete_records(path.read_text()) if not superseded(record)]
        text = "".join(line + "\n" for line in kept)
        with self.writing(path, step):
            write_atomically(path, lambda f: f.write(text.encode("utf-8")))

    # ---------------------------------------------------------------- what a stop leaves
    def kept(self) -> str:
        """What a run that stops now leaves: "and the last good checkpoint is kept in RUN (step N)", …"""
        if self.last_checkpoint.exists():
            step = f" (step {self.saved_step})" if self.saved_step is not None else ""
            return f"and the last good checkpoint is kept in {self.path}{step}"
        if not self.path.is_dir():
            return "with nothing kept"
        return "before any checkpoint was written"

    def writing(self, path, step: int | None):
        """The context of every write: an OSError in it ends training with one line that names ``path``, the
        cause, what is kept and how to continue."""
        outcome = f"training stopped at step {step} {self.kept()}" if step is not None else ""
        if self.last_checkpoint.exists() and outcome:
            outcome += f"; once that is fixed, continue with --resume {self.path}"
        return writing(path, self.path, outcome)


class ReadOnlyRunDirectory(RunDirectory):
    """The run directory as a process that does not write it sees it (ranks other than 0): it reads as
    :class:`RunDirectory` does, and every write does nothing."""

    def refuse_if_in_use(self) -> None:
        pass

    def lock(self):
        return nullcontext()

    def open(self, checkpoint_bytes: int, step: int, config: dict, log) -> None:
        pass

    def write_json(self, name: str, obj, step: int | None = None) -> None:
        pass

    def append(self, record: dict) -> None:
        pass

    def save(self, arrays: dict, meta: dict, keep_epoch: int | None = None) -> Path | None:
        return None


@contextmanager
def _held(lock: RunLock):
    try:
        yield lock
    finally:
        lock.release()


def read_meta(run, flag: str = "") -> dict:
    """The metadata of RUN's checkpoint (a run directory or a checkpoint file, given as ``flag``), without its
    arrays."""
    return load_checkpoint_meta(checkpoint_of(run, flag))
