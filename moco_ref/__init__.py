"""moco-ref: a from-scratch, autograd-free reference implementation of MoCo.

Importing moco_ref first checks the thread counts the user set for NumPy's BLAS and Numba (one
warning line on stderr for each it removes or lowers; moco_ref/run/runtime.py), before either loads.
Importing moco_ref before NumPy lets OpenBLAS's idle threads sleep instead of spinning (one
environment default, OPENBLAS_THREAD_TIMEOUT, where the user has not set it; moco_ref/run/runtime.py),
so that the fast paths' threads have the cores to themselves between matrix products, and GNU OpenMP's
idle threads, which run those fast paths, spin a moment before they sleep (GOMP_SPINCOUNT).  The settings that
can wait until arrays are made (glibc's allocator, Numba's threads) are applied when the NumPy backend is
made (``backends.get_backend("numpy")``, backends/__init__.py).
"""

import sys

from moco_ref.run.runtime import brief_openmp_waits, clean_thread_counts, quiet_idle_blas_threads

sys.stderr.writelines(f"moco-ref: {line}\n" for line in clean_thread_counts())
quiet_idle_blas_threads()
brief_openmp_waits()

__version__ = "0.1.0"
