"""What a speed suite measures: one MoCo step's configuration, its inputs, and the step built on both sides
(moco-ref's MoCo and PyTorch's, moco_ref/pytorch_moco.py).

Notation: N batch, K queue size, D feature dimension (dim), S image side, w base width.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from backends import get_backend
from moco_ref.bench.optional_torch import import_torch, torch_synchronize
from moco_ref.moco import MoCo
from moco_ref.models import ARCHS


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
    from moco_ref.pytorch_moco import TorchMoCo

    model = TorchMoCo.build(
        ARCHS[config.arch], config.width, config.dim, config.K, m=0.99, T=0.1, bn_splits=config.bn_splits, device=device
    )
    x_q, x_k = make_inputs(config, get_backend("numpy"))
    x_q, x_k = torch.from_numpy(x_q).to(device), torch.from_numpy(x_k).to(device)
    return model, (lambda: model.step(x_q, x_k)), (lambda: torch_synchronize(device))
