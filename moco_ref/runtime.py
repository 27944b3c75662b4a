"""Process-wide settings for the command line (never applied on import of the library).

NumPy allocates fresh arrays of tens of megabytes in every training step (im2col
matrices, activations).  glibc serves blocks that large with a new ``mmap`` and
returns them with ``munmap`` when freed, so every step faults all of that memory
in again.  Raising glibc's mmap and trim thresholds keeps freed blocks in the
heap for the next step instead: measured on the 2-core CI machine, the
reference CPU step (resnet10 w16, batch 64) went from 0.40–0.43 s to 0.33–0.34 s
with the same peak memory (benchmarks/RESULTS.md).

Under ``mpiexec -n W`` the W processes of one host share its cores: each BLAS gets
cores / (processes on this host) threads, unless the user set a thread count.  That
has to happen before NumPy loads its BLAS, so the console entry point
(moco_ref/__main__.py) calls :func:`share_cores_between_processes` first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
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


M_TRIM_THRESHOLD = -1   # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 1 << 30    # blocks up to 1 GiB come from (and return to) the heap


def reuse_freed_memory() -> bool:
    """Asks glibc to keep freed large blocks for reuse; returns False where that is not possible.

    A no-op (False) on C libraries without ``mallopt`` (macOS, musl, Windows).  Call it once, early,
    from a program's entry point: it changes the allocator of the whole process.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
