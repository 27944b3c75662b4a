"""The machine a benchmark ran on, for the header every suite prints and records: CPU and its vector extensions,
cores, versions, the BLAS NumPy uses and its threads, the load average, and the command line."""

from __future__ import annotations

import ctypes
import os
import platform
import sys
import time

import numpy as np

from backends import get_backend, ops
from backends.cpu import loaded_openblas


def blas_info() -> dict:
    """The BLAS NumPy uses: name, version, threads, and how the thread count was found."""
    try:
        from threadpoolctl import threadpool_info

        for pool in threadpool_info():
            if pool.get("user_api") == "blas":
                return {
                    "name": pool.get("internal_api"),
                    "version": pool.get("version"),
                    "threads": int(pool["num_threads"]),
                    "architecture": pool.get("architecture"),
                    "source": "threadpoolctl",
                }
    except ImportError:
        pass
    config = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    info = {
        "name": config.get("name"),
        "version": config.get("version"),
        "architecture": None,
        "threads": os.cpu_count() or 1,
        "source": "os.cpu_count()",
    }
    library, names = loaded_openblas()
    if library is not None:
        prefix, suffix = names
        info["threads"] = int(getattr(library, f"{prefix}get_num_threads{suffix}")())
        info["source"] = f"{prefix}get_num_threads{suffix} (ctypes)"
        get_core = getattr(library, f"{prefix}get_corename{suffix}", None)
        if get_core is not None:
            get_core.restype = ctypes.c_char_p
            info["architecture"] = get_core().decode()
    return info


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def vector_extensions() -> list[str]:
    """The CPU's vector extensions that matter for float32 products (from /proc/cpuinfo's flags)."""
    names = {
        "avx2": "AVX2",
        "fma": "FMA",
        "avx512f": "AVX-512",
        "avx512_bf16": "AVX-512 BF16",
        "amx_tile": "AMX",
        "neon": "NEON",
        "asimd": "ASIMD",
        "sve": "SVE",
    }
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    return [label for flag, label in names.items() if flag in flags]
    except OSError:
        pass
    return []


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_header(backend_name: str, command: str) -> dict:
    """Everything the figures depend on: machine, versions, BLAS, threads, backend, command."""
    from importlib import metadata

    try:
        torch_version = metadata.version("torch")  # without importing torch (seconds)
    except metadata.PackageNotFoundError:
        torch_version = None
    torch = sys.modules.get("torch")
    header = {
        "cpu": cpu_model(),
        "vector_extensions": vector_extensions(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch_version,
        "blas": blas_info(),
        "torch_threads": torch.get_num_threads() if torch else None,
        "backend": backend_name,
        "fast_paths": ops.fast_path_modules(get_backend(backend_name).xp),
        "numba": _version("numba"),
        "kernel_threads": kernel_threads(),
        "command": command,
        "load_average_start": load_average(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    if backend_name == "cupy":
        xp = get_backend("cupy").xp
        header["gpu"] = xp.cuda.runtime.getDeviceProperties(0)["name"].decode()
        header["cupy"] = xp.__version__
    return header


def kernel_threads() -> dict | None:
    """Numba's kernels' threads, where they have started: the threading layer, the thread count, and the
    OpenMP waiting settings of the environment (backends/numba_fast.py, moco_ref/run/runtime.py)."""
    numba = sys.modules.get("numba")
    if numba is None:
        return None
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return None
    waits = {name: os.environ[name] for name in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY") if name in os.environ}
    return {"layer": layer, "threads": numba.get_num_threads(), **waits}


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def header_lines(h: dict) -> list[str]:
    blas = h["blas"]
    lines = [
        f"machine : {h['cpu']}, {h['cores']} cores ({h['cores_usable']} usable)"
        + (f", {' '.join(h['vector_extensions'])}" if h.get("vector_extensions") else "")
        + (f", GPU {h['gpu']}" if "gpu" in h else ""),
        f"versions: python {h['python']}, numpy {h['numpy']}, torch {h['torch'] or 'not installed'}, "
        f"numba {h.get('numba') or 'not installed'}" + (f", cupy {h['cupy']}" if "cupy" in h else ""),
        f"fast    : {', '.join(h.get('fast_paths') or ['plain formulas only'])}"
        + _threads_text(h.get("kernel_threads")),
        f"BLAS    : {blas['name']} {blas['version']} ({blas['architecture'] or 'kernel unknown'}), "
        f"{blas['threads']} threads [{blas['source']}]; PyTorch is given as many "
        f"(torch.set_num_threads; reported by the step suite)",
        f"backend : {h['backend']}    load average (1, 5, 15 min): {h['load_average_start']}",
        f"command : {h['command']}",
    ]
    return lines


def _threads_text(threads: dict | None) -> str:
    if not threads:
        return ""
    waits = "".join(f", {k}={v}" for k, v in threads.items() if k not in ("layer", "threads"))
    return f" (Numba's kernels on {threads['threads']} {threads['layer']} threads{waits})"


def python_command() -> str:
    """The command line of this process, as typed (python -m … when run as a module)."""
    import shlex

    argv0 = os.path.basename(sys.argv[0]) if sys.argv else "python"
    return shlex.join([argv0, *sys.argv[1:]])
