"""The policy of a resume: which flags may change (declared resumable in moco_ref/run/config.py), the configuration
that continues a run, and whether anything is left to do.

The run directory's files are moco_ref/run/directory.py's; this module decides, from what they hold, what a
``--resume`` (of ``moco-ref train`` or of ``moco-ref ablate``'s runs) does.
"""

from __future__ import annotations

from pathlib import Path

from moco_ref.errors import CheckpointError, UserError
from moco_ref.run.config import OPTIONS, RESUMABLE, TrainConfig, refused_setting, shown
from moco_ref.run.directory import RunDirectory


def changed_settings(stored: TrainConfig, wanted: TrainConfig) -> list[str]:
    """The settings a resume may not change (all but the resumable ones) on which ``wanted`` differs."""
    return [name for name in OPTIONS if name not in RESUMABLE and getattr(stored, name) != getattr(wanted, name)]


def resumable_flags() -> str:
    """The flags that may change on --resume (declared resumable in config.py): "--epochs, --backend, …"."""
    return ", ".join(declared.flag for name, declared in OPTIONS.items() if name in RESUMABLE)


def resumed_config(checkpoint: Path, meta: dict, given: dict) -> TrainConfig:
    """The configuration that continues the run of ``checkpoint`` with the flags ``given``.

    Only the settings declared resumable (config.py) may differ from the run's; any other flag given must
    repeat the run's value, else one line lists each difference with both values.  A --max-steps limit of
    the interrupted run does not carry over.
    """
    if not isinstance(meta.get("config"), dict):
        raise UserError(f"{checkpoint} holds no training configuration; it cannot be resumed")
    refused = refused_setting(TrainConfig.from_dict(meta["config"]))
    if refused:
        raise CheckpointError(f"{checkpoint} cannot be resumed: its configuration's {refused}; nothing was changed")
    run = {**TrainConfig.from_dict(meta["config"]).to_dict(), "max_steps": 0}
    differences = [
        f"{declared.flag} (the run's: {shown(run[name])}, given: {shown(given[name])})"
        for name, declared in OPTIONS.items()
        if name in given and name not in RESUMABLE and given[name] != run[name]
    ]
    if differences:
        raise UserError(f"--resume cannot change {', '.join(differences)}; only {resumable_flags()} may change")
    return TrainConfig.from_dict({**run, **given})


def nothing_to_do(checkpoint: Path, meta: dict, config: TrainConfig) -> str | None:
    """The line to print instead of training when the checkpoint is already where ``config`` would stop."""
    epoch, step = meta["epoch"], meta["global_step"]
    if config.max_steps and step >= config.max_steps:
        reason, advice = f"{step} steps, and --max-steps is {config.max_steps}", "a larger --max-steps"
    elif epoch >= config.epochs:
        reason, advice = f"{epoch} epoch(s) ({step} steps), and --epochs is {config.epochs}", "a larger --epochs"
    else:
        return None
    return f"nothing to do: {checkpoint} has trained {reason}; nothing was changed (give {advice} to train on)"


def finished(directory: RunDirectory, meta: dict, config: TrainConfig) -> bool:
    """The checkpoint is at ``config``'s end and the run wrote its final record there."""
    at_end = (meta["epoch"] >= config.epochs and meta["step_in_epoch"] == 0) or bool(
        config.max_steps and meta["global_step"] >= config.max_steps
    )
    records = directory.records()
    return (
        at_end
        and bool(records)
        and records[-1].get("kind") == "final"
        and records[-1].get("global_step") == meta["global_step"]
    )
