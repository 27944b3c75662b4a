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

from moco_ref.parallel.environment import launcher_world_size, local_size

THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def share_cores_between_processes(environ=None, cores: int | None = None) -> int | None:
    """Sets each process's BLAS threads to cores / (processes on this host) under a launcher of several
    processes, unless a thread count is already set; returns the count set, or None.  Must run before
    NumPy is imported to take effect."""
    environ = os.environ if environ is None else environ
    if launcher_world_size(environ) <= 1 or any(name in environ for name in THREAD_VARIABLES):
        return None
    threads = max(1, (cores or os.cpu_count() or 1) // max(local_size(environ), 1))
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
