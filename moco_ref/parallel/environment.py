"""What the launcher (``mpiexec``, ``srun``) tells a process through its environment: the number of processes
in the job and on this host.  Read without importing mpi4py (or NumPy): moco_ref/run/runtime.py needs it
before NumPy loads, moco_ref/parallel/launch.py to choose the communicator.
"""

from __future__ import annotations

import os

# Where launchers put the world size, in the order they are read. MPICH's hydra (and Intel MPI, and Slurm's
# srun --mpi=pmi2) set PMI_SIZE; Open MPI sets OMPI_COMM_WORLD_SIZE; MVAPICH sets MV2_COMM_WORLD_SIZE.
# PMIX_SIZE is read in case a PMIx launcher exports it (no launcher we know documents it; PMIx launchers
# usually export PMIX_RANK alone, which says nothing about the size).
WORLD_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE")
# The processes on this host: MPICH's hydra, Open MPI, MVAPICH.
LOCAL_SIZE_VARIABLES = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE")


def world_size_variable(environ) -> tuple:
    """(the first variable of WORLD_SIZE_VARIABLES that holds a number, that number), or (None, 1)."""
    for name in WORLD_SIZE_VARIABLES:
        value = environ.get(name, "").strip()
        if value.isdigit():
            return name, int(value)
    return None, 1


def launcher_world_size(environ=None) -> int:
    """The number of processes the launcher started, from its environment variables; 1 if none is set."""
    return world_size_variable(os.environ if environ is None else environ)[1]


def local_size(environ=None) -> int:
    """The processes the launcher started on this host (the whole world when it does not say)."""
    environ = os.environ if environ is None else environ
    return next(
        (int(environ[n]) for n in LOCAL_SIZE_VARIABLES if environ.get(n, "").strip().isdigit()),
        launcher_world_size(environ),
    )
