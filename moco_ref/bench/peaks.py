"""This machine's ceilings, against which a step's rates are read: the float32 GEMM rate and the memory
bandwidth of a copy."""

from __future__ import annotations

import numpy as np

from moco_ref.bench.clock import interleaved, median


def memory_bandwidth(megabytes: int, threads: int, reps: int = 5) -> float:
    """GB/s of a copy between two arrays of ``megabytes`` each (bytes read + bytes written), on
    ``threads`` threads each copying its own slice (NumPy's copy releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    n = megabytes * (1 << 20) // 4
    source, target = np.ones(n, dtype=np.float32), np.empty(n, dtype=np.float32)
    bounds = np.linspace(0, n, threads + 1).astype(int)
    pieces = [(target[a:b], source[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    with ThreadPoolExecutor(threads) as pool:

        def copy():
            list(pool.map(lambda pair: np.copyto(*pair), pieces))

        times = interleaved({"copy": (copy, lambda: None)}, reps, 1)["copy"]
    return 2 * source.nbytes / median(times) / 1e9


def gemm_peak(backend, n: int, reps: int) -> dict:
    """This machine's float32 GEMM rate: median time of an n×n×n matmul on the backend, as GFLOP/s."""
    xp = backend.xp
    rng = np.random.default_rng(0)
    a = backend.to_device(rng.standard_normal((n, n), dtype=np.float32))
    b = backend.to_device(rng.standard_normal((n, n), dtype=np.float32))
    out = xp.empty((n, n), dtype=xp.float32)
    times = interleaved({"gemm": (lambda: xp.matmul(a, b, out=out), backend.synchronize)}, reps, 1)["gemm"]
    seconds = median(times)
    return {"n": n, "median_s": seconds, "gflops": 2 * n**3 / seconds / 1e9, "reps": reps}
