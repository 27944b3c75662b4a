"""``moco-ref bench learn``: does moco-ref learn what PyTorch learns?  Both trained side by side, over seeds.

For each seed, the run's configuration (``moco-ref train``'s defaults, then its flags) builds moco-ref's MoCo and
its PyTorch twin (moco_ref/pytorch_moco.py: autograd and ``torch.optim.SGD``, on the CPU, in the run's
dtype) with the same initial state: both encoders' weights and buffers, the queue and its pointer, and SGD's
momentum, weight decay (on every parameter) and Nesterov setting.  One loop, the trainer's
(moco_ref/run/trainer.py; its parts in moco_ref/run/epoch.py), then gives both the same steps:

    order    ← epoch_order(seed, epoch, N): the trainer's permutation of the training set, full batches only
    x_q, x_k ← the run's augmentation, its parameters from default_rng([seed, 11]), drawn for x_q then x_k
    shuffle  ← the permutations our step draws from its shuffle_rng (the twin is given the same ones)
    lr, m    ← the epoch's learning rate and the step's momentum, for both optimisers and momentum updates

Both are measured by the same code: the twin's encoder_q is loaded into a moco-ref encoder (the state_dict
names are the same) and goes through moco-ref's kNN monitor (``knn_accuracy`` with the run's k and t, before
training, every --knn-every epochs and at the end, on the held-out split) and its linear probe
(``linear_probe``, features encoded once).  Over the seeds: the mean and standard deviation of each figure and
the paired difference ours − PyTorch with its Student-t interval (moco_ref/bench/learn_report.py).  The two
learn alike where that interval contains 0.

In float32 the two programs round differently and training amplifies the difference; --control tells how
much of ours − PyTorch that alone explains: a third model, PyTorch′, is the twin started one ulp off
(PairedTraining), trained on the same steps and measured alike.  PyTorch − PyTorch′ is chaos and nothing
else.  --drift EVERY records, every EVERY steps, how far apart the models are layer by layer
(moco_ref/bench/drift.py).

The report (``run_learn``'s return value and the --out JSON):

    {"header": machine and versions, "config": the first seed's configuration, "seeds": [...],
     "probe_epochs": E, "control": whether PyTorch′ was trained,
     "runs": [{"seed", "steps", "steps_per_epoch",
               "ours", "pytorch" (and "control", PyTorch′): {"knn_curve": [{"epoch", "global_step", "top1"}, ...],
                                      "knn_top1", "linear_top1", "loss": [mean loss of each epoch]},
               "drift" (with --drift): {"every", "layers", "steps", "ours_vs_pytorch", "control_vs_pytorch"}}, ...],
     "summary": {"knn_top1" and "linear_top1": {"ours", "pytorch" (and "control"): {"mean", "std", "n"},
                 "difference": paired_interval's {"mean", "std", "n", "level", "t", "low", "high",
                 "contains_zero", "differences"} of ours − PyTorch,
                 with --control "control_difference": the same of PyTorch − PyTorch′, and
                 "spreads": {"ours_vs_pytorch_std", "pytorch_vs_control_std", "f_test": {"f", "dof", "p"},
                             "welch": {"t", "dof", "p"}, "permutation": {"statistic", "p", "relabellings",
                             "exact"}}}}}

Accuracies are in %, differences in points.
"""

from __future__ import annotations

import copy
import json
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from backends import get_backend, to_numpy
from moco_ref.augment import make_pipeline
from moco_ref.bench.drift import Drift, NoDrift, drift_layers, summary_lines
from moco_ref.bench.learn_report import CONTROL, IMPLEMENTATIONS, NAMES, summarise
from moco_ref.bench.machine import machine_header, python_command
from moco_ref.bench.optional_torch import set_torch_threads_like_blas
from moco_ref.data import check_batchable, load_dataset
from moco_ref.errors import UserError
from moco_ref.evaluation.knn import knn_accuracy
from moco_ref.evaluation.linear import linear_probe
from moco_ref.moco import MoCo
from moco_ref.momentum import momentum_at_step
from moco_ref.optim import learning_rate
from moco_ref.parallel.communicator import SingleProcess
from moco_ref.progress import SLOW_S, NoProgress
from moco_ref.run.batchnorm_values import check_batchnorm_values
from moco_ref.run.config import TrainConfig
from moco_ref.run.epoch import end_step, epoch_order, two_views

