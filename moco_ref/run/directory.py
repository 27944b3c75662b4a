"""The run directory: one writer at a time, room to save, and every I/O error as one line.

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
import socket
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from moco_ref.errors import RunDirectoryError, RunInUse

LOCK_NAME = ".lock"
# The temporary files of moco-ref's own writes (write_atomically's NAME.<random>.tmp, and the probe).
TEMPORARY_FILES = ("checkpoint_*.npz.*.tmp", "config.json.*.tmp", "metrics.jsonl.*.tmp", ".probe.*.tmp")
# A process that only looks (holder_of) holds a shared lock for an instant; an exclusive lock that fails
# is tried again for this long before the directory is called in use.
LOCK_RETRY_S = 0.25

# The causes a user can act on, in plain words; any other error keeps the system's own message.
CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "an input/output error of the device",
}


# ------------------------------------------------------------------------------ errors
def _vanished(run_dir: Path) -> str:
    return f"the run directory {run_dir} no longer exists (deleted while the run was writing it)"


def cause_of(error: OSError, run_dir: Path) -> str:
    """The reason ``error`` gives, in the words of :data:`CAUSES`; a vanished run directory by name."""
    if error.errno == errno.ENOENT and not Path(run_dir).is_dir():
        return _vanished(run_dir)
    return CAUSES.get(error.errno) or error.strerror or str(error)


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
    """"pid 1234 on host vm, since 2026-12-01 09:00:03" from the lock file's JSON (or what can be said)."""
    try:
        holder = json.loads(text)
        return f"pid {holder['pid']} on host {holder['host']}, since {holder['since']}"
    except (ValueError, KeyError, TypeError):
        return "another process (it has not written its pid yet)"


def _in_use(run_dir: Path, holder: str) -> RunInUse:
    return RunInUse(f"{run_dir} is in use by another moco-ref run: {holder}; wait for it to end, or stop it "
                    f"(SIGTERM saves a checkpoint) and continue with --resume {run_dir}")


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
    except OSError:             # no lock file (no run has started here) or none we may read
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
        self.run_dir, self.fd = run_dir, fd

    @classmethod
    def acquire(cls, run_dir) -> "RunLock":
        """Creates ``run_dir`` if needed, locks ``run_dir/.lock`` and writes this process's pid, host and time.

        Raises:
            RunInUse: another process holds the lock (the message names it); nothing was written.
            RunDirectoryError: the directory or its lock file cannot be created or written.
        """
        run_dir = Path(run_dir)
        path = run_dir / LOCK_NAME
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)   # no O_TRUNC: a holder's record stays intact
        except OSError as error:
            raise RunDirectoryError(f"cannot write {path}: {cause_of(error, run_dir)}") from None
        if not _lock_exclusively(fd):
            holder = _describe_holder(_read_all(fd))
            os.close(fd)
            raise _in_use(run_dir, holder)
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": datetime.now().strftime("%Y-%m-%d %H:%M:%S")}
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
        raise RunDirectoryError(f"the run directory {run_dir} does not take new files: "
                                f"{cause_of(error, run_dir)}; choose another --out") from None


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
            f"replaces it); free some space or choose another --out")


def remove_temporary_files(run_dir) -> list[Path]:
    """Removes the temporary files that a process killed while saving left behind; returns them.

    Only the lock's holder may call it: then no other process can be in the middle of a save here.
    """
    leftovers = sorted(path for pattern in TEMPORARY_FILES for path in Path(run_dir).glob(pattern))
    for path in leftovers:
        path.unlink(missing_ok=True)
    return leftovers
