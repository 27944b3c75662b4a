"""Paths a user gives: where the operating system's refusal of one becomes one line that names it.

A path from the command line (train's --out, --resume and --data, eval's and export's --checkpoint, the
--out of export, plot, show, ablate and bench, a RUN argument) can be refused by the operating system
for reasons of its own: a name longer than the file system allows, a whole path beyond PATH_MAX, a
component that is a file, no permission, a loop of symbolic links.  Every entry point looks at its paths
here first, before anything is read or written:

    check_input(path, flag)     a path to read: it need not exist (the caller says what is missing), but
                                the OS must be able to look it up
    check_output(path, flag)    a path to create (a folder or a file): it, or the nearest folder above it
                                that exists, must be reachable, and every name still to be made must fit
    check_output_folder(path, flag)
                                a folder to write into: as check_output, and what is there is a folder
                                this process may write
    check_output_file(path, flag, replace)
                                a file to write: as check_output, and a file already there is the user's,
                                replaced only when ``replace`` (--force) says so

and :func:`refused` turns an ``OSError`` raised later, in a block that works on such a path, into the same
line.  The line is "FLAG PATH: REASON", REASON being the OS's own (``strerror``), in the plain words of
:data:`CAUSES` where there are some.
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path

from moco_ref.errors import PathRefused

# The causes a user can act on, in plain words; any other error keeps the system's own message.
CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "an input/output error of the device",
}
# What the OS allows when it cannot be asked (pathconf of the nearest existing folder answers first).
NAME_MAX, PATH_MAX = 255, 4096


def reason(error: OSError) -> str:
    """Why the OS refused: the words of :data:`CAUSES`, else its ``strerror``."""
    return CAUSES.get(error.errno or 0) or error.strerror or str(error)


def refusal(path, error: OSError, flag: str = "") -> PathRefused:
    """The one line of ``error`` on the user's ``path``: "FLAG PATH: REASON (DETAIL)"."""
    path = Path(path)
    detail = _detail(path, error)
    named = f"{flag} {path}" if flag else str(path)
    return PathRefused(f"{named}: {reason(error)}{f' ({detail})' if detail else ''}")


@contextmanager
def refused(path, flag: str = ""):
    """Turns an ``OSError`` raised inside the block into :func:`refusal`'s line for ``path``."""
    try:
        yield
    except OSError as error:
        raise refusal(path, error, flag) from None


def check_input(path, flag: str = "") -> Path:
    """``path`` (with ~ expanded) once the OS can look it up; a missing one is returned for the caller to
    name.  PathRefused for any other refusal (too long, a component that is a file, a loop, no permission)."""
    path = Path(path).expanduser()
    with refused(path, flag):
        try:
            os.stat(path)
        except FileNotFoundError:
            pass
    return path


def check_output(path, flag: str = "") -> Path:
    """``path`` (with ~ expanded), a folder or file to be created or written, once the OS can reach it: the
    path, or the nearest folder above it that exists, can be looked up and is a folder (for what is still to
    be made) this process may write, and every name still to be made fits the file system's limits.
    PathRefused otherwise; nothing is created."""
    path = Path(path).expanduser()
    with refused(path, flag):
        existing, missing = _nearest_existing(path)
        if missing:
            if not existing.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
            _check_lengths(existing, missing)
            _check_writable(existing)
    return path


def check_output_folder(path, flag: str = "--out") -> Path:
    """``path``, a folder to be made or written into, once :func:`check_output` lets it and anything already
    there is a folder this process may write."""
    path = check_output(path, flag)
    if os.path.lexists(path) and not path.is_dir():
        raise refusal(path, NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path)), flag)
    if path.is_dir():
        with refused(path, flag):
            _check_writable(path)
    return path


def check_output_file(path, flag: str = "--out", replace: bool = False) -> Path:
    """``path``, a file to be written, once :func:`check_output` lets it and it is not a folder; a file already
    there is refused unless ``replace`` (the command's --force): a file the user named is the user's."""
    path = check_output(path, flag)
    if path.is_dir():
        raise PathRefused(f"{flag} {path} is a folder; give a file name")
    if not replace and os.path.lexists(path):
        raise PathRefused(f"{flag} {path} exists; give --force to replace it, or another {flag}")
    return path


def _nearest_existing(path: Path) -> tuple[Path, list[str]]:
    """(the nearest existing path at or above ``path``, the names below it still to be made).  The OS's
    refusal of a lookup (other than a missing name) is raised."""
    missing: list[str] = []
    current = path if path.is_absolute() else Path.cwd() / path
    while True:
        try:
            os.stat(current)
            return current, missing[::-1]
        except FileNotFoundError:
            if current.parent == current or os.path.islink(current):  # a link to nothing cannot be made
                raise
            missing.append(current.name)
            current = current.parent


def _check_lengths(folder: Path, names: list[str]) -> None:
    """ENAMETOOLONG where one of ``names`` (to be made in ``folder``) or the whole path is beyond the limits."""
    name_max, path_max = _limit(folder, "PC_NAME_MAX", NAME_MAX), _limit(folder, "PC_PATH_MAX", PATH_MAX)
    for name in names:
        if len(os.fsencode(name)) > name_max:
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), name)
    if len(os.fsencode(str(folder.joinpath(*names)))) >= path_max:
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), str(folder.joinpath(*names)))


def _check_writable(folder: Path) -> None:
    """EROFS or EACCES where this process may not make names in ``folder`` (access(2): a read-only file
    system refuses root too)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        code = errno.EROFS if os.statvfs(folder).f_flag & os.ST_RDONLY else errno.EACCES
        raise OSError(code, os.strerror(code), str(folder))


def _limit(folder: Path, name: str, default: int) -> int:
    try:
        return os.pathconf(folder, name)
    except (OSError, ValueError):
        return default


def _detail(path: Path, error: OSError) -> str:
    """What in ``path`` the OS refused, where it can be told: the name that is too long, the file that
    stands where a folder must be."""
    if error.errno == errno.ENAMETOOLONG:
        size = max(len(os.fsencode(part)) for part in path.parts)
        if size > NAME_MAX:
            return f"a name of {size} bytes, more than the file system's {NAME_MAX}"
        if len(os.fsencode(str(path))) >= PATH_MAX:
            return f"a path of {len(os.fsencode(str(path)))} bytes, more than the system's {PATH_MAX}"
        if error.filename:  # a file written beside it first (NAME.<random>.tmp)
            return f"the file written first beside it, {Path(error.filename).name}, has a name too long"
        return ""
    if error.errno == errno.ENOENT and os.path.islink(error.filename or ""):
        return f"{error.filename} is a symbolic link to {os.readlink(error.filename)}, which does not exist"
    if error.errno == errno.ENOTDIR:
        if os.path.lexists(path) and not path.is_dir():
            return f"{path} is a file, not a folder"
        for above in reversed(path.parents):
            try:
                if not os.path.isdir(above) and os.path.lexists(above):
                    return f"{above} is a file, not a folder"
            except (OSError, ValueError):
                return ""
    return ""