TORCH_INSTALL = "pip install torch"
PROBE_EPOCHS = 100  # main_lincls's


def require_torch():
    """torch, or a UserError that names the install command (the twin is PyTorch)."""
    try:
        import torch
    except ImportError:
        raise UserError(
            f"moco-ref bench learn trains a PyTorch twin beside moco-ref and needs PyTorch: {TORCH_INSTALL}"
        ) from None
    return torch


def seed_configs(values: dict, first_seed: int, seeds: int) -> list[TrainConfig]:
    """The configuration of each seed: ``values`` (a full TrainConfig dict) with seed first_seed, first_seed + 1, …"""
    return [TrainConfig.from_dict({**values, "seed": first_seed + i}) for i in range(seeds)]


def knn_epochs(config: TrainConfig) -> set[int]:
    """The epochs after which the kNN monitor measures: every --knn-every and the last (0 = before training)."""
    every = config.knn_every
    return {0, config.epochs, *(range(every, config.epochs + 1, every) if every else ())}


# ------------------------------------------------------------------ the paired loop
def nudge_one_ulp_(module, rng) -> None:
    """Moves every element of every floating parameter of a torch module one ulp (``np.nextafter``, in the
    parameter's dtype) towards +∞ or −∞, the direction drawn per element from ``rng``; buffers are left."""
    import torch

    with torch.no_grad():
        for parameter in module.parameters():
            if not parameter.is_floating_point():
                continue
            value = parameter.detach().cpu().numpy()
            up = rng.integers(0, 2, size=value.shape).astype(bool)
            towards = np.where(up, np.inf, -np.inf).astype(value.dtype)
            parameter.copy_(torch.from_numpy(np.nextafter(value, towards)))


