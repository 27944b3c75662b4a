"""Tests of moco_ref.run.config: each setting is declared once, and the CLI and the model follow the declarations.

The declarations (``moco_ref.run.config.OPTIONS``) give each TrainConfig field its flag, help, range and
whether it may change on resume; ``moco-ref train``'s options are generated from them, and MoCo is built
from ``TrainConfig.model_arguments()``.
"""

from __future__ import annotations

import inspect
from dataclasses import fields

import helpers
import pytest

from moco_ref.cli.main import train
from moco_ref.moco import MoCo
from moco_ref.run.config import LEGACY_NAMES, OPTIONS, PRESETS, RESUMABLE, TrainConfig

FIELD_NAMES = [f.name for f in fields(TrainConfig)]


def generated_options() -> dict:
    """The options of ``moco-ref train`` by destination name (the TrainConfig field they set)."""
    return {param.name: param for param in train.params}


def test_every_field_has_a_generated_train_option_with_help():
    options = generated_options()
    missing = [name for name in FIELD_NAMES if name not in options]
    assert not missing, f"fields without a train option: {missing}"
    for name in FIELD_NAMES:
        assert options[name].help and options[name].help.strip(), f"--{name} has no help"
        assert OPTIONS[name].flag in options[name].opts, f"{name}: {options[name].opts}"


def test_the_help_shows_the_dataclass_default():
    options, defaults = generated_options(), TrainConfig()
    assert options["K"].help.endswith(f"[default: {defaults.K}]")
    assert options["weight_decay"].help.endswith("[default: 0.0005]")
    assert options["cos"].help.endswith("[default: on]") and options["mlp"].help.endswith("[default: off]")
    assert options["schedule"].help.endswith("[default: 120,160]")


def test_train_help_lists_main_moco_flag_names(capsys):
    code, out, err = helpers.run_cli(["train", "--help"], capsys)
    assert code == 0, err
    for flag in (
        "--moco-k",
        "--moco-m",
        "--moco-t",
        "--moco-dim",
        "--wd",
        "-b, --batch-size",
        "--symmetric / --asymmetric",
        "--preset",
        "--aug-plus",
        "--out",
        "--resume",
    ):
        assert flag in out, f"{flag} not in moco-ref train --help"


def test_the_resumable_settings_are_the_declared_ones():
    assert RESUMABLE == {"epochs", "max_steps", "knn_every", "backend", "save_every", "log_every", "tensorboard"}


def test_model_arguments_are_moco_parameters():
    """The fields declared model=True are MoCo arguments; MoCo's others (nesterov, ...) have defaults."""
    arguments = TrainConfig().model_arguments()
    assert set(arguments) == {
        "arch",
        "width",
        "dim",
        "K",
        "m",
        "T",
        "mlp",
        "symmetric",
        "bn_splits",
        "shuffle_bn",
        "lr",
        "momentum",
        "weight_decay",
        "backend",
        "seed",
        "dtype",
    }
    parameters = inspect.signature(MoCo).parameters
    assert set(arguments) <= set(parameters)
    left = [name for name in parameters if name not in arguments]
    assert all(parameters[name].default is not inspect.Parameter.empty for name in left), left


def test_from_dict_maps_the_legacy_names():
    old = {"moco_dim": 64, "moco_k": 512, "moco_m": 0.9, "moco_t": 0.5, "wd": 1e-3, "width": 4, "unknown": 1}
    config = TrainConfig.from_dict(old)
    assert (config.dim, config.K, config.m, config.T, config.weight_decay, config.width) == (64, 512, 0.9, 0.5, 1e-3, 4)
    assert set(LEGACY_NAMES.values()) <= set(FIELD_NAMES)


def test_from_dict_prefers_the_current_name():
    assert TrainConfig.from_dict({"K": 32, "moco_k": 64}).K == 32
    assert TrainConfig.from_dict({"moco_k": 64, "K": 32}).K == 32


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_use_the_field_names(preset):
    unknown = set(PRESETS[preset]) - set(FIELD_NAMES)
    assert not unknown, f"preset {preset} names unknown fields {unknown}"


def test_the_round_trip_through_a_dict_is_the_identity():
    config = TrainConfig(**PRESETS["v1"])
    assert TrainConfig.from_dict(config.to_dict()) == config
