"""One MoCo step equals the official builder's logic in PyTorch (float64, ≤ 1e-9 relative)."""

import copy

import numpy as np
import pytest
from helpers import assert_close

from moco_ref.moco import MoCo

torch = pytest.importorskip("torch")
from moco_ref.pytorch_moco import TorchMoCo, torch_encoder_like  # noqa: E402 (after the skip without torch)

RTOL = 1e-9


# 32×32 images: with the ``fast`` extra the first stage's 3×3 convolutions run the direct kernel.
@pytest.mark.parametrize(
    "symmetric,mlp,bn_splits,size",
    [(False, False, 1, 10), (True, False, 1, 10), (False, True, 1, 10), (True, True, 2, 10), (False, False, 4, 10)]
    + [(False, False, 1, 32), (True, False, 2, 32)],
)
def test_moco_steps_match_torch(symmetric, mlp, bn_splits, size):
    model = MoCo(
        arch="resnet10",
        width=4,
        dim=8,
        K=32,
        m=0.9,
        T=0.2,
        mlp=mlp,
        symmetric=symmetric,
        bn_splits=bn_splits,
        lr=0.5,
        momentum=0.9,
        weight_decay=1e-3,
        seed=3,
        dtype="float64",
    )
    # Make the key encoder differ from the query encoder, so the momentum update is exercised.
    rng = np.random.default_rng(0)
    for p in model.encoder_k.params.values():
        p += 0.01 * rng.standard_normal(p.shape)
    reference = TorchMoCo(
        torch_encoder_like(model.encoder_q).train(),
        torch_encoder_like(model.encoder_k).train(),
        torch.from_numpy(model.queue.state_dict()["queue"].copy()),
        model.queue.ptr,
        m=0.9,
        T=0.2,
        lr=0.5,
        momentum=0.9,
        weight_decay=1e-3,
        symmetric=symmetric,
    )

    for step in range(3):
        x_q = rng.standard_normal((8, 3, size, size))
        x_k = x_q + 0.3 * rng.standard_normal(x_q.shape)
        # The reference uses the very permutations our step draws (they matter when bn_splits > 1).
        perm_rng = copy.deepcopy(model.shuffle_rng)
        perms = [torch.from_numpy(perm_rng.permutation(8)) for _ in range(2)]
        stats = model.step(x_q, x_k)
        expected = reference.step(torch.from_numpy(x_q), torch.from_numpy(x_k), perms)
        assert_close(float(stats["loss"]), expected, RTOL, f"loss at step {step}")

    for prefix, ours, theirs in (
        ("encoder_q", model.encoder_q, reference.encoder_q),
        ("encoder_k", model.encoder_k, reference.encoder_k),
    ):
        torch_state = theirs.state_dict()
        for name, value in ours.state_dict().items():
            assert_close(value, torch_state[name].numpy(), RTOL, f"{prefix}.{name} after 3 steps")
    assert_close(model.queue.state_dict()["queue"], reference.queue.numpy(), RTOL, "queue (D, K)")
    assert model.queue.ptr == reference.ptr
