"""Process-wide settings that must precede NumPy's import: the BLAS's threads.

OpenBLAS reads its settings from the environment once, when NumPy loads it.  Two are set here:

- its idle threads sleep at once (:func:`quiet_idle_blas_threads`), set by ``import moco_ref``
  (moco_ref/__init__.py) and by the ``moco-ref`` command, where the user has not chosen a value;
- under ``mpiexec``, each process's share of the cores (:func:`share_cores_between_processes`).

(The allocator setting of a training process lives with the fast paths: backends/cpu.py.)

Under ``mpiexec -n W`` the W processes of one host share its cores: each BLAS gets
cores / (processes on this host) threads, unless the user set a thread count.  That
has to happen before NumPy loads its BLAS, so the console entry point
(moco_ref/__main__.py) calls :func:`share_cores_between_processes` first.
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
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


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


def share_cores_between_processes(environ=None, cores: int | None = None) -> int | None:
    """Sets each process's BLAS threads to cores / (processes on this host) under a launcher of several
    processes, unless a thread count is already set; returns the count set, or None.  Must run before
    NumPy is imported to take effect."""
    environ = os.environ if environ is None else environ
    if launcher_world_size(environ) <= 1 or any(name in environ for name in THREAD_VARIABLES):
        return None
    local = next((int(environ[n]) for n in LOCAL_SIZE_VARIABLES if environ.get(n, "").strip().isdigit()),
                 launcher_world_size(environ))
    threads = max(1, (cores or os.cpu_count() or 1) // max(local, 1))
    environ["OPENBLAS_NUM_THREADS"] = environ["OMP_NUM_THREADS"] = str(threads)
    return threads


IDLE_BLAS_TIMEOUT = "4"   # OpenBLAS's idle threads wait 2**4 cycles, then sleep


def quiet_idle_blas_threads(environ=None) -> bool:
    """Lets OpenBLAS's idle threads sleep at once instead of spinning, unless the user chose otherwise;
    returns True when the setting will take effect (NumPy not loaded yet).

    OpenBLAS keeps its worker threads spinning for 2**28 cycles (about 0.1 s) after each product; the
    fast paths' threads (backends/: Numba's kernels) then share their cores with a spinning thread, and the
    step's memory passes run at half speed.  OpenBLAS reads OPENBLAS_THREAD_TIMEOUT only when it loads,
    with NumPy: ``import moco_ref`` and the ``moco-ref`` command set it first.
    """
    import sys

    environ = os.environ if environ is None else environ
    environ.setdefault("OPENBLAS_THREAD_TIMEOUT", IDLE_BLAS_TIMEOUT)
    return "numpy" not in sys.modules
