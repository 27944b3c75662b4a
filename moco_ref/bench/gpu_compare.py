"""GPU benchmark: the CIFAR demo configuration on CuPy against PyTorch eager (cuDNN) on the same GPU.

    moco-ref bench gpu            # float32, then TF32, each in its own process
    moco-ref bench gpu --parts    # where our step's time goes at this configuration

CuPy reads CUPY_TF32 when it is imported, so each precision runs in a fresh
subprocess; inside it, our step and PyTorch's alternate (ours, torch, ours, …)
so that both see the same clocks and neighbours.  Figures: median step time
and images/s over the timed steps, after warm-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

# The CIFAR demo's network, batch and queue; plain BatchNorm (bn_splits 1) on both sides, as in every recorded
# figure: the demo's 8 BN splits cost the same arithmetic, and the two split differently (PyTorch's twin as a
# view to S·C channels), which would only skew the ratio.
CONFIG: dict[str, Any] = dict(arch="resnet18", width=64, batch=512, K=4096, dim=128, image=32, bn_splits=1)


def _measure(tf32: bool, steps: int, warmup: int, config: dict) -> dict:
    import numpy as np
    import torch

    from backends import get_backend
    from moco_ref.moco import MoCo
    from moco_ref.models import ARCHS
    from moco_ref.pytorch_moco import TorchMoCo

    cupy_backend = get_backend("cupy")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    c = config
    ours = MoCo(
        arch=c["arch"],
        width=c["width"],
        dim=c["dim"],
        K=c["K"],
        bn_splits=c["bn_splits"],
        backend="cupy",
        dtype="float32",
    )
    theirs = TorchMoCo.build(ARCHS[c["arch"]], c["width"], c["dim"], c["K"], bn_splits=c["bn_splits"], device="cuda")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((c["batch"], 3, c["image"], c["image"])).astype(np.float32)
    x_ours = cupy_backend.to_device(x)
    x_torch = torch.from_numpy(x).cuda()

    def time_ours():
        cupy_backend.synchronize()
        start = time.perf_counter()
        ours.step(x_ours, x_ours)
        cupy_backend.synchronize()
        return time.perf_counter() - start

    def time_torch():
        torch.cuda.synchronize()
        start = time.perf_counter()
        theirs.step(x_torch, x_torch)
        torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(warmup):
        time_ours()
        time_torch()
    ours_times, torch_times = [], []
    for _ in range(steps):
        ours_times.append(time_ours())
        torch_times.append(time_torch())
    ours_s, torch_s = float(np.median(ours_times)), float(np.median(torch_times))
    return {
        "tf32": tf32,
        "device": torch.cuda.get_device_name(),
        "config": c,
        "steps": steps,
        "ours_step_s": ours_s,
        "torch_step_s": torch_s,
        "ours_images_per_s": c["batch"] / ours_s,
        "torch_images_per_s": c["batch"] / torch_s,
        "throughput_ratio_ours_over_torch": torch_s / ours_s,
        "peak_gpu_bytes_ours": int(cupy_backend.xp.get_default_memory_pool().total_bytes()),
        "peak_gpu_bytes_torch": int(torch.cuda.max_memory_allocated()),
    }


def parts(steps: int = 5, warmup: int = 2, config: dict | None = None, echo=print) -> dict:
    """The ``parts`` suite on CuPy for this configuration: where our GPU step's time goes."""
    from backends import get_backend
    from moco_ref.bench.parts import run_parts
    from moco_ref.bench.workload import Config

    get_backend("cupy")  # fails first, before the banner, where there is no GPU
    c = config or CONFIG
    bench_config = Config(
        arch=c["arch"],
        width=c["width"],
        batch=c["batch"],
        K=c["K"],
        dim=c["dim"],
        size=c["image"],
        bn_splits=c["bn_splits"],
    )
    return run_parts("cupy", echo, bench_config, steps, warmup, "cifar")


def require_gpu() -> None:
    """Raises BackendUnavailable (CuPy or its GPU missing) or UserError (no CUDA PyTorch) before any work."""
    from backends import get_backend
    from moco_ref.errors import UserError

    get_backend("cupy")
    try:
        import torch
    except ImportError:
        raise UserError("the GPU benchmark compares with PyTorch, which is not installed") from None
    if not torch.cuda.is_available():
        raise UserError("the GPU benchmark compares with PyTorch on the GPU, but this PyTorch sees no CUDA device")


def run(steps: int = 10, warmup: int = 3, config: dict | None = None, echo=print) -> list[dict]:
    """Runs float32 and TF32 measurements, each in a subprocess; prints a table; returns the records."""
    require_gpu()
    config = config or CONFIG
    records = []
    for tf32 in (False, True):
        env = dict(os.environ, CUPY_TF32="1" if tf32 else "0")
        code = (
            "import json, sys; from moco_ref.bench.gpu_compare import _measure; "
            f"print(json.dumps(_measure({tf32}, {steps}, {warmup}, {config!r})))"
        )
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            echo(f"{'TF32' if tf32 else 'float32'}: failed\n{done.stderr[-3000:]}")
            continue
        records.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if records:
        echo(f"GPU: {records[0]['device']}; config {records[0]['config']}")
        echo(
            f"{'precision':10s} {'ours img/s':>11s} {'torch img/s':>12s} {'ours/torch':>11s} "
            f"{'ours GiB':>9s} {'torch GiB':>10s}"
        )
        for r in records:
            echo(
                f"{'TF32' if r['tf32'] else 'float32':10s} {r['ours_images_per_s']:11.0f} "
                f"{r['torch_images_per_s']:12.0f} {r['throughput_ratio_ours_over_torch']:11.2f} "
                f"{r['peak_gpu_bytes_ours'] / 2**30:9.2f} {r['peak_gpu_bytes_torch'] / 2**30:10.2f}"
            )
    return records
