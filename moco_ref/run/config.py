"""Training configuration: every setting of ``moco-ref train``, declared once, and the recipe presets.

Each field of :class:`TrainConfig` is declared with :func:`option`: its default, its help text, its
command-line spelling (main_moco.py's, e.g. ``--moco-k`` for ``K``), its allowed values, whether it may
change on ``--resume`` and whether it is an argument of :class:`moco_ref.moco.MoCo`.  The CLI generates
its options from these declarations, and the trainer builds the model with
``MoCo(**config.model_arguments())``, so a new setting is one line here.  Field names are the paper's
and the model's (``dim``, ``K``, ``m``, ``T``, ``weight_decay``); configurations written with the
flag-style names of earlier versions (``moco_k``, ``wd``, …) still load (:data:`LEGACY_NAMES`).

The defaults are CPU-sized, for the built-in data on the NumPy backend: resnet10 of width 8, a small
queue (its keys stay consistent on a 2000-image set), temperature 0.2, two BatchNorm splits of 32 images
(8 splits of 8 images give noisy statistics) and lr 0.03.  The presets are the documented recipes
(``--preset``, listed in docs/commands.md); a flag given on the command line
always wins over the preset.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from backends import BACKEND_NAMES

AUGMENTATIONS = ("v1", "v2", "cifar")


@dataclass(frozen=True)
class Option:
    """How one configuration field appears on the command line, and what it is for.

    ``flags`` are click-style spellings: ``("-b", "--batch-size")``, or ``("--symmetric/--asymmetric",)``
    for a switch whose "off" spelling is not ``--no-<name>``; left empty, it is ``--<field-name-with-dashes>``.
    Ranges are neutral numbers (the CLI turns them into click types): ``at_least`` and ``at_most`` are
    inclusive, ``greater_than`` is exclusive.
    """

    help: str
    flags: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    at_least: float | None = None
    at_most: float | None = None
    greater_than: float | None = None
    resumable: bool = False  # may change when a run is resumed
    model: bool = False  # an argument of MoCo(...)

    @property
    def flag(self) -> str:
        """The long spelling, as error messages name it: "--moco-k", "--batch-size", "--symmetric"."""
        return self.flags[-1].split("/")[0]

    def refusal(self, value) -> str | None:
        """Why a number ``value`` is not a possible value of this setting ("must be a finite number greater
        than 0"), or None when it is: NaN and ±inf never are, and the declared range must hold."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        bounds = [
            f"at least {self.at_least:g}" if self.at_least is not None else "",
            f"greater than {self.greater_than:g}" if self.greater_than is not None else "",
            f"at most {self.at_most:g}" if self.at_most is not None else "",
        ]
        wanted = (
            " ".join(
                ["must be", "a finite number" if isinstance(value, float) else "", " and ".join(b for b in bounds if b)]
            )
            .replace("  ", " ")
            .strip()
        )
        if (
            not math.isfinite(value)
            or (self.at_least is not None and value < self.at_least)
            or (self.greater_than is not None and value <= self.greater_than)
            or (self.at_most is not None and value > self.at_most)
        ):
            return wanted
        return None


def option(default, help: str, **declaration):
    """A dataclass field with its default and its :class:`Option` (filled in for the field below the class)."""
    metadata = {"option": Option(help, **declaration)}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    # data
    data: str = option(
        "builtin",
        "'builtin', 'digits' (scikit-learn's handwritten digits; ./digits is a folder), a folder of images "
        "(class sub-folders = labels) or a CIFAR folder.",
    )
    image_size: int = option(32, "Side of the square crops.", at_least=8)
    aug: str = option("cifar", "Augmentation pipeline (v2 = --aug-plus).", choices=AUGMENTATIONS)
    # model
    arch: str = option("resnet10", "Encoder (CIFAR-style stem).", choices=("resnet10", "resnet18"), model=True)
    width: int = option(8, "Base width of the ResNet (64 = standard).", at_least=1, model=True)
    dim: int = option(128, "Feature dimension D.", flags=("--moco-dim",), at_least=1, model=True)
    K: int = option(256, "Queue size K (any batch size works).", flags=("--moco-k",), at_least=1, model=True)
    m: float = option(0.99, "Key-encoder momentum m.", flags=("--moco-m",), at_least=0, at_most=1, model=True)
    m_cos: bool = option(
        False, "Raise m from --moco-m to 1 on a half-cosine over training (moco-v3, BYOL).", flags=("--moco-m-cos",)
    )
    T: float = option(0.2, "Softmax temperature T.", flags=("--moco-t",), greater_than=0, model=True)
    mlp: bool = option(False, "MoCo v2 MLP head.", model=True)
    symmetric: bool = option(
        False,
        "Symmetric loss L(x1,x2)+L(x2,x1), the CIFAR demo's option.",
        flags=("--symmetric/--asymmetric",),
        model=True,
    )
    bn_splits: int = option(
        2, "Split BatchNorm groups (shuffle BN on one device; 1 = plain BN).", at_least=1, model=True
    )
    shuffle_bn: bool = option(
        True,
        "Shuffle the keys across the BatchNorm groups (shuffle BN); off, a query and "
        "its key share their group's statistics (the paper's control).",
        flags=("--shuffle-bn/--no-shuffle-bn",),
        model=True,
    )
    # optimisation
    epochs: int = option(20, "Epochs to train.", at_least=1, resumable=True)
    batch_size: int = option(64, "Images per step.", flags=("-b", "--batch-size"), at_least=1)
    lr: float = option(0.03, "Base learning rate.", greater_than=0, model=True)
    momentum: float = option(0.9, "SGD momentum.", at_least=0, at_most=1, model=True)
    weight_decay: float = option(5e-4, "Weight decay, on every parameter.", flags=("--wd",), at_least=0, model=True)
    cos: bool = option(True, "Cosine learning-rate schedule (else steps at --schedule).")
    schedule: list = option([120, 160], "Step schedule: epochs where lr ×0.1, e.g. 120,160 (without --cos).")
    # running
    backend: str = option("numpy", "numpy (CPU) or cupy (GPU).", choices=BACKEND_NAMES, resumable=True, model=True)
    dtype: str = option(
        "float32", "Floating-point type of weights and activations.", choices=("float32", "float64"), model=True
    )
    seed: int = option(0, "Seed of every random draw.", model=True)
    knn_every: int = option(
        5, "kNN monitor every N epochs, 0 = off (also before training and at the end).", at_least=0, resumable=True
    )
    knn_k: int = option(200, "Neighbours of the kNN monitor.", at_least=1)
    knn_t: float = option(0.1, "Temperature of the kNN monitor's votes.", greater_than=0)
    log_every: int = option(10, "Steps between logged (host-synchronised) metrics.", at_least=1, resumable=True)
    max_steps: int = option(0, "Stop after N steps in total, 0 = no limit (smoke tests).", at_least=0, resumable=True)
    save_every: int = option(
        0, "Also keep checkpoint_NNNN.npz every N epochs, 0 = only the last.", at_least=0, resumable=True
    )
    tensorboard: bool = option(
        False,
        "Also write TensorBoard event files into the run directory's tb/ (the [tensorboard] extra).",
        resumable=True,
    )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """The configuration in ``values`` (a run's saved configuration, a checkpoint's meta): legacy names mapped,
        unknown keys dropped."""
        values = current_names(values)
        return cls(**{name: value for name, value in values.items() if name in OPTIONS})

    def model_arguments(self) -> dict:
        """The fields declared ``model=True``, as keyword arguments of ``MoCo``."""
        return {name: getattr(self, name) for name, declared in OPTIONS.items() if declared.model}


def refused_setting(config: TrainConfig) -> str | None:
    """The first setting of ``config`` outside its declared range or not finite ("--moco-t is nan, which must
    be a finite number greater than 0"), or None: a configuration read from a file is checked as the flags are."""
    for name, declared in OPTIONS.items():
        value = getattr(config, name)
        refusal = declared.refusal(value)
        if refusal:
            return f"{declared.flag} is {shown(value)}, which {refusal}"
    return None


def _declared(config_field) -> Option:
    declared = config_field.metadata["option"]
    return replace(declared, flags=declared.flags or ("--" + config_field.name.replace("_", "-"),))


# Every field's declaration by field name, flags filled in; and the names that may change on --resume.
OPTIONS: dict[str, Option] = {f.name: _declared(f) for f in fields(TrainConfig)}
RESUMABLE = frozenset(name for name, declared in OPTIONS.items() if declared.resumable)

# Field names of earlier versions (main_moco.py's flag names), as old configurations and checkpoints hold them.
LEGACY_NAMES = {"moco_dim": "dim", "moco_k": "K", "moco_m": "m", "moco_t": "T", "wd": "weight_decay"}


def shown(value) -> str:
    """A setting's value as the help and the messages show it: on/off, 120,160, 0.0005, resnet10."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return format(value, "g") if isinstance(value, float) else str(value)


def current_names(values: dict) -> dict:
    """``values`` with the legacy names renamed to the current ones (a current name, if also present, wins)."""
    renamed = {LEGACY_NAMES[name]: value for name, value in values.items() if name in LEGACY_NAMES}
    return {**renamed, **{name: value for name, value in values.items() if name not in LEGACY_NAMES}}


# The documented recipes of the official code (main_moco.py, the MoCo v2 flags, the CIFAR-10 demo); values not
# named keep the defaults.
PRESETS: dict[str, dict[str, Any]] = {
    # MoCo v1, main_moco.py on ImageNet (ResNet-50 there; the CIFAR ResNet-18 here).
    "v1": dict(
        arch="resnet18",
        width=64,
        dim=128,
        K=65536,
        m=0.999,
        T=0.07,
        mlp=False,
        aug="v1",
        epochs=200,
        batch_size=256,
        lr=0.03,
        weight_decay=1e-4,
        cos=False,
        schedule=[120, 160],
        bn_splits=8,
        image_size=224,
    ),
    # MoCo v2: v1 + --mlp --moco-t 0.2 --aug-plus --cos.
    "v2": dict(
        arch="resnet18",
        width=64,
        dim=128,
        K=65536,
        m=0.999,
        T=0.2,
        mlp=True,
        aug="v2",
        epochs=200,
        batch_size=256,
        lr=0.03,
        weight_decay=1e-4,
        cos=True,
        bn_splits=8,
        image_size=224,
    ),
    # The MoCo CIFAR-10 demo: ResNet-18, batch 512, lr 0.06 cosine, 200 epochs, K 4096, m 0.99, T 0.1.
    "cifar-demo": dict(
        arch="resnet18",
        width=64,
        dim=128,
        K=4096,
        m=0.99,
        T=0.1,
        mlp=False,
        aug="cifar",
        epochs=200,
        batch_size=512,
        lr=0.06,
        weight_decay=5e-4,
        cos=True,
        bn_splits=8,
        image_size=32,
        knn_every=1,
    ),
}
