"""Process-wide settings that must precede NumPy's import: the BLAS's threads, OpenMP's waits.

OpenBLAS reads its settings from the environment once, when NumPy loads it, and Numba its thread
count when it is imported.  Three things are done here:

- the thread counts the user set for the libraries moco-ref loads are checked
  (:func:`clean_thread_counts`): one that is not a whole number from 1 is removed (the library then
  picks its own count), one above MOST_THREADS_PER_CORE times the machine's cores is lowered to that,
  each with one warning line, by ``import moco_ref`` (moco_ref/__init__.py), so that neither Numba's
  traceback nor thousands of threads reach the user;
- its idle threads sleep at once (:func:`quiet_idle_blas_threads`), and GNU OpenMP's, which run
  Numba's kernels, spin a moment before they sleep (:func:`brief_openmp_waits`), both set by ``import
  moco_ref`` (moco_ref/__init__.py) and by the ``moco-ref`` command, where the user has not chosen a value;
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
THREAD_COUNT_VARIABLES = ("NUMBA_NUM_THREADS",) + THREAD_VARIABLES  # every library's thread count we load
MOST_THREADS_PER_CORE = 4


def clean_thread_counts(environ=None, cores: int | None = None) -> list[str]:
    """Makes the thread counts of THREAD_COUNT_VARIABLES in ``environ`` usable; returns one warning line
    for each it changed.

    A value must be a whole number n >= 1 (OMP_NUM_THREADS may list one per nesting level, "4,2").  Any
    other value ("abc", "0", "-3", "", "1.5") is removed, so the library uses its own default; a count
    above MOST_THREADS_PER_CORE x cores (``os.cpu_count()`` by default) is lowered to that.  Must run
    before NumPy and Numba are imported to take effect.
    """
    environ = os.environ if environ is None else environ
    most = MOST_THREADS_PER_CORE * (cores or os.cpu_count() or 1)
    lines = []
    for name in THREAD_COUNT_VARIABLES:
        value = environ.get(name)
        if value is None:
            continue
        parts = value.split(",") if name == "OMP_NUM_THREADS" else [value]
        if not all(part.strip().isdecimal() and int(part) >= 1 for part in parts):
            del environ[name]
            lines.append(
                f"warning: {name}={value!r} is not a thread count (a whole number from 1); "
                f"ignored, the library picks its own"
            )
        elif any(int(part) > most for part in parts):
            environ[name] = ",".join(str(min(int(part), most)) for part in parts)
            lines.append(
                f"warning: {name}={value} is more than {MOST_THREADS_PER_CORE} threads for each of "
                f"this machine's {most // MOST_THREADS_PER_CORE} cores; lowered to {environ[name]}"
            )
    return lines


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


IDLE_BLAS_TIMEOUT = "4"  # OpenBLAS's idle threads wait 2**4 cycles, then sleep


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


OPENMP_SPIN = "10000"  # GNU OpenMP's idle threads spin 10,000 times (a fraction of a millisecond), then sleep


def brief_openmp_waits(environ=None) -> bool:
    """Lets GNU OpenMP's idle threads spin a moment before they sleep (GOMP_SPINCOUNT), unless the user chose
    a wait policy or a spin count; returns True when the setting will take effect (libgomp not loaded yet).

    Numba runs the fast paths' kernels on GNU OpenMP's threads where it can load libgomp (the kernels of
    backends/, their ``threading_layer``), about 150 kernels a training step.  A thread that sleeps between two
    kernels takes tens of microseconds to wake (a futex, and on a virtual machine an idle virtual CPU to wake as
    well); one that spins long (libgomp's default, 300,000 spins, milliseconds) keeps the core from the BLAS's
    next product.  10,000 spins keep a thread awake across the short gaps between kernels and release the core
    before the next matrix product needs it: the reference step ran in 74 ms against 78–79 ms with 3,000 or
    30,000 spins and 87–89 ms with libgomp's default (benchmarks/RESULTS.md).
    libgomp reads the variable once, when it loads (with Numba's first parallel kernel, or PyTorch).
    """
    environ = os.environ if environ is None else environ
    if "OMP_WAIT_POLICY" not in environ:
        environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPIN)
    try:
        with open("/proc/self/maps") as maps:
            return not any("libgomp" in line for line in maps)
    except OSError:
        return True
