"""Floating-point operations of one MoCo step, counted from the encoder's table of layers.

Notation: N batch, K queue size, D feature dimension (dim), S image side.
"""

from __future__ import annotations

from moco_ref.models import conv_sides


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
