"""A training run read back: its checkpoint, its configuration and its encoders.

``RUN`` on the command line (``moco-ref show neighbours RUN``) is a run directory, whose latest checkpoint is used,
or a checkpoint file (moco_ref/run/directory.py's ``checkpoint_of``). :func:`untrained_encoder` builds the encoder
that run started from: the seed decides the initial weights, so ``build_encoder(..., seed=seed)`` equals the
``encoder_q`` of ``MoCo(**config.model_arguments())`` before its first step (what ``moco-ref train --epochs 1
--max-steps 0`` would start with).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from moco_ref.errors import CheckpointError
from moco_ref.models import ResNetEncoder, build_encoder
from moco_ref.run.checkpoint import load_checkpoint
from moco_ref.run.config import TrainConfig, refused_setting
from moco_ref.run.directory import checkpoint_of


@dataclass
class Run:
    """A run's checkpoint, read back.

    Attributes:
        checkpoint: the checkpoint file.
        config: the run's training configuration (the checkpoint's copy).
        meta: the checkpoint's metadata (epoch, global_step, ...).
        encoder_q: the learned query encoder, on the chosen backend.
    """

    checkpoint: Path
    config: TrainConfig
    meta: dict
    encoder_q: ResNetEncoder


def untrained_encoder(config: TrainConfig, backend=None) -> ResNetEncoder:
    """The encoder a run of ``config`` starts from (its seed's initial weights, BatchNorm statistics at rest)."""
    return build_encoder(
        config.arch,
        dim=config.dim,
        width=config.width,
        mlp=config.mlp,
        bn_splits=config.bn_splits,
        backend=backend or config.backend,
        seed=config.seed,
        dtype=config.dtype,
    )


def load_run(run, backend=None) -> Run:
    """Reads the checkpoint of ``run`` and loads its encoder_q (on ``backend``, default the run's)."""
    path = checkpoint_of(run)
    arrays, meta = load_checkpoint(path)
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{path} holds no training configuration")
    config = TrainConfig.from_dict(meta["config"])
    refused = refused_setting(config)
    if refused:
        raise CheckpointError(f"{path} cannot be used: its configuration's {refused}")
    encoder = untrained_encoder(config, backend)
    prefix = "encoder_q."
    try:
        encoder.load_state_dict({k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)})
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{path}: {error}") from None
    return Run(checkpoint=path, config=config, meta=meta, encoder_q=encoder)
