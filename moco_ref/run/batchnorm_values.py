"""Whether every BatchNorm of a run sees enough values to have statistics, checked before the first step.

Notation: N the global batch, W processes, S BatchNorm groups on each (--bn-splits), Ho×Wo a layer's output.

In training a BatchNorm normalises each channel over the M = (N / W / S)·Ho·Wo values of one group
(moco_ref/layers/batchnorm.py).  With M = 1 the one value is its own mean: x̂ = (x − μ)/√(σ² + ε) = 0,
so y = β whatever the input, and the encoder's output no longer depends on its image; the unbiased
variance σ²·M/(M − 1) of the running statistics divides by zero.  PyTorch refuses the same configuration
("Expected more than 1 value per channel when training").  The layers' output sizes come from the table of
layers (moco_ref/models/resnet.py's ``conv_sides``, the walk the memory estimate uses too).  Training drops
the last partial batch, so every step has N images.  Evaluation uses the running statistics only.
"""

from __future__ import annotations

from moco_ref.errors import UserError
from moco_ref.models import conv_sides, resnet_layout

FEWEST_VALUES = 2


def fewest_values(arch: str, width: int, image_size: int, images_per_group: int) -> tuple[str, int, int]:
    """(BatchNorm name, its output side, its values per channel M) of the BatchNorm with the fewest values
    per channel (the first in forward order among equals), for images_per_group images of image_size²."""
    layout = resnet_layout(arch, width, 1, False)  # the head has no BatchNorm
    layer, _, side = min(conv_sides(layout, image_size), key=lambda row: row[2])
    return layer.bn, side, images_per_group * side * side


def check_batchnorm_values(config, processes: int = 1) -> None:
    """UserError, in one line naming the layer and what to change, when a BatchNorm of this run would see
    fewer than FEWEST_VALUES values per channel at a step.  Call it once --batch-size and --bn-splits are known
    to split evenly (moco_ref.data.check_batchable)."""
    per_group = config.batch_size // processes // config.bn_splits
    name, side, values = fewest_values(config.arch, config.width, config.image_size, per_group)
    if values >= FEWEST_VALUES:
        return
    size = config.image_size + 1
    while fewest_values(config.arch, config.width, size, per_group)[2] < FEWEST_VALUES:
        size += 1
    shared = f" / {processes} processes" if processes > 1 else ""
    raise UserError(
        f"BatchNorm {name} would normalise {values} value per channel ({per_group} image per BatchNorm "
        f"group: --batch-size {config.batch_size}{shared} / --bn-splits {config.bn_splits}, × its "
        f'{side}×{side} output), and its statistics need at least {FEWEST_VALUES} (PyTorch: "Expected '
        f'more than 1 value per channel when training"); give each group at least 2 images (a larger '
        f"--batch-size or fewer --bn-splits) or use --image-size {size} or more"
    )
