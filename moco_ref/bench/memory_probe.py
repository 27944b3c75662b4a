"""Peak memory of one implementation's MoCo steps, measured in this fresh process.

    python -m moco_ref.bench.memory_probe ours|torch --arch resnet10 --width 16 --batch 64 --K 4096 --steps 3

Prints one JSON line: the resident set size after the imports and, for ours, the compiled kernels (the baseline), the
peak resident set size after building the model and running the steps (VmHWM, the
process's own ``ru_maxrss``; see :func:`peak_rss_bytes`), and their difference,
which is what the model, its activations and its workspace added.  On a GPU backend it also reports the
device memory held (CuPy's pool, or torch.cuda.max_memory_allocated).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys


def _proc_status(field: str) -> int | None:
    """A memory field of /proc/self/status in bytes (VmRSS, VmHWM), or None where there is no /proc."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def ru_maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def current_rss_bytes() -> int:
    """The resident set size now (VmRSS), or the peak so far where /proc is missing."""
    return _proc_status("VmRSS") or ru_maxrss_bytes()


def peak_rss_bytes() -> int:
    """This process's peak resident set size.

    Linux keeps ru_maxrss across fork + exec, so a probe started from a large parent
    (one that imported torch, say) inherits the parent's peak.  VmHWM belongs to the
    process's own address space and starts afresh at exec; it is used where it exists,
    and equals ru_maxrss whenever the probe's own peak exceeds the parent's.
    """
    return _proc_status("VmHWM") or ru_maxrss_bytes()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=("ours", "torch"))
    parser.add_argument("--arch", default="resnet10")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--K", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args(argv)

    from backends import get_backend
    from backends.cpu import reuse_freed_memory

    reuse_freed_memory()  # as `moco-ref train` does, for both implementations alike
    import moco_ref.moco  # noqa: F401  (imported before the baseline: the import is not the model)
    from moco_ref.bench.optional_torch import torch_device
    from moco_ref.bench.workload import Config, make_ours, make_torch

    if args.which == "torch":
        import torch

        import moco_ref.pytorch_moco  # noqa: F401 (its import is part of the baseline measured)

        if args.threads:
            torch.set_num_threads(args.threads)
    config = Config(args.arch, args.width, args.batch, args.K, args.dim, args.size)
    if args.which == "ours":  # load the compiled kernels (a fixed cost, like an import) before the baseline
        make_ours(Config("resnet10", width=1, batch=2, K=4, dim=4, size=8), args.backend)[1]()
    baseline = current_rss_bytes()
    if args.which == "ours":
        _, step, sync = make_ours(config, args.backend)
    else:
        device = torch_device(args.backend)
        if device is None:
            raise SystemExit(f"error: no PyTorch comparison for backend {args.backend}")
        _, step, sync = make_torch(config, device)
    for _ in range(args.steps):
        step()
    sync()
    peak = peak_rss_bytes()
    from moco_ref.run.footprint import estimate_bytes, step_bytes

    record = {
        "which": args.which,
        "config": config.as_dict(),
        "steps": args.steps,
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": peak,
        "added_bytes": peak - baseline,
        "ru_maxrss_bytes": ru_maxrss_bytes(),
    }
    if args.which == "ours":
        record["estimate_bytes"] = estimate_bytes(
            step_bytes(
                config.arch,
                config.width,
                config.dim,
                False,
                config.K,
                config.batch,
                config.size,
                "float32",
                xp=get_backend(args.backend).xp,
            )
        )
    if args.backend == "cupy":
        if args.which == "ours":
            record["device_pool_bytes"] = get_backend("cupy").pool_bytes()
        else:
            import torch

            record["device_peak_bytes"] = int(torch.cuda.max_memory_allocated())
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    main()
