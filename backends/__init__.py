"""Array backends: NumPy for checking, CuPy for the GPU.

The rule of this package is that *the data decides the backend*.  Array
functions never consult a global mode; they ask the array they were given::

    xp = get_array_module(x)      # numpy or cupy, whichever holds x
    y = xp.maximum(x, 0)

Only code that creates arrays from nothing (initial weights, the key queue,
random permutations) needs a backend object, and it takes one explicitly::

    be = get_backend("cupy")
    w = be.to_device(host_rng.standard_normal((64, 3, 3, 3)))

All randomness is drawn on the host from a ``numpy.random.Generator`` and
moved to the device, so one seed gives the same numbers on both backends.

Speed work lives in one place: ``backends.ops`` holds the few primitives the
layers are written on, each its plain formula, and picks a backend's faster
equal version (``numpy_fast.py``, ``numba_fast.py``, ``cupy_fast.py``) by the data's
array module; its docstring's table says which function runs.  Making the NumPy
backend (``get_backend("numpy")``) applies the process settings its path runs with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy

__all__ = [
    "Backend",
    "BackendUnavailable",
    "available_backends",
    "get_array_module",
    "get_backend",
    "to_numpy",
]

BACKEND_NAMES = ("numpy", "cupy")
GPU_INSTALL_HINT = "pip install 'moco-ref[gpu]'"


class BackendUnavailable(RuntimeError):
    """Raised when a backend is asked for but cannot run on this machine."""


@dataclass(frozen=True)
class Backend:
    """A small handle on one array library.

    Attributes:
        name: ``"numpy"`` or ``"cupy"``.
        xp: the array module itself (``numpy`` or ``cupy``).
        to_device: host ``numpy.ndarray`` -> array on this backend.
        to_host: array on this backend -> host ``numpy.ndarray``.
        synchronize: waits until queued device work has finished (a no-op on NumPy).
        accelerated: True where the arrays live on an accelerator (CuPy), where work that is slow on a
            CPU (e.g. recomputing augmented features every epoch) is cheap.
        free_memory: bytes the arrays may still take (the host's available memory, the device's free
            memory), or None where that cannot be known.
        pool_bytes: bytes the backend's memory pool holds for arrays (CuPy's default pool), or None where
            there is no such pool (NumPy).
    """

    name: str
    xp: ModuleType
    to_device: Callable[[Any], Any]
    to_host: Callable[[Any], numpy.ndarray]
    synchronize: Callable[[], None]
    accelerated: bool = False
    free_memory: Callable[[], int | None] = lambda: None
    pool_bytes: Callable[[], int | None] = lambda: None

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"


def _numpy_backend() -> Backend:
    """NumPy's backend.  Making it applies the settings of the process NumPy's path runs in, here and nowhere
    else: glibc keeps freed large blocks for the next step (backends/cpu.py, ``reuse_freed_memory``), and where
    NumPy's arrays run Numba's kernels (backends/ops.py's table), those run as many threads as the BLAS
    (backends/numba_fast.py, ``set_threads``; BackendUnavailable where Numba's threading layer cannot start).
    The settings that must precede NumPy's import (the BLAS's threads) are moco_ref/run/runtime.py's."""
    from backends import cpu, ops

    cpu.reuse_freed_memory()
    if ops.NUMBA in ops.fast_path_modules(numpy):
        from backends import numba_fast

        numba_fast.set_threads()
    return Backend(
        name="numpy",
        xp=numpy,
        to_device=numpy.asarray,
        to_host=numpy.asarray,
        synchronize=lambda: None,
        free_memory=cpu.host_available_bytes,
    )


def _cupy_backend() -> Backend:
    try:
        import cupy
    except ImportError as error:  # CuPy is an optional extra.
        raise BackendUnavailable(
            f"the cupy backend needs CuPy, which is not installed ({error}); install it with: {GPU_INSTALL_HINT}"
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # no driver, no device, broken CUDA install
        raise BackendUnavailable(
            f"CuPy is installed but no usable CUDA GPU was found ({error}); "
            f"use --backend numpy, or install a CuPy matching your CUDA with: {GPU_INSTALL_HINT}"
        ) from None
    if count < 1:
        raise BackendUnavailable("CuPy is installed but no CUDA GPU was found; use --backend numpy")
    return Backend(
        name="cupy",
        xp=cupy,
        to_device=cupy.asarray,
        to_host=cupy.asnumpy,
        synchronize=lambda: cupy.cuda.get_current_stream().synchronize(),
        accelerated=True,
        free_memory=lambda: int(cupy.cuda.runtime.memGetInfo()[0]),
        pool_bytes=lambda: int(cupy.get_default_memory_pool().total_bytes()),
    )


_CACHE: dict[str, Backend] = {}


def get_backend(name: str | Backend) -> Backend:
    """Returns the backend called ``name`` (``"numpy"`` or ``"cupy"``).

    Raises:
        BackendUnavailable: CuPy is missing or no GPU can be used; the message names the fix.
        ValueError: ``name`` is not a known backend.
    """
    if isinstance(name, Backend):
        return name
    if name not in BACKEND_NAMES:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
    if name not in _CACHE:
        _CACHE[name] = _numpy_backend() if name == "numpy" else _cupy_backend()
    return _CACHE[name]


def available_backends() -> list[str]:
    """Names of the backends that can run here, ``"numpy"`` always first."""
    names = ["numpy"]
    try:
        get_backend("cupy")
        names.append("cupy")
    except BackendUnavailable:
        pass
    return names


def get_array_module(*arrays: Any) -> ModuleType:
    """Returns ``cupy`` if any argument is a CuPy array, else ``numpy``.

    This is how array code picks its namespace: from the data, never from a
    global setting.  CuPy is imported only if it already is (a NumPy-only user
    never pays for it).
    """
    import sys

    cupy = sys.modules.get("cupy")
    if cupy is not None:
        for array in arrays:
            if isinstance(array, cupy.ndarray):
                return cupy
    return numpy


def to_numpy(array: Any) -> numpy.ndarray:
    """Returns a host ``numpy.ndarray`` holding ``array`` (copied off the GPU if needed)."""
    xp = get_array_module(array)
    if xp is numpy:
        return numpy.asarray(array)
    return xp.asnumpy(array)
