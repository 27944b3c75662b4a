"""Whose float32 gradient is nearer the exact one?  moco-ref's and its PyTorch twin's, layer by layer.

From a state reached by float64 training (both implementations are the same program in float64), the state is
rounded to float32 once; from that one state and one batch of views (also rounded to float32), three steps'
gradients are taken: moco-ref in float32, the PyTorch twin in float32, and moco-ref in float64 on the same
(float32-valued) inputs, the reference.  Per parameter tensor, the relative error ‖g₃₂ − g₆₄‖ / ‖g₆₄‖ of each
float32 gradient, and likewise of the enqueued keys and of the BatchNorm running statistics after the step.
Where one side's error is much larger than the other's, that side rounds worse there.

    python benchmarks/2026-12-02/rounding/gradient_error.py DATA [--warm-steps 60] [--batches 8] [--seed 0]
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch

from backends import to_numpy
from moco_ref.bench.learn import PairedTraining, labelled_splits
from moco_ref.moco import MoCo
from moco_ref.momentum import momentum_at_step
from moco_ref.optim import learning_rate
from moco_ref.parallel.communicator import SingleProcess
from moco_ref.pytorch_moco import TorchMoCo, torch_encoder_like
from moco_ref.run.config import TrainConfig
from moco_ref.run.epoch import epoch_order, two_views


def rounded_model(source: MoCo, config: TrainConfig, dtype: str) -> MoCo:
    """A MoCo in ``dtype`` whose state is ``source``'s rounded to float32 (then held in dtype)."""
    model = MoCo(**{**config.model_arguments(), "dtype": dtype})
    state = {k: np.asarray(to_numpy(v)) for k, v in source.state_dict().items()}
    state = {k: (v.astype(np.float32).astype(dtype) if v.dtype.kind == "f" else v) for k, v in state.items()}
    model.load_state_dict(state)
    model.shuffle_rng = copy.deepcopy(source.shuffle_rng)
    return model


def captured_gradients(model: MoCo, x_q, x_k, m, lr) -> dict:
    """Our step's gradients (its SGD update replaced by a capture), the keys it enqueued and its BN buffers."""
    grads: dict = {}
    model.optimizer.step_ = lambda g, lr=None: grads.update(
        {k: np.array(to_numpy(v), np.float64) for k, v in g.items()}
    )
    ptr = model.queue.ptr
    model.step(x_q, x_k, m=m, lr=lr)
    n = x_q.shape[0]
    keys = np.array(to_numpy(model.queue.keys), np.float64)[(ptr + np.arange(n)) % model.K]
    buffers = {k: np.array(to_numpy(v), np.float64) for k, v in model.encoder_q.buffers.items() if "running" in k}
    return {"grads": grads, "keys": keys, "buffers": buffers}


def twin_gradients(model32: MoCo, x_q, x_k, m, lr, perms) -> dict:
    twin = TorchMoCo(
        torch_encoder_like(model32.encoder_q, torch.float32).train(),
        torch_encoder_like(model32.encoder_k, torch.float32).train(),
        torch.from_numpy(np.array(to_numpy(model32.queue.state_dict()["queue"]))),
        model32.queue.ptr,
        m=model32.m,
        T=model32.T,
        lr=lr,
        momentum=0.9,
        weight_decay=0.0,
    )
    grads: dict = {}
    names = dict(twin.encoder_q.named_parameters())
    twin.optimizer.step = lambda: grads.update({k: p.grad.double().numpy() for k, p in names.items()})
    ptr = twin.ptr
    t = [torch.from_numpy(np.array(to_numpy(x))) for x in (x_q, x_k)]
    twin.step(t[0], t[1], perms, m=m, lr=lr)
    n = x_q.shape[0]
    keys = twin.queue.T.double().numpy()[(ptr + np.arange(n)) % twin.queue.shape[1]]
    buffers = {k: v.double().numpy() for k, v in twin.encoder_q.state_dict().items() if "running" in k}
    return {"grads": grads, "keys": keys, "buffers": buffers}


