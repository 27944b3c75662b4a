"""PyTorch where it is installed: its import, the device that matches our backend, its clock synchronisation and
its thread count.  Without torch every PyTorch figure is left out; nothing here imports torch at module level."""

from __future__ import annotations

from moco_ref.bench.machine import blas_info


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


def set_torch_threads_like_blas() -> int | None:
    """Gives PyTorch as many threads as NumPy's BLAS has; returns that number (None without torch)."""
    torch = import_torch()
    if torch is None:
        return None
    torch.set_num_threads(blas_info()["threads"])
    return torch.get_num_threads()
