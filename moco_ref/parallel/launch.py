"""Starting a data-parallel job: the communicator for this process, and the abort policy when a rank fails.

``get_communicator(backend_name)`` picks one from the launcher's environment (moco_ref/run/runtime.py reads
it), without importing mpi4py when there is one process.  ``run_or_abort(comm, fn, ...)`` runs ``fn`` and, if
it raises on one rank, reports the error and aborts the job, so that no other rank waits forever in its next
collective.
"""

from __future__ import annotations

import os
import sys
import traceback

from backends import BackendUnavailable
from moco_ref.errors import UserError
from moco_ref.parallel.communicator import Communicator, SingleProcess
from moco_ref.parallel.environment import world_size_variable
from moco_ref.parallel.mpi import MPICommunicator

MPI_INSTALL_HINT = "pip install 'moco-ref[mpi]'"


def get_communicator(backend_name: str) -> Communicator:
    """The communicator for this process: SingleProcess, MPICommunicator or NCCLCommunicator.

    One process (no launcher variable, or a world size of 1): ``SingleProcess``, and mpi4py is not
    imported. More: mpi4py is imported (MPI is initialised); ``backend_name == "cupy"`` gives NCCL unless
    ``MOCO_REF_COMM=mpi`` asks for host-staged MPI (needed when ranks share a GPU); otherwise MPI.
    Collective when W > 1: every rank must call it.

    Raises:
        UserError: mpi4py is missing or cannot load its MPI; MPI sees another world size than the
            launcher (mpi4py built for another MPI than this mpiexec); a bad MOCO_REF_COMM.
    """
    variable, size = world_size_variable(os.environ)
    if size <= 1:
        return SingleProcess()
    choice = os.environ.get("MOCO_REF_COMM", "").strip().lower()
    if choice not in ("", "mpi", "nccl"):
        raise UserError(f"MOCO_REF_COMM={choice!r}: use 'mpi' or 'nccl' (or leave it unset)")
    if choice == "nccl" and backend_name != "cupy":
        raise UserError("MOCO_REF_COMM=nccl needs --backend cupy")
    try:
        import mpi4py  # noqa: F401  (only to tell "not installed" from "cannot load its MPI")
    except ImportError:
        raise UserError(f"launched with {size} processes but mpi4py is not installed; {MPI_INSTALL_HINT}") from None
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError) as error:
        raise UserError(f"launched with {size} processes but mpi4py cannot load its MPI library ({error})") from None
    mpi = MPICommunicator()
    if mpi.size != size:
        library = " ".join(MPI.Get_library_version().split("\n")[0].split())
        raise UserError(
            f"{variable}={size} says {size} processes but MPI sees {mpi.size}: launch with the "
            f"mpiexec of the MPI that mpi4py uses ({library}), or unset {variable}"
        )
    if backend_name == "cupy" and choice != "mpi":
        from moco_ref.parallel.nccl import (
            NCCLCommunicator,  # CuPy's NCCL, only for a GPU job
        )

        return run_or_abort(mpi, NCCLCommunicator, mpi)  # a rank without a GPU must not leave others waiting
    return mpi


def run_or_abort(comm: Communicator, fn, *args, **kwargs):
    """Returns ``fn(*args, **kwargs)``; if it raises on one rank of several, reports and aborts the job.

    Without this, a rank that raises exits while the others wait in their next collective forever. The
    report goes to stderr, every line prefixed with ``[rank r]``: one line for a user error (``UserError``,
    ``BackendUnavailable``; abort code 2), the traceback otherwise (code 1); Ctrl-C gives 130 and a
    non-zero ``sys.exit(code)`` aborts with that code. With one process it re-raises instead, and the CLI
    turns the error into its one line as usual.
    """
    if comm.size == 1:
        return fn(*args, **kwargs)
    try:
        return fn(*args, **kwargs)
    except SystemExit as error:
        if error.code in (None, 0):
            raise
        code, message = (error.code, f"exit {error.code}") if isinstance(error.code, int) else (1, str(error.code))
    except KeyboardInterrupt:
        code, message = 130, "interrupted"
    except (UserError, BackendUnavailable) as error:
        code, message = 2, f"moco-ref: error: {error}"
    except BaseException:
        code, message = 1, traceback.format_exc().rstrip("\n")
    prefix = f"[rank {comm.rank}] "
    sys.stderr.write("".join(prefix + line + "\n" for line in message.splitlines()))
    comm.abort(code)
    raise SystemExit(code)  # reached only if abort returned


def launcher_words(comm: Communicator) -> list:
    """How this job was started, as the words that start it again: ["mpiexec", "-n", "W"] for W processes,
    [] for one."""
    return ["mpiexec", "-n", str(comm.size)] if comm.size > 1 else []
