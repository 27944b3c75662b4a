"""What every benchmark suite shares: configurations, the machine header, clocks, FLOP counts, tables.

Timing rules (the machines are shared and noisy):
    * warm-up repetitions first, never timed;
    * the backend is synchronised before every clock read (a no-op on NumPy);
    * ours and PyTorch's repetitions alternate (ours, torch, ours, torch, …) so both see the same noise;
    * the figure reported is the MEDIAN of the timed repetitions.

Notation: N batch, K queue size, D feature dimension (dim), S image side, w base width.
"""

from __future__ import annotations

import ctypes
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from backends import get_backend, ops
from backends.cpu import loaded_openblas
from moco_ref.moco import MoCo
from moco_ref.models import ARCHS, conv_sides


@dataclass(frozen=True)
class Config:
    """One MoCo step to measure (float32; PyTorch's twin uses the same BatchNorm splits, so it does the same work)."""

    arch: str = "resnet10"
    width: int = 16  # w: stage widths w, 2w, 4w, 8w
    batch: int = 64  # N
    K: int = 4096  # queue size
    dim: int = 128  # D
    size: int = 32  # S: images are S×S
    bn_splits: int = 1  # 1 = plain BatchNorm (nn.BatchNorm2d in PyTorch's twin)

    @property
    def label(self) -> str:
        return f"{self.arch} w{self.width} N{self.batch} K{self.K} {self.size}×{self.size}"

    def as_dict(self) -> dict:
        return dict(asdict(self), label=self.label)


REFERENCE = Config()  # the CPU reference configuration
TINY = Config(width=2, batch=8, K=64, dim=16, size=8)  # for the smoke tests only


# ------------------------------------------------------------------ optional libraries
def import_torch():
    """torch, or None when it is not installed (every PyTorch figure is then left out)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def torch_device(backend_name: str):
    """ "cpu" for the NumPy backend; "cuda" for CuPy when torch sees a GPU; None when no fair comparison exists."""
    torch = import_torch()
    if torch is None:
        return None
    if backend_name == "numpy":
        return "cpu"
    return "cuda" if torch.cuda.is_available() else None


def torch_synchronize(device) -> None:
    if device == "cuda":
        import_torch().cuda.synchronize()


# ------------------------------------------------------------------------- BLAS threads
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


# ---------------------------------------------------------------------------- machine
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
        "command": command,
        "load_average_start": load_average(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    if backend_name == "cupy":
        xp = get_backend("cupy").xp
        header["gpu"] = xp.cuda.runtime.getDeviceProperties(0)["name"].decode()
        header["cupy"] = xp.__version__
    return header


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
        f"fast    : {', '.join(h.get('fast_paths') or ['plain formulas only'])}",
        f"BLAS    : {blas['name']} {blas['version']} ({blas['architecture'] or 'kernel unknown'}), "
        f"{blas['threads']} threads [{blas['source']}]; PyTorch is given as many "
        f"(torch.set_num_threads; reported by the step suite)",
        f"backend : {h['backend']}    load average (1, 5, 15 min): {h['load_average_start']}",
        f"command : {h['command']}",
    ]
    return lines


def set_torch_threads_like_blas() -> int | None:
    """Gives PyTorch as many threads as NumPy's BLAS has; returns that number (None without torch)."""
    torch = import_torch()
    if torch is None:
        return None
    torch.set_num_threads(blas_info()["threads"])
    return torch.get_num_threads()


# ------------------------------------------------------------------------------ clocks
def median(values) -> float:
    return float(statistics.median(values))


def clock(fn, synchronize) -> float:
    """Seconds fn() takes, with the device synchronised before both clock reads."""
    synchronize()
    start = time.perf_counter()
    fn()
    synchronize()
    return time.perf_counter() - start


def interleaved(runners: dict, reps: int, warmup: int) -> dict:
    """Times several runners in alternation.

    Args:
        runners: {name: (fn, synchronize)}.
        reps, warmup: timed and untimed rounds; each round runs every runner once, in order.
    Returns:
        {name: [seconds of each timed round]}.
    """
    for _ in range(warmup):
        for fn, sync in runners.values():
            clock(fn, sync)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(reps):
        for name, (fn, sync) in runners.items():
            times[name].append(clock(fn, sync))
    return times


# ---------------------------------------------------------------------- the two steps
def make_inputs(config: Config, backend, seed: int = 0):
    """Two (N, 3, S, S) float32 views on the backend (random: the step's cost does not depend on pixels)."""
    rng = np.random.default_rng(seed)
    shape = (config.batch, 3, config.size, config.size)
    x_q = rng.standard_normal(shape, dtype=np.float32)
    x_k = x_q + np.float32(0.1) * rng.standard_normal(shape, dtype=np.float32)
    return backend.to_device(x_q), backend.to_device(x_k)


