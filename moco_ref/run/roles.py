"""What one process of a run does, chosen once from its rank (STYLE habit 16: a role is an object, not a flag).

Rank 0 (the only process of a one-process run) prints, shows progress, writes the run directory (and
TensorBoard's files) and runs the monitor; every other rank gets objects of the same interface that do
nothing: ReadOnlyRunDirectory, a ``say`` that prints nothing, NoProgress, NoMonitor, NoTensorBoard.  The
command line (moco_ref/cli/train.py) and the trainer (moco_ref/run/trainer.py) both take their roles here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from moco_ref.parallel.communicator import Communicator
from moco_ref.progress import NoProgress, Progress
from moco_ref.run.directory import ReadOnlyRunDirectory, RunDirectory
from moco_ref.run.monitor import Monitor, NoMonitor
from moco_ref.run.tensorboard import NoTensorBoard, TensorBoard


def to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def quiet(*args, **kwargs) -> None:
    """Prints nothing (the ``say`` of ranks other than 0)."""


@dataclass(frozen=True)
class Roles:
    """The classes and the print function of one process's part in a run.

    Attributes:
        directory: RunDirectory (writes) or ReadOnlyRunDirectory (reads, every write does nothing).
        say: the print function given (rank 0) or one that prints nothing.
        progress: Progress or NoProgress.  monitor: Monitor or NoMonitor.
        tensorboard: TensorBoard (rank 0, with --tensorboard) or NoTensorBoard.
    """

    directory: type[RunDirectory]
    say: Callable[..., None]
    progress: type[Progress] | type[NoProgress]
    monitor: type[Monitor] | type[NoMonitor]
    tensorboard: type[TensorBoard] | type[NoTensorBoard]


def roles(comm: Communicator, say: Callable[..., None] = to_stderr, tensorboard: bool = False) -> Roles:
    """This process's roles: rank 0 writes, prints with ``say``, shows and measures (TensorBoard's files with
    ``tensorboard``); the other ranks get objects that do nothing."""
    if comm.rank == 0:
        return Roles(RunDirectory, say, Progress, Monitor, TensorBoard if tensorboard else NoTensorBoard)
    return Roles(ReadOnlyRunDirectory, quiet, NoProgress, NoMonitor, NoTensorBoard)
