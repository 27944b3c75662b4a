"""Export the query encoder of a checkpoint as a PyTorch state_dict (``moco-ref export``).

The official recipe for using a MoCo encoder elsewhere: take the ``encoder_q.*`` entries of the
checkpoint, strip the prefix and drop ``fc.*`` (the contrastive head), leaving the names of
torchvision's ResNet: ``conv1.weight``, ``bn1.running_mean``, ``layer1.0.conv1.weight``, …
moco-ref already stores PyTorch's names, shapes and layouts, so nothing else changes.

Files:
- ``--out FILE.npz``: one ``.npz`` of plain arrays (``numpy.load(FILE, allow_pickle=False)`` reads
  it), no metadata entry, written atomically (temporary file, fsync, rename).
- ``--out FILE.safetensors``: the ``.safetensors`` file *and* ``FILE.npz`` beside it (the ``.npz``
  is always written). Needs ``pip install safetensors``; without it the command stops before
  writing anything. The safetensors metadata holds the architecture (arch, width, dim, mlp).
``--keep-fc`` keeps the head (``fc.weight``/``fc.bias``, or ``fc.0.*``/``fc.2.*`` with the MLP).

Loading into PyTorch (the CIFAR ResNet-18 of width 64, i.e. torchvision's resnet18 with a 3×3 stem
and no max-pool; moco-ref's split BatchNorm is plain BatchNorm in eval mode, same names)::

    import numpy as np
    import torch
    import torchvision

    model = torchvision.models.resnet18(num_classes=10)          # a new fc for the task
    model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)    # the CIFAR stem
    model.maxpool = torch.nn.Identity()
    with np.load("encoder.npz", allow_pickle=False) as arrays:
        state = {name: torch.from_numpy(arrays[name]) for name in arrays.files}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert set(missing) == {"fc.weight", "fc.bias"} and not unexpected

    # or, from the .safetensors file:
    from safetensors.torch import load_file
    model.load_state_dict(load_file("encoder.safetensors"), strict=False)

resnet10 is ``torchvision.models.resnet.ResNet(BasicBlock, [1, 1, 1, 1])``; torchvision's BasicBlock
only has width 64, so for other widths build the same module tree yourself (the tests use
``moco_ref/pytorch_moco.py``'s ``CifarResNet``). Call ``model.eval()`` before extracting features
(BatchNorm on the running statistics, as moco-ref's ``encoder.features``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from moco_ref.errors import CheckpointError, UserError
from moco_ref.paths import check_output_file, refused
from moco_ref.run.checkpoint import load_checkpoint, write_atomically
from moco_ref.run.config import current_names

PREFIX = "encoder_q."
SAFETENSORS_INSTALL = "pip install safetensors"


def encoder_state(arrays: dict, keep_fc: bool = False) -> dict:
    """{torchvision name: array} of the query encoder: ``encoder_q.`` stripped, ``fc.*`` dropped unless keep_fc."""
    state = {}
    for name, array in arrays.items():
        if not name.startswith(PREFIX):
            continue
        short = name[len(PREFIX) :]
        if keep_fc or not short.startswith("fc."):
            state[short] = np.asarray(array, order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
    return state


def _safetensors_module():
    try:
        import safetensors.numpy
    except ImportError:
        return None
    return safetensors.numpy


def export_encoder(checkpoint, out, keep_fc: bool = False, replace: bool = False) -> dict:
    """Writes the query encoder of ``checkpoint`` as a PyTorch state_dict.

    Args:
        checkpoint: a moco-ref checkpoint file (``.npz``).
        out: ``*.npz``, or ``*.safetensors`` (which also writes the ``.npz`` beside it).
        replace: whether a file already at ``out`` (or its ``.npz``) may be replaced (--force).
        keep_fc: keep the fc head (default: dropped, as the official recipe).

    Returns:
        {"files": [written paths], "arrays": count, "dropped": [names], "arch", "width", "dim", "mlp"}.

    Raises:
        UserError: a bad ``out`` suffix, or ``.safetensors`` without the package.
        PathRefused: ``out`` exists (without ``replace``), is a folder, or the OS refuses it.
        CheckpointError: unreadable checkpoint, or one without ``encoder_q.*``.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".npz", ".safetensors"):
        raise UserError(f"--out {out} must end in .npz or .safetensors")
    safetensors_numpy = None
    if suffix == ".safetensors":
        safetensors_numpy = _safetensors_module()
        if safetensors_numpy is None:
            raise UserError(
                f"writing {out.name} needs the safetensors package: {SAFETENSORS_INSTALL} "
                f"(or give --out {out.with_suffix('.npz').name})"
            )
    for path in dict.fromkeys((out, out.with_suffix(".npz"))):
        check_output_file(path, "--out", replace)

    arrays, meta = load_checkpoint(checkpoint)
    state = encoder_state(arrays, keep_fc)
    if not state:
        raise CheckpointError(f"{checkpoint} holds no {PREFIX}* arrays; is it a moco-ref MoCo checkpoint?")
    dropped = sorted(
        name[len(PREFIX) :] for name in arrays if name.startswith(PREFIX) and name[len(PREFIX) :] not in state
    )
    config = current_names(meta.get("config", {}))  # checkpoints of earlier versions name dim moco_dim
    info = {key: config.get(key) for key in ("arch", "width", "dim", "mlp")}

    npz_path = out.with_suffix(".npz")
    with refused(npz_path, "--out"):
        write_atomically(npz_path, lambda f: np.savez(f, **state))
    files = [npz_path]
    if safetensors_numpy is not None:
        metadata = {
            "format": "pt",
            "source": "moco-ref encoder_q",
            **{k: json.dumps(v) for k, v in info.items() if v is not None},
        }
        data = safetensors_numpy.save(state, metadata=metadata)
        with refused(out, "--out"):
            write_atomically(out, lambda f: f.write(data))
        files.append(out)
    return {
        "files": [str(p) for p in files],
        "arrays": len(state),
        "dropped": dropped,
        "arch": info["arch"],
        "width": info["width"],
        "dim": info["dim"],
        "mlp": info["mlp"],
    }


