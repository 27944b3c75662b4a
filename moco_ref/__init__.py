"""moco-ref: a from-scratch, autograd-free reference implementation of MoCo.

Importing moco_ref before NumPy lets OpenBLAS's idle threads sleep instead of spinning (one
environment default, OPENBLAS_THREAD_TIMEOUT, where the user has not set it; moco_ref/run/runtime.py),
so that the fast paths' threads have the cores to themselves between matrix products.
"""

from moco_ref.run.runtime import quiet_idle_blas_threads

quiet_idle_blas_threads()

__version__ = "0.1.0"
