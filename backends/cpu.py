"""The CPU process the NumPy path runs in: its cores, its BLAS's threads, its allocator.

NumPy's wheels bring OpenBLAS; its thread count is read through its own C functions, found by
ctypes in the process's loaded libraries.  The fast paths run as many threads as the BLAS.

NumPy allocates fresh arrays of tens of megabytes in every training step (im2col matrices,
activations).  glibc serves blocks that large with a new ``mmap`` and returns them with ``munmap``
when freed, so every step faults all of that memory in again.  :func:`reuse_freed_memory` raises
glibc's mmap and trim thresholds so that freed blocks stay in the heap for the next step (the same
peak memory, fewer page faults; figures in benchmarks/RESULTS.md).  Making the NumPy backend
(``backends.get_backend("numpy")``, which the model, the trainer and the tools do) applies it, so the
Python API and the command line run alike.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 1 << 30  # blocks up to 1 GiB come from (and return to) the heap


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def loaded_openblas():
    """(ctypes handle, (prefix, suffix) of its symbol names) of the OpenBLAS this process loaded, or (None, None)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and ".so" in line})
    except OSError:
        return None, None
    for path in paths:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas_", "64_"), ("openblas_", "64_"), ("openblas_", "")):
            if hasattr(library, f"{prefix}get_num_threads{suffix}"):
                return library, (prefix, suffix)
    return None, None


def blas_threads() -> int:
    """The number of threads NumPy's BLAS runs (OpenBLAS asked directly; else the environment's setting,
    else the usable cores)."""
    import numpy  # noqa: F401  (the BLAS is loaded with NumPy)

    library, names = loaded_openblas()
    if library is not None:
        prefix, suffix = names
        return max(1, int(getattr(library, f"{prefix}get_num_threads{suffix}")()))
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return usable_cores()


def reuse_freed_memory() -> bool:
    """Asks glibc to keep freed large blocks for reuse; returns False where that is not possible.

    A no-op (False) on C libraries without ``mallopt`` (macOS, musl, Windows).  It changes the
    allocator of the whole process (freed blocks below 1 GiB stay with the process for reuse).
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


def host_available_bytes() -> int | None:
    """Memory this process may still take: MemAvailable, capped by a cgroup's limit; None where unknown."""
    available = None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        return None
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            with open(limit_file) as f:
                limit = f.read().strip()
            with open(usage_file) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < (1 << 60):
            available = min(available, int(limit) - usage) if available is not None else int(limit) - usage
    return available
