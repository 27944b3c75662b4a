"""Shared test settings: the Hypothesis profiles, and factories of a tiny MoCo and its inputs.

"dev" (the default): Hypothesis' default settings without a deadline.
"ci": derandomised (the same examples on every run, so no example database), no
deadline, 60 examples a test, and the reproduction blob printed on failure.  It is loaded when the CI
environment variable is set (CI sets CI=true); HYPOTHESIS_PROFILE=<name>
overrides both.
"""

import os

import numpy as np
import pytest
from helpers import write_image_folder
from hypothesis import HealthCheck, settings

# Recent Hypothesis loads a built-in "ci" profile by itself when it sees CI; both profiles here
# derive from "default" instead, so that "dev" stays random even then.
settings.register_profile("dev", parent=settings.get_profile("default"), deadline=None)
settings.register_profile(
    "ci",
    parent=settings.get_profile("default"),
    derandomize=True,
    deadline=None,
    max_examples=60,
    print_blob=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

_ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if _ci else "dev"))


# ------------------------------------------------ a MoCo small enough for property tests
@pytest.fixture(scope="session")
def small_moco():
    """A factory: resnet10 of width 2, 4-d keys, K = 8, T = 0.2, float64; the same seed gives an identical twin."""
    from moco_ref.moco import MoCo

    def build(seed, bn_splits=1, m=0.9):
        return MoCo(
            arch="resnet10",
            width=2,
            dim=4,
            K=8,
            m=m,
            T=0.2,
            bn_splits=bn_splits,
            lr=0.1,
            momentum=0.9,
            weight_decay=1e-4,
            seed=seed,
            dtype="float64",
        )

    return build


@pytest.fixture(scope="session")
def two_views():
    """A factory: seed -> two noisy (4, 3, 8, 8) views of the same random images."""

    def draw(seed, N=4, size=8):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((N, 3, size, size))
        return x + 0.1 * rng.standard_normal(x.shape), x + 0.1 * rng.standard_normal(x.shape)

    return draw


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A labelled image folder of 24 training and 8 validation images (bench learn's tests)."""
    return str(write_image_folder(tmp_path_factory.mktemp("images"), train_per_class=12, val_per_class=4, size=20))
