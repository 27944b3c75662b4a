"""OpenBLAS's float32 rate on the convolutions' product shapes, both orientations.
python gemm_rates.py"""

# isort: off
import moco_ref  # noqa: F401  (first: the process's thread settings, before NumPy and Numba load)
# isort: on


import numpy as np

from backends import get_backend
from moco_ref.bench.clock import median_ms

get_backend("numpy")


def t(f):  # seconds
    return median_ms(f, reps=15, warmup=2) / 1e3


rng = np.random.default_rng(0)
for M, K, O in [
    (32768, 576, 64),
    (8192, 1152, 128),
    (2048, 2304, 256),
    (512, 4608, 512),
    (65536, 144, 16),
    (16384, 288, 32),
]:
    X = rng.standard_normal((M, K), dtype=np.float32)
    Wm = rng.standard_normal((O, K), dtype=np.float32)
    G = rng.standard_normal((M, O), dtype=np.float32)
    fl = 2 * M * K * O / 1e9
    a = t(lambda: X @ Wm.T)
    b = t(lambda: (Wm @ X.T).T)
    c = t(lambda: G.T @ X)
    d = t(lambda: G @ Wm)
    print(
        f"{M}x{K}x{O}: fwd X@Wm.T {fl / a:.0f} GF/s, (Wm@X.T).T {fl / b:.0f}, dW G.T@X {fl / c:.0f}, dX"
        f" G@Wm {fl / d:.0f}"
    )
