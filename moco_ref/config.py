"""Training configuration: the flags of ``moco-ref train``, their defaults and the recipe presets.

The defaults are CPU-sized: on the built-in data with the NumPy backend a run
finishes in about two and a half minutes on a 2-core machine.  They were chosen by short
runs on the first (coloured) version of the built-in data (see the README): a small queue (its keys stay
consistent on a 2000-image set), temperature 0.2, two BatchNorm splits of 32
images (8 splits of 8 images made the statistics too noisy) and lr 0.03.  The presets are the documented
recipes (see ../README.md, "Recipes"); a flag given on the command line always
wins over the preset.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class TrainConfig:
    # data
    data: str = "builtin"              # "builtin", an image folder, or a CIFAR folder
    image_size: int = 32               # side of the square crops fed to the encoder
    aug: str = "cifar"                 # augmentation pipeline: v1, v2 (--aug-plus) or cifar
    # model
    arch: str = "resnet10"             # resnet10 | resnet18 (CIFAR-style stem)
    width: int = 8                     # base width; 64 is the standard ResNet
    moco_dim: int = 128                # feature dimension D
    moco_k: int = 256                  # queue size K
    moco_m: float = 0.99               # key-encoder momentum m
    moco_t: float = 0.2                # softmax temperature T
    mlp: bool = False                  # MoCo v2 projection head
    symmetric: bool = False            # L(x1, x2) + L(x2, x1), as the CIFAR demo's option
    bn_splits: int = 2                 # split BatchNorm groups (1 = plain BatchNorm)
    # optimisation
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.03
    momentum: float = 0.9
    wd: float = 5e-4
    cos: bool = True                   # cosine schedule (else step at `schedule`)
    schedule: list = field(default_factory=lambda: [120, 160])
    # running
    backend: str = "numpy"
    dtype: str = "float32"
    seed: int = 0
    knn_every: int = 5                 # kNN monitor every N epochs (0 = never); also at start and end
    knn_k: int = 200
    knn_t: float = 0.1
    log_every: int = 10                # steps between logged (host-synchronised) metrics
    max_steps: int = 0                 # stop after this many steps in total (0 = no limit)
    save_every: int = 0                # also keep checkpoint_<epoch>.npz every N epochs (0 = only the last)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


# The documented recipes (../shared/MOCO_REFERENCE.md); values not named keep the defaults.
PRESETS = {
    # MoCo v1, main_moco.py on ImageNet (ResNet-50 there; the CIFAR ResNet-18 here).
    "v1": dict(arch="resnet18", width=64, moco_dim=128, moco_k=65536, moco_m=0.999, moco_t=0.07, mlp=False,
               aug="v1", epochs=200, batch_size=256, lr=0.03, wd=1e-4, cos=False, schedule=[120, 160],
               bn_splits=8, image_size=224),
    # MoCo v2: v1 + --mlp --moco-t 0.2 --aug-plus --cos.
    "v2": dict(arch="resnet18", width=64, moco_dim=128, moco_k=65536, moco_m=0.999, moco_t=0.2, mlp=True,
               aug="v2", epochs=200, batch_size=256, lr=0.03, wd=1e-4, cos=True, bn_splits=8, image_size=224),
    # The MoCo CIFAR-10 demo: ResNet-18, batch 512, lr 0.06 cosine, 200 epochs, K 4096, m 0.99, T 0.1.
    "cifar-demo": dict(arch="resnet18", width=64, moco_dim=128, moco_k=4096, moco_m=0.99, moco_t=0.1,
                       mlp=False, aug="cifar", epochs=200, batch_size=512, lr=0.06, wd=5e-4, cos=True,
                       bn_splits=8, image_size=32, knn_every=1),
}