class PairedTraining:
    """moco-ref's MoCo and its PyTorch twin, built with equal state and trained by one loop on equal inputs.

    With ``control``, a third model trained alongside on the same inputs: PyTorch′, a second twin whose
    encoder_q starts one ulp off the twin's in every element of every parameter (``nudge_one_ulp_``, the
    directions from default_rng([seed, 12])), encoder_k a copy of it, as MoCo starts.  The nudge changes the
    start by the smallest amount the dtype can hold and nothing else (the program, the inputs, the thread
    count are the twin's), so every difference between PyTorch′ and PyTorch is rounding amplified by
    training: chaos, the yardstick for ours − PyTorch.  (A different thread count would also change only
    roundings, but not surely: a reduction may split the same way.)

    Attributes:
        config, train_set: the run's configuration and training data.
        model: our MoCo.  twin: the TorchMoCo.  control: PyTorch′ (a TorchMoCo), or None.
        drift: the layer distances recorded along the way (moco_ref/bench/drift.py; NoDrift without --drift).
        epoch, global_step: epochs completed and steps done (the same for all).
    """

    def __init__(self, config: TrainConfig, train_set, control: bool = False, drift_every: int = 0):
        torch = require_torch()
        from moco_ref.pytorch_moco import torch_encoder_like

        self.torch, self.config, self.train_set = torch, config, train_set
        self.backend = get_backend(config.backend)
        self.augment = make_pipeline(config.aug, config.image_size)
        self.model = model = MoCo(**config.model_arguments())
        self.dtype = dtype = getattr(torch, config.dtype)
        self.twin = self.build_twin(
            torch_encoder_like(model.encoder_q, dtype).train(), torch_encoder_like(model.encoder_k, dtype).train()
        )
        self.control = None
        if control:
            encoder_q = torch_encoder_like(model.encoder_q, dtype).train()
            nudge_one_ulp_(encoder_q, np.random.default_rng([config.seed, 12]))
            self.control = self.build_twin(encoder_q, copy.deepcopy(encoder_q))
        self.drift = Drift(drift_every, drift_layers(model.encoder_q), control) if drift_every else NoDrift()
        # The trainer's augmentation generator (each epoch's order is epoch_order's; the model holds the shuffles').
        self.aug_rng = np.random.default_rng([config.seed, 11])
        self.epoch, self.global_step = 0, 0

    def build_twin(self, encoder_q, encoder_k):
        """A TorchMoCo of these encoders with our model's queue, pointer, m, T and SGD settings."""
        from moco_ref.pytorch_moco import TorchMoCo

        model, sgd = self.model, self.model.optimizer
        queue = self.torch.from_numpy(to_numpy(model.queue.state_dict()["queue"]).copy())  # (D, K)
        return TorchMoCo(
            encoder_q,
            encoder_k,
            queue.to(self.dtype),
            model.queue.ptr,
            m=model.m,
            T=model.T,
            lr=sgd.lr,
            momentum=sgd.momentum,
            weight_decay=sgd.weight_decay,
            symmetric=model.symmetric,
            nesterov=sgd.nesterov,
        )

    @property
    def names(self) -> tuple:
        """The models trained: ("ours", "pytorch"), and "control" with PyTorch′."""
        return IMPLEMENTATIONS + ((CONTROL,) if self.control is not None else ())

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_set) // self.config.batch_size

    @property
    def total_steps(self) -> int:
        return self.config.epochs * self.steps_per_epoch

    def stopped(self) -> bool:
        """Whether training is over: all epochs done, or --max-steps reached (the trainer's ``end_step``)."""
        return self.global_step >= end_step(self.config, self.steps_per_epoch)

    def run_epoch(self, progress=NoProgress) -> dict:
        """Trains all through the current epoch (or to --max-steps); returns {"ours", "pytorch"(, "control")}:
        the mean loss of each over the epoch's steps.  ``progress``: the class that shows the epoch's steps (a
        line every --log-every steps off a terminal).

        The trainer's epoch (moco_ref/run/epoch.py): its order (``epoch_order``), full batches, the trainer's
        two views of each image (``two_views``), the epoch's lr and the step's m, up to ``end_step``.
        """
        c = self.config
        lr = learning_rate(c.lr, self.epoch, c.epochs, c.cos, tuple(c.schedule))
        order = epoch_order(c.seed, self.epoch, len(self.train_set))
        losses: dict[str, list[float]] = {name: [] for name in self.names}
        steps = max(0, min(self.steps_per_epoch, end_step(c, self.steps_per_epoch) - self.global_step))
        bar = progress(steps, f"seed {c.seed} epoch {self.epoch + 1}/{c.epochs}", every=c.log_every)
        started, data_seconds = time.perf_counter(), 0.0
        for step_in_epoch in range(steps):
            data_started = time.perf_counter()
            index = order[step_in_epoch * c.batch_size : (step_in_epoch + 1) * c.batch_size]
            x_q, x_k = two_views(
                self.train_set.images, index, self.augment, self.aug_rng, self.backend, SingleProcess()
            )
            data_seconds += time.perf_counter() - data_started
            m = momentum_at_step(c.m, self.global_step, self.total_steps, c.m_cos)
            perms = self.shuffle_permutations(len(index))
            ours = self.model.step(x_q, x_k, m=m, lr=lr)
            t_q, t_k = (self.torch.from_numpy(to_numpy(x)).to(self.dtype) for x in (x_q, x_k))
            theirs = self.twin.step(t_q, t_k, perms, m=m, lr=lr)
            losses["ours"].append(float(ours["loss"]))
            losses["pytorch"].append(float(theirs))
            if self.control is not None:
                losses[CONTROL].append(float(self.control.step(t_q, t_k, perms, m=m, lr=lr)))
            self.global_step += 1
            self.drift.observe(self)
            seconds = time.perf_counter() - started
            bar.show(
                step_in_epoch + 1,
                [
                    f"loss ours {losses['ours'][-1]:.3f}",
                    f"PyTorch {losses['pytorch'][-1]:.3f}",
                    *([f"PyTorch′ {losses[CONTROL][-1]:.3f}"] if self.control is not None else []),
                    f"{(step_in_epoch + 1) * c.batch_size / seconds:.0f} img/s (all)",
                    f"data {100 * data_seconds / seconds:.0f} %",
                ],
            )
        bar.close()
        if len(losses["ours"]) == self.steps_per_epoch:
            self.epoch += 1
        return {name: float(np.mean(values)) if values else None for name, values in losses.items()}

    def shuffle_permutations(self, n: int) -> list:
        """The key batch's permutation of each loss term that our next step will draw: from a copy of its
        shuffle_rng, in the same order (one per direction); the identity where shuffle BN is off."""
        directions = 2 if self.model.symmetric else 1
        if not getattr(self.config, "shuffle_bn", True):
            return [self.torch.arange(n) for _ in range(directions)]
        rng = copy.deepcopy(self.model.shuffle_rng)  # the same state: the same draws
        return [self.torch.from_numpy(rng.permutation(n)) for _ in range(directions)]

    def twin_encoder(self, twin=None):
        """A twin's encoder_q (the PyTorch twin's unless told) as a moco-ref encoder (its weights and BatchNorm
        buffers), for moco-ref's measures."""
        encoder = self.model.encoder_q.copy()
        state = (twin or self.twin).encoder_q.state_dict()
        encoder.load_state_dict({name: tensor.detach().cpu().numpy() for name, tensor in state.items()})
        return encoder

    def encoders(self) -> dict:
        """{"ours", "pytorch"(, "control")}: the query encoders as moco-ref encoders, as they are now."""
        encoders = {"ours": self.model.encoder_q, "pytorch": self.twin_encoder()}
        if self.control is not None:
            encoders[CONTROL] = self.twin_encoder(self.control)
        return encoders


