"""Every hand-derived backward agrees with float64 central differences."""

import numpy as np
import pytest

from moco_ref.layers import conv
from moco_ref.tools import gradcheck

LAYER_RESULTS = gradcheck._layer_checks(np.random.default_rng(0))


@pytest.mark.parametrize("result", LAYER_RESULTS, ids=[r.name for r in LAYER_RESULTS])
def test_layer_gradient_matches_finite_differences(result):
    assert result.error <= gradcheck.LAYER_TOLERANCE == 1e-6, result.describe()


@pytest.mark.parametrize("arch,mlp,splits", [("resnet10", False, 1), ("resnet10", True, 2), ("resnet18", False, 1)])
def test_encoder_gradient_matches_finite_differences_along_random_directions(arch, mlp, splits):
    results = gradcheck.encoder_check(np.random.default_rng(1), arch=arch, width=2, mlp=mlp, bn_splits=splits)
    assert len(results) == 3
    for r in results:
        assert r.error <= gradcheck.ENCODER_TOLERANCE == 1e-5, r.describe()


def test_the_check_fails_for_a_wrong_gradient():
    """The checker itself can fail: a backward that forgets the stride is caught."""
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((2, 6, 6, 2)), rng.standard_normal((3, 2, 3, 3))

    def wrong_backward(g, x, w):
        dx, dw = conv.conv2d_backward(g, conv.conv2d_forward(x, w, 2, 1)[1])
        return {"x": dx, "w": dw * 1.001}  # a 0.1 % error

    results = gradcheck.check_function(
        "conv", lambda x, w: conv.conv2d_forward(x, w, 2, 1)[0], wrong_backward, {"x": x, "w": w}, rng
    )
    by_name = {r.name: r for r in results}
    assert by_name["conv / dx"].passed
    assert not by_name["conv / dw"].passed
    assert "worst element" in by_name["conv / dw"].describe()


def test_run_all_covers_every_layer_and_passes():
    names = {r.name.split(" / ")[0] for r in gradcheck.run_all()}
    for layer in (
        "conv2d 3x3 s1 p1",
        "batchnorm train splits=2",
        "batchnorm eval splits=1",
        "relu",
        "global avg pool",
        "linear",
        "mlp head",
        "l2 normalize",
        "info_nce T=0.2",
    ):
        assert layer in names
    assert any(n.startswith("encoder") for n in names)
