"""Process-wide settings for the command line (never applied on import of the library).

NumPy allocates fresh arrays of tens of megabytes in every training step (im2col
matrices, activations).  glibc serves blocks that large with a new ``mmap`` and
returns them with ``munmap`` when freed, so every step faults all of that memory
in again.  Raising glibc's mmap and trim thresholds keeps freed blocks in the
heap for the next step instead: measured on the 2-core CI machine, the
reference CPU step (resnet10 w16, batch 64) went from 0.40–0.43 s to 0.33–0.34 s
with the same peak memory (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util

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