def make_ours(config: Config, backend_name: str):
    """Our MoCo and a zero-argument callable running one step."""
    backend = get_backend(backend_name)
    model = MoCo(
        arch=config.arch,
        width=config.width,
        dim=config.dim,
        K=config.K,
        m=0.99,
        T=0.1,
        bn_splits=config.bn_splits,
        backend=backend,
        dtype="float32",
    )
    x_q, x_k = make_inputs(config, backend)
    return model, (lambda: model.step(x_q, x_k)), backend.synchronize


def make_torch(config: Config, device: str):
    """PyTorch's MoCo step (same architecture, batch and dtype) and a callable running one step."""
    torch = import_torch()
    from moco_ref.bench.torch_twin import TorchMoCo

    model = TorchMoCo.build(
        ARCHS[config.arch], config.width, config.dim, config.K, m=0.99, T=0.1, bn_splits=config.bn_splits, device=device
    )
    x_q, x_k = make_inputs(config, get_backend("numpy"))
    x_q, x_k = torch.from_numpy(x_q).to(device), torch.from_numpy(x_k).to(device)
    return model, (lambda: model.step(x_q, x_k)), (lambda: torch_synchronize(device))


# ---------------------------------------------------------------------------- FLOPs
def conv_layers(encoder, size: int) -> list[dict]:
    """Every convolution of the encoder with its output side, walked from its table of layers
    (``encoder.layout``, models/resnet.py) for size×size inputs."""
    return [
        {
            "name": layer.conv,
            "C": layer.c_in,
            "O": layer.c_out,
            "k": (layer.kernel, layer.kernel),
            "stride": layer.stride,
            "out": side_out,
        }
        for layer, _, side_out in conv_sides(encoder.layout, size)
    ]


def step_flops(encoder, batch: int, K: int, size: int) -> dict:
    """Floating-point operations of one MoCo step, counted analytically (a multiply-add = 2 FLOPs).

    Counted: the matrix products only.  conv: MACs = N·Ho·Wo·O·C·kh·kw per layer; the step runs it
    4 times (query forward, ∂x, ∂w, key forward) except the first conv's ∂x, which is skipped.  fc
    (and the MLP head): N·D_in·D_out MACs, 4 times likewise.  InfoNCE: q·queueᵀ, N·K·D MACs, forward
    and again for ∂q.  Not counted: BatchNorm, ReLU, pooling, normalisation, softmax, SGD, EMA,
    im2col/col2im copies (memory-bound, a few FLOPs per element).
    """
    N, D = batch, encoder.dim
    layers = conv_layers(encoder, size)
    conv_forward = sum(2 * N * l["out"] ** 2 * l["O"] * l["C"] * l["k"][0] * l["k"][1] for l in layers)
    first = layers[0]
    first_conv_dx = 2 * N * first["out"] ** 2 * first["O"] * first["C"] * first["k"][0] * first["k"][1]
    head_forward = sum(2 * N * layer.d_in * layer.d_out for layer in encoder.layout.head)
    info_nce = 2 * (2 * N * K * D)
    total = 4 * conv_forward - first_conv_dx + 4 * head_forward + info_nce
    return {
        "conv_forward": conv_forward,
        "conv_step": 4 * conv_forward - first_conv_dx,
        "head_step": 4 * head_forward,
        "info_nce_step": info_nce,
        "total": total,
    }


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


# ------------------------------------------------------------------------------ output
def table(headers: list[str], rows: list[list], echo) -> None:
    """Prints a plain aligned table (numbers right-aligned, text left-aligned)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]

    def line(values, raw):
        return "  ".join(
            v.rjust(w) if isinstance(r, (int, float)) else v.ljust(w) for v, w, r in zip(values, widths, raw)
        )

    echo(line(headers, headers))
    echo("  ".join("-" * w for w in widths))
    for row, raw in zip(cells, rows):
        echo(line(row, raw))


def _cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        magnitude = abs(value)
        if magnitude >= 100:
            return f"{value:,.0f}"
        if magnitude >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    return str(value)


def banner(title: str, echo) -> None:
    echo("")
    echo(f"== {title} == (load average now: {load_average()})")


def python_command() -> str:
    """The command line of this process, as typed (python -m … when run as a module)."""
    import shlex

    argv0 = os.path.basename(sys.argv[0]) if sys.argv else "python"
    return shlex.join([argv0, *sys.argv[1:]])
