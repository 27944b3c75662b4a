"""The memory a training run will need, estimated before it allocates anything, and the check against
what the machine has.

Counted, for a step at the run's batch N, image side S, queue size K and dtype (b bytes a value):

    parameters     both encoders' weights, the query encoder's gradients and SGD's momentum buffers: 4·P·b
    queue          the D×K keys, and the step's N×(K+1) logits with their softmax and gradient: (D·K + 3·N·(K+1))·b
    activations    what the query encoder's forward keeps for its backward: per convolution its im2col
                   matrix X (N·Ho·Wo × kh·kw·C) or, where the backend computes it directly, its input
                   (N·H·W × C; backends.ops.conv2d_keeps_im2col), its BatchNorm's input (N·Ho·Wo × O) and the
                   ReLU's mask (one byte a value), and the layer's output until the next layer has read it;
                   in symmetric mode SYMMETRIC_ACTIVATIONS times that (the first direction's cache is still
                   held while the second direction's forward runs)
    workspace      the largest transient of a step: the key encoder's forward of one layer, or the
                   backward of one layer (its ∂X = G·Wm, ∂x and the gradients at the BatchNorm)
    views          the step's two augmented batches, N×3×S×S each
    data           the training and monitor images (uint8, n×S×S×3) and the kNN bank's features (n×D)

and the allocator's slack on top: the estimate multiplies the sum by ALLOCATOR_SLACK, the ratio of a
process's peak resident memory to that sum as ``moco-ref bench memory`` measures it (benchmarks/RESULTS.md
has the figures, and how close the sum comes to the arrays alive at a step's peak).  On CuPy the step's part
lives on the device and is checked against the device's free memory; the data stays on the host.
"""

from __future__ import annotations

import numpy as np

from backends import ops
from backends.cpu import host_available_bytes
from moco_ref.errors import UserError
from moco_ref.models import conv_sides, resnet_layout

ALLOCATOR_SLACK = 1.25
SYMMETRIC_ACTIVATIONS = 1.6


def parameter_count(layout) -> int:
    """The encoder's trainable values: convolution weights, BatchNorm's γ and β, the head's weights and biases."""
    total = 0
    for layer, _, _ in conv_sides(layout, 32):
        total += layer.c_out * layer.c_in * layer.kernel**2 + 2 * layer.c_out
    return total + sum(head.d_in * head.d_out + head.d_out for head in layout.head)


def estimate_bytes(needed: dict) -> int:
    """The estimate of the memory a run takes: the parts' sum and the allocator's slack."""
    return int(ALLOCATOR_SLACK * sum(needed.values()))


def step_bytes(
    arch: str,
    width: int,
    dim: int,
    mlp: bool,
    K: int,
    batch: int,
    image_size: int,
    dtype: str,
    symmetric: bool = False,
    xp=None,
) -> dict:
    """{part: bytes} of one training step on one device (see the module docstring), before the slack; ``xp`` the
    array module the step runs on (None: every convolution keeps its im2col matrix, the most it can take)."""
    b = np.dtype(dtype).itemsize
    layout = resnet_layout(arch, width, dim, mlp)
    kept, masks, transients = 0, 0, [0]
    for layer, side_in, side_out in conv_sides(layout, image_size):
        M = batch * side_out**2  # output pixels: rows of X
        cols, out, x_in = M * layer.kernel**2 * layer.c_in, M * layer.c_out, batch * side_in**2 * layer.c_in
        x_shape, w_shape = (batch, side_in, side_in, layer.c_in), (layer.c_out, layer.c_in, layer.kernel, layer.kernel)
        if xp is not None and not ops.conv2d_keeps_im2col(xp, x_shape, w_shape, layer.stride, layer.padding):
            cols = x_in  # a direct convolution keeps its input instead
        kept += cols + out
        masks += out if layer.relu else 0
        transients.append(cols + 2 * out + x_in)  # the key forward's layer, or its backward
    head = sum(batch * (h.d_in + h.d_out) for h in layout.head)
    activations = ((kept + head + batch * 3 * image_size**2) * b + masks) * (SYMMETRIC_ACTIVATIONS if symmetric else 1)
    return {
        "parameters": 4 * parameter_count(layout) * b,
        "queue": (dim * K + 3 * batch * (K + 1)) * b,
        "activations": int(activations),
        "workspace": max(transients) * b,
        "views": 2 * batch * 3 * image_size**2 * b,
    }


def data_bytes(train_images: int, monitor_images: int, image_size: int, dim: int) -> int:
    """The images held in memory (uint8) and the kNN bank's float32 features."""
    return (train_images + monitor_images) * image_size**2 * 3 + (train_images + monitor_images) * dim * 4


def size_text(n: float) -> str:
    """Bytes as the largest binary unit that keeps the number at least 1: 931 TiB, 1.2 GiB, 512 KiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if abs(n) < 1024 or unit == "EiB":
            return f"{n:.0f} {unit}" if unit == "B" or abs(n) >= 100 else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"


def check_fits(needed: dict, available: int | None, where: str, reduce: str) -> None:
    """UserError, in one line naming the estimate, its largest parts, what is available and what to reduce,
    when ``needed`` (bytes by part, before the slack) does not fit into ``available``."""
    total = estimate_bytes(needed)
    if available is None or total <= available:
        return
    parts = ", ".join(
        f"{name} {size_text(ALLOCATOR_SLACK * value)}"
        for name, value in sorted(needed.items(), key=lambda kv: -kv[1])[:3]
        if value
    )
    raise UserError(
        f"this run needs about {size_text(total)} of {where} memory ({parts}) and "
        f"{size_text(available)} is available; reduce {reduce}"
    )


def check_step_fits(config, backend, processes: int = 1) -> dict:
    """Refuses (UserError) a configuration whose training step cannot fit into the backend's memory; returns
    the estimate of this process's step.  Run before anything is allocated.  With W processes each holds
    batch/W samples; on the CPU the processes of one host (counted as all W) share its memory."""
    needed = step_bytes(
        config.arch,
        config.width,
        config.dim,
        config.mlp,
        config.K,
        max(1, config.batch_size // processes),
        config.image_size,
        config.dtype,
        config.symmetric,
        backend.xp,
    )
    sharing = 1 if backend.accelerated else processes
    check_fits(
        {name: value * sharing for name, value in needed.items()},
        backend.free_memory(),
        "device" if backend.accelerated else "host",
        "--moco-k, --batch-size, --width or --image-size",
    )
    return needed


def check_data_fits(train_images: int, monitor_images: int, config, step_needed: dict, backend) -> None:
    """Refuses a run whose images and kNN bank do not fit into the host's memory next to what the step takes
    there (all of it on the CPU; nothing on the host when the step lives on a GPU)."""
    needed = {"data": data_bytes(train_images, monitor_images, config.image_size, config.dim)}
    if not backend.accelerated:
        needed.update(step_needed)
    check_fits(
        needed,
        host_available_bytes(),
        "host",
        "the number of images (a smaller folder or dataset), "
        "--image-size, or the step's size (--moco-k, --batch-size, --width)",
    )


def memory_error_line(error: MemoryError, config, step: int) -> str:
    """The one line for an allocation that failed during training (NumPy's MemoryError, CuPy's
    OutOfMemoryError, which is one): where, with what batch, and what to reduce."""
    device = "GPU" if config.backend == "cupy" else "host"
    return (
        f"out of {device} memory at step {step} (batch {config.batch_size}, queue {config.K}, width "
        f"{config.width}, images {config.image_size}×{config.image_size}): {str(error).strip() or 'no detail'}; "
        f"reduce --batch-size, --moco-k, --width or --image-size"
    )
