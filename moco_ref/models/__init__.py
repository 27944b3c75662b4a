"""Encoders: ``build_encoder`` is the entry point."""

from moco_ref.models.resnet import (
    ARCHS,
    Forward,
    ResNetEncoder,
    conv_layers,
    conv_sides,
    resnet_layout,
)

__all__ = ["ARCHS", "Forward", "ResNetEncoder", "build_encoder", "conv_layers", "conv_sides", "resnet_layout"]


def build_encoder(
    arch="resnet18", dim=128, width=64, mlp=False, bn_splits=1, backend="numpy", seed=0, dtype="float32"
) -> ResNetEncoder:
    """Builds a CIFAR-style ResNet encoder (see :class:`ResNetEncoder` for the arguments)."""
    return ResNetEncoder(
        arch=arch, dim=dim, width=width, mlp=mlp, bn_splits=bn_splits, backend=backend, seed=seed, dtype=dtype
    )