# ------------------------------------------------------------------ one seed, all seeds
def labelled_splits(config: TrainConfig):
    """(train, test) of the run's data, both labelled and distinct; a UserError otherwise (nothing to measure)."""
    train = load_dataset(config.data, "train", config.image_size, config.seed)
    test = load_dataset(config.data, "test", config.image_size, config.seed)
    if train.labels is None or test.labels is None:
        raise UserError(
            f"moco-ref bench learn measures kNN and linear top-1 and needs labelled data; "
            f"{train.name} has no labels (put images in class sub-folders)"
        )
    if len(test) == len(train) and np.array_equal(test.images, train.images):
        raise UserError(
            f"moco-ref bench learn measures on a held-out split; {train.name} has no separate test/val split"
        )
    return train, test


def run_seed(
    config: TrainConfig,
    probe_epochs: int = PROBE_EPOCHS,
    log=None,
    progress=NoProgress,
    control: bool = False,
    drift_every: int = 0,
) -> dict:
    """Trains both implementations (and PyTorch′ with ``control``) on one seed and measures them; returns the
    run's record (module docstring).  ``progress``: the class that shows the epochs, the kNN passes and the
    probes (moco_ref.progress).  ``drift_every``: record the layer distances every that many steps (0: not)."""
    log = log or (lambda line: None)
    train, test = labelled_splits(config)
    check_batchable(train, config.batch_size, config.bn_splits)
    check_batchnorm_values(config)
    pair = PairedTraining(config, train, control, drift_every)
    test_transform = make_pipeline("test", config.image_size)
    due = knn_epochs(config)
    record: dict[str, Any] = {
        "seed": config.seed,
        "steps": 0,
        "steps_per_epoch": pair.steps_per_epoch,
        **{name: {"knn_curve": [], "loss": []} for name in pair.names},
    }

    def figures(values: dict, unit: str = "%", digits: int = 2) -> str:  # "ours 47.10%, PyTorch 46.90%"
        return ", ".join(f"{NAMES[name]} {value:.{digits}f}{unit}" for name, value in values.items())

    def measure_knn() -> dict:
        top1 = {}
        for name, encoder in pair.encoders().items():
            top1[name] = knn_accuracy(
                encoder, train, test, test_transform, pair.backend, config.knn_k, config.knn_t, progress=progress
            )["top1"]
            record[name]["knn_curve"].append({"epoch": pair.epoch, "global_step": pair.global_step, "top1": top1[name]})
        return top1

    pair.drift.observe(pair)  # step 0
    top1 = measure_knn()
    log(f"seed {config.seed}: kNN top-1 before training: {figures(top1)}")
    while not pair.stopped():
        started = pair.epoch
        losses = pair.run_epoch(progress)
        for name in pair.names:
            record[name]["loss"].append(losses[name])
        line = f"seed {config.seed} epoch {started + 1}/{config.epochs}: loss {figures(losses, '', 4)}"
        if pair.epoch > started and pair.epoch in due:  # a whole epoch, and due
            top1 = measure_knn()
            line += f"; kNN top-1 {figures(top1)}"
        log(line)
    if record["ours"]["knn_curve"][-1]["global_step"] != pair.global_step:  # stopped by --max-steps
        measure_knn()
    record["steps"] = pair.global_step
    pair.drift.observe(pair, force=True)  # the last step
    drift = pair.drift.record()
    if drift is not None:
        record["drift"] = drift
        for line in summary_lines(config.seed, drift):
            log(line)
    for name, encoder in pair.encoders().items():
        record[name]["knn_top1"] = record[name]["knn_curve"][-1]["top1"]
        record[name]["linear_top1"] = linear_probe(
            encoder,
            train,
            test,
            pair.backend,
            epochs=probe_epochs,
            augment=False,
            progress=partial(progress, delay=SLOW_S),
        )["top1"]
    log(f"seed {config.seed}: linear top-1 {figures({n: record[n]['linear_top1'] for n in pair.names})}")
    return record