def relative(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def along(a, b):
    """The error's component along the exact value, (a − b)·b / ‖b‖²: a systematic shrinking (< 0) or growing
    (> 0) of the whole tensor, which a random rounding error leaves near 0."""
    return float(np.vdot(a - b, b) / max(np.vdot(b, b), 1e-300))


def record(errors, name, ours, theirs, exact):
    row = errors.setdefault(name, {k: [] for k in ("ours", "pytorch", "ours_along", "pytorch_along")})
    row["ours"].append(relative(ours, exact))
    row["pytorch"].append(relative(theirs, exact))
    row["ours_along"].append(along(ours, exact))
    row["pytorch_along"].append(along(theirs, exact))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data")
    parser.add_argument("--warm-steps", type=int, default=60)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    base = TrainConfig.from_dict({**TrainConfig().to_dict(), "data": args.data, "seed": args.seed, "dtype": "float64"})
    train, _ = labelled_splits(base)
    pair = PairedTraining(base, train)  # float64: ours and the twin are one program; we use ours
    order = epoch_order(base.seed, 0, len(train))  # the first epoch's
    lr = learning_rate(base.lr, 0, base.epochs, base.cos, tuple(base.schedule))
    total = base.epochs * pair.steps_per_epoch
    errors: dict = {}
    step = 0
    for b in range(args.warm_steps + args.batches):
        index = order[(b * base.batch_size) % (len(order) - base.batch_size) :][: base.batch_size]
        x_q, x_k = two_views(train.images, index, pair.augment, pair.aug_rng, pair.backend, SingleProcess())
        m = momentum_at_step(base.m, step, total, base.m_cos)
        if b >= args.warm_steps:  # measure from this state, on these views
            x32 = [np.asarray(to_numpy(x)).astype(np.float32) for x in (x_q, x_k)]
            rng = copy.deepcopy(pair.model.shuffle_rng)
            perms = [torch.from_numpy(rng.permutation(x32[0].shape[0]))]
            ours = captured_gradients(rounded_model(pair.model, base, "float32"), *x32, m, lr)
            exact = captured_gradients(
                rounded_model(pair.model, base, "float64"), *(x.astype(np.float64) for x in x32), m, lr
            )
            theirs = twin_gradients(rounded_model(pair.model, base, "float32"), *x32, m, lr, perms)
            for kind in ("grads", "buffers"):
                for name, g in exact[kind].items():
                    record(errors, f"{kind[:-1]} {name}", ours[kind][name], theirs[kind][name], g)
            record(errors, "keys", ours["keys"], theirs["keys"], exact["keys"])
        pair.model.step(x_q, x_k, m=m, lr=lr)
        step += 1
    print(
        f"relative error of float32 against float64 from one rounded state, median over {args.batches} batches "
        f"(after {args.warm_steps} float64 steps, seed {args.seed})"
    )
    print("(relative error ‖g₃₂ − g₆₄‖/‖g₆₄‖; along: the batches' mean of (g₃₂ − g₆₄)·g₆₄/‖g₆₄‖², a systematic scale)")
    print(f"| {'tensor':42s} | moco-ref | PyTorch | ratio | along, moco-ref | along, PyTorch |")
    print(f"| {'-' * 42} | -------: | ------: | ----: | --------------: | -------------: |")
    ratios, alongs = [], {"ours": [], "pytorch": []}
    for name, row in errors.items():
        o, p = float(np.median(row["ours"])), float(np.median(row["pytorch"]))
        ao, ap = float(np.mean(row["ours_along"])), float(np.mean(row["pytorch_along"]))
        alongs["ours"].append(ao)
        alongs["pytorch"].append(ap)
        ratios.append(o / p if p else np.inf)
        print(f"| {name:42s} | {o:8.2e} | {p:7.2e} | {o / p if p else float('inf'):5.2f} | {ao:+15.1e} | {ap:+14.1e} |")
    print(
        f"median ratio over tensors (moco-ref's error / PyTorch's): {np.median(ratios):.2f}; "
        f"tensors where moco-ref's error is over 2× PyTorch's: {sum(r > 2 for r in ratios)} of {len(ratios)}"
    )
    for side in alongs:
        print(
            f"'along' over tensors, {side}: mean {np.mean(alongs[side]):+.1e}, "
            f"mean |.| {np.mean(np.abs(alongs[side])):.1e}"
        )


if __name__ == "__main__":
    main()
