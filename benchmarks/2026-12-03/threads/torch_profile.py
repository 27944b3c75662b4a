"""Where PyTorch's reference step spends its time (torch.profiler, 10 steps after 5): python torch_profile.py"""

# isort: off
import moco_ref  # noqa: F401  (first: the process's thread settings, before NumPy and Numba load)
# isort: on

import torch

torch.set_num_threads(2)
from moco_ref.bench.workload import REFERENCE, make_torch  # noqa: E402

model, step, sync = make_torch(REFERENCE, "cpu")
for _ in range(5):
    step()
from torch.profiler import ProfilerActivity, profile  # noqa: E402

with profile(activities=[ProfilerActivity.CPU]) as prof:
    for _ in range(10):
        step()
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