def run_learn(
    values: dict,
    seeds: int = 3,
    first_seed: int = 0,
    probe_epochs: int = PROBE_EPOCHS,
    out=None,
    command: str | None = None,
    log=None,
    progress=NoProgress,
    control: bool = False,
    drift_every: int = 0,
) -> dict:
    """Trains and measures every seed; returns the report, also written to ``out`` (JSON) after each seed.

    Args:
        values: a full TrainConfig dict (train's defaults, a preset, the flags); its seed is replaced.
        seeds, first_seed: the seeds first_seed, …, first_seed + seeds − 1.
        probe_epochs: epochs of each linear probe.
        out: a JSON file, or None.  Where it already holds a report of this configuration, its seeds are read
            back, not trained again, and kept (an interrupted or shorter run goes on; the report and the
            table then cover every seed in it).
        command: the command line recorded in the header (default: this process's).
        log: called with each line of what was done.  progress: the class that shows the steps
            (moco_ref.progress; NoProgress: none).
        control: also train PyTorch′ (PairedTraining) on every seed; a report at ``out`` must have it too.
        drift_every: record the layer distances every that many steps (moco_ref/bench/drift.py; 0: not).
    """
    configs = seed_configs(values, first_seed, seeds)
    finished = finished_runs(out, configs[0], probe_epochs, control) if out else {}
    require_torch()
    get_backend(configs[0].backend)  # no GPU: one line now, not after loading the data
    from backends.cpu import reuse_freed_memory

    reuse_freed_memory()  # as `moco-ref train` does
    set_torch_threads_like_blas()  # as the speed suites: PyTorch gets NumPy's BLAS threads
    report: dict[str, Any] = {
        "header": machine_header(configs[0].backend, command or python_command()),
        "config": configs[0].to_dict(),
        "seeds": [],
        "probe_epochs": probe_epochs,
        "control": control,
        "runs": [],
        "summary": None,
    }
    runs = dict(finished)  # every seed the report at ``out`` held stays in it
    for config in configs:
        if config.seed in runs:
            (log or (lambda line: None))(f"seed {config.seed}: read back from {out}")
            continue
        runs[config.seed] = run_seed(config, probe_epochs, log, progress, control=control, drift_every=drift_every)
        report.update(seeds=sorted(runs), runs=[runs[seed] for seed in sorted(runs)])
        report["summary"] = summarise(report["runs"])
        if out:
            write_report(report, out)
    report.update(seeds=sorted(runs), runs=[runs[seed] for seed in sorted(runs)])
    report["summary"] = summarise(report["runs"])
    return report


def finished_runs(out, config: TrainConfig, probe_epochs: int, control: bool = False) -> dict:
    """{seed: run record} of the seeds a report at ``out`` already holds, to be read back instead of trained
    again ({} when there is no such file); a UserError when the file is not a report of this configuration
    (every setting but the seed), these probe epochs and this --control (--drift may differ)."""
    path = Path(out)
    if not path.exists():
        return {}
    try:
        report = json.loads(path.read_text())
        written, runs = dict(report["config"]), report["runs"]
        seeds = {run["seed"]: run for run in runs}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(
            f"{out} is there but is not a report of moco-ref bench learn ({error}); give another --out or remove it"
        ) from None
    wanted = {**config.to_dict(), "seed": None}
    written["seed"] = None
    changed = sorted(name for name in wanted.keys() | written.keys() if wanted.get(name) != written.get(name))
    if report.get("probe_epochs") != probe_epochs:
        changed.append("probe_epochs")
    if bool(report.get("control", False)) != control:
        changed.append("--control")
    if changed:
        raise UserError(
            f"{out} holds the seeds of another configuration (it differs in {', '.join(changed)}); "
            f"run with its settings to add seeds to it, or give another --out"
        )
    return seeds


def write_report(report: dict, out) -> Path:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
