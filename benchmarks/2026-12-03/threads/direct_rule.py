"""The step with another DIRECT_RULE: C·O at most N on images at least 16 wide, or none.
python direct_rule.py LABEL 1024|256|none [width of a resnet18]"""

# isort: off
import moco_ref  # noqa: F401  (first: the process's thread settings, before NumPy and Numba load)
# isort: on

import os
import sys
import time

import numpy as np

from backends import numba_fast as nf

rule = sys.argv[2]
nf.DIRECT_RULE = {} if rule == "none" else {(3, 1, 1): (int(rule), 16)}
from moco_ref.bench.workload import REFERENCE, Config, make_ours  # noqa: E402  (after the rule is set)

cfg = (
    REFERENCE
    if len(sys.argv) < 4
    else Config(arch="resnet18", width=int(sys.argv[3]), batch=64 if sys.argv[3] == "32" else 32)
)
model, step, sync = make_ours(cfg, "numpy")
for _ in range(3):
    step()
ts = []
for _ in range(int(os.environ.get("STEPS", 20))):
    t = time.perf_counter()
    step()
    ts.append(time.perf_counter() - t)
print(f"{sys.argv[1]:30s} {np.median(ts) * 1e3:.1f} ms", flush=True)
