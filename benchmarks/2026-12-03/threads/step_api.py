"""The reference step (or resnet18 w64 N32 with a second argument) through the API: median of 20 steps after 3.
[env] python step_api.py LABEL [w64]"""

# isort: off
import moco_ref  # noqa: F401  (first: the process's thread settings, before NumPy and Numba load)
# isort: on

import os
import sys
import time

import numpy as np

from moco_ref.bench.workload import REFERENCE, Config, make_ours

cfg = REFERENCE if len(sys.argv) < 3 else Config(arch="resnet18", width=64, batch=32)
model, step, sync = make_ours(cfg, "numpy")
for _ in range(3):
    step()
ts = []
for _ in range(int(os.environ.get("STEPS", 20))):
    t = time.perf_counter()
    step()
    ts.append(time.perf_counter() - t)
import numba  # noqa: E402

print(f"{sys.argv[1]:40s} {np.median(ts) * 1e3:.1f} ms  ({numba.threading_layer()})", flush=True)