def loading_snippet(npz_path, arch=None, width=None, dim=None, mlp=False, keep_fc=False) -> str:
    """The few lines that load the exported ``.npz`` into a PyTorch model (printed by the CLI)."""
    if keep_fc and mlp:
        head = (
            f"model.fc = torch.nn.Sequential(torch.nn.Linear({8 * (width or 64)}, {8 * (width or 64)}), "
            f"torch.nn.ReLU(), torch.nn.Linear({8 * (width or 64)}, {dim}))   # the MLP head\n"
        )
        num_classes = f"{dim}"
    else:
        head = ""
        num_classes = f"{dim}" if keep_fc else "10"
    if arch in ("resnet18", "resnet10") and width == 64:
        blocks = "[2, 2, 2, 2]" if arch == "resnet18" else "[1, 1, 1, 1]"
        model = (
            f"from torchvision.models.resnet import ResNet, BasicBlock\n"
            f"model = ResNet(BasicBlock, {blocks}, num_classes={num_classes})\n"
            f"model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)   # the CIFAR stem\n"
            f"model.maxpool = torch.nn.Identity()\n" + head
        )
    else:
        model = (
            f"model = ...  # a torchvision-style CIFAR ResNet ({arch}, width {width}): 3x3 stem, no max-pool,\n"
            f"             # like moco_ref/pytorch_moco.py's CifarResNet\n"
            f"             # (torchvision's BasicBlock is width 64 only)\n"
        )
    note = "" if keep_fc else "   # missing: fc.weight, fc.bias"
    return (
        "import numpy as np, torch\n" + model + f"with np.load({str(npz_path)!r}, allow_pickle=False) as arrays:\n"
        f"    state = {{name: torch.from_numpy(arrays[name]) for name in arrays.files}}\n"
        f"missing, unexpected = model.load_state_dict(state, strict=False){note}\n"
        f"model.eval()\n"
    )
