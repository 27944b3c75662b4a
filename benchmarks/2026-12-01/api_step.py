"""The reference step through the Python API, as the README shows it; prints the median step time."""

import sys

if sys.argv[1] == "numpy-first":
    import numpy as np  # noqa: F401  (a user's script that imports NumPy before moco_ref)
import statistics
import time

import numpy as np

import moco_ref  # noqa: F401 (before NumPy: OpenBLAS's idle threads sleep)
from moco_ref.moco import MoCo

model = MoCo(arch="resnet10", width=16, dim=128, K=4096, m=0.99, T=0.1, bn_splits=1, dtype="float32")
rng = np.random.default_rng(0)
x = rng.standard_normal((64, 3, 32, 32), dtype=np.float32)
y = x + np.float32(0.1) * rng.standard_normal(x.shape, dtype=np.float32)
for _ in range(3):
    model.step(x, y)
times = []
for _ in range(15):
    t = time.perf_counter()
    model.step(x, y)
    times.append(time.perf_counter() - t)
print(f"{sys.argv[1]}: median {statistics.median(times):.4f} s")
