"""Errors a user can cause (bad paths, images, flags, checkpoints).

The command line turns every ``UserError`` into one line on stderr and exit
code 2; nothing else in the package should print a traceback for bad input.
"""


class UserError(Exception):
    """Something the user gave us is wrong; the message says what and how to fix it."""


class DataError(UserError):
    """A dataset path, file or image cannot be used."""


class PathRefused(UserError):
    """The operating system refuses a path the user gave: too long, a component that is a file, no
    permission, a loop of symbolic links (moco_ref/paths.py)."""


class CheckpointError(UserError):
    """A checkpoint file is missing, unreadable or does not match the model."""


class RunDirectoryError(UserError):
    """The run directory cannot be written: read-only, full, not permitted, deleted, or held by another run."""


class RunInUse(RunDirectoryError):
    """Another process holds the run directory's lock: it is training into that directory now."""
