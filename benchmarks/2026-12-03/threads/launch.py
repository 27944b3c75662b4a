"""The cost of launching one parallel Numba kernel (64 elements, prange), per threading layer:
    NUMBA_THREADING_LAYER=workqueue python launch.py; NUMBA_THREADING_LAYER=omp [GOMP_SPINCOUNT=N] python launch.py
(2026-12-03, the 2-core Xeon VM, before moco-ref chose OpenMP: workqueue 117 µs, omp 1.8 µs, omp with
OMP_WAIT_POLICY=passive or GOMP_SPINCOUNT=0 65–67 µs)."""

# isort: off
import moco_ref  # noqa: F401  (first: the process's thread settings, before NumPy and Numba load)
# isort: on

import time

import numpy as np
from numba import njit, prange

from backends import get_backend

get_backend("numpy")
import numba  # noqa: E402


@njit(parallel=True)
def k(a):
    for i in prange(a.shape[0]):
        a[i] += 1


a = np.zeros(64)
k(a)
ts = []
for _ in range(2000):
    t = time.perf_counter()
    k(a)
    ts.append(time.perf_counter() - t)
print(
    numba.threading_layer(),
    numba.get_num_threads(),
    "median us",
    1e6 * np.median(ts),
    "p90",
    1e6 * np.percentile(ts, 90),
)
