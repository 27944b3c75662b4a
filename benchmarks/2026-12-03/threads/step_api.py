"""The reference step (or resnet18 w64 N32) through the API: median of 20 steps (STEPS) after 3; rule=N runs the
direct 3×3 kernels where C·O ≤ N on images at least 16 wide (backends/numba_fast.py's DIRECT_RULE), rule=none nowhere.
    [env] python step_api.py LABEL [w64] [rule=1024|256|none]"""

# isort: off
import moco_ref  # noqa: F401  (first: the process's thread settings, before NumPy and Numba load)
# isort: on

import os
import sys

import numba

from backends import numba_fast
from moco_ref.bench.clock import median_ms
from moco_ref.bench.workload import REFERENCE, Config, make_ours

label, options = sys.argv[1], sys.argv[2:]
for option in options:
    if option.startswith("rule="):
        rule = option.removeprefix("rule=")
        numba_fast.DIRECT_RULE = {} if rule == "none" else {(3, 1, 1): (int(rule), 16)}
config = Config(arch="resnet18", width=64, batch=32) if "w64" in options else REFERENCE
model, step, sync = make_ours(config, "numpy")
ms = median_ms(step, reps=int(os.environ.get("STEPS", 20)), warmup=3)
print(f"{label:40s} {ms:.1f} ms  ({numba.threading_layer()})", flush=True)
