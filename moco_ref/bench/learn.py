"""``moco-ref bench learn``: does moco-ref learn what PyTorch learns?  Both trained side by side, over seeds.

For each seed, the run's configuration (``moco-ref train``'s defaults, then its flags) builds moco-ref's MoCo and
its PyTorch twin (moco_ref/bench/torch_twin.py: autograd and ``torch.optim.SGD``, on the CPU, in the run's
dtype) with the same initial state: both encoders' weights and buffers, the queue and its pointer, and SGD's
momentum, weight decay (on every parameter) and Nesterov setting.  One loop, the trainer's
(moco_ref/run/trainer.py), then gives both the same steps:

    order    ← default_rng([seed, 10]): one permutation of the training set per epoch, full batches only
    x_q, x_k ← the run's augmentation, its parameters from default_rng([seed, 11]), drawn for x_q then x_k
    shuffle  ← the permutations our step draws from its shuffle_rng (the twin is given the same ones)
    lr, m    ← the epoch's learning rate and the step's momentum, for both optimisers and momentum updates

Both are measured by the same code: the twin's encoder_q is loaded into a moco-ref encoder (the state_dict
names are the same) and goes through moco-ref's kNN monitor (``knn_accuracy`` with the run's k and t, before
training, every --knn-every epochs and at the end, on the held-out split) and its linear probe
(``linear_probe``, features encoded once).  Over the seeds: the mean and standard deviation of each figure and
the paired difference ours − PyTorch with its Student-t interval (moco_ref/bench/intervals.py).  The two learn
alike where that interval contains 0.

The report (``run_learn``'s return value and the --out JSON):

    {"header": machine and versions, "config": the first seed's configuration, "seeds": [...],
     "probe_epochs": E,
     "runs": [{"seed", "steps", "steps_per_epoch",
               "ours" and "pytorch": {"knn_curve": [{"epoch", "global_step", "top1"}, ...], "knn_top1",
                                      "linear_top1", "loss": [mean loss of each epoch]}}, ...],
     "summary": {"knn_top1" and "linear_top1": {"ours" and "pytorch": {"mean", "std", "n"},
                 "difference": paired_interval's {"mean", "std", "n", "level", "t", "low", "high",
                 "contains_zero", "differences"}}}}

Accuracies are in %, differences in points.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from backends import get_backend, to_numpy
from moco_ref.augment import make_pipeline
from moco_ref.bench.common import (
    machine_header,
    python_command,
    set_torch_threads_like_blas,
)
from moco_ref.bench.intervals import mean_and_std, paired_interval
from moco_ref.data import check_batchable, load_dataset
from moco_ref.errors import UserError
from moco_ref.evaluation.knn import knn_accuracy
from moco_ref.evaluation.linear import linear_probe
from moco_ref.moco import MoCo
from moco_ref.momentum import momentum_at_step
from moco_ref.optim import learning_rate
from moco_ref.parallel.communicator import SingleProcess
from moco_ref.run.batchnorm_values import check_batchnorm_values
from moco_ref.run.config import TrainConfig
from moco_ref.run.progress import SLOW_S, NoProgress
from moco_ref.run.trainer import two_views

TORCH_INSTALL = "pip install torch"
IMPLEMENTATIONS = ("ours", "pytorch")
METRICS = {"knn_top1": "kNN top-1", "linear_top1": "linear top-1"}
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
class PairedTraining:
    """moco-ref's MoCo and its PyTorch twin, built with equal state and trained by one loop on equal inputs.

    Attributes:
        config, train_set: the run's configuration and training data.
        model: our MoCo.  twin: the TorchMoCo.
        epoch, global_step: epochs completed and steps done (the same for both).
    """

    def __init__(self, config: TrainConfig, train_set):
        torch = require_torch()
        from moco_ref.bench.torch_twin import TorchMoCo, torch_encoder_like

        self.torch, self.config, self.train_set = torch, config, train_set
        self.backend = get_backend(config.backend)
        self.augment = make_pipeline(config.aug, config.image_size)
        self.model = model = MoCo(**config.model_arguments())
        dtype, sgd = getattr(torch, config.dtype), model.optimizer
        queue = torch.from_numpy(to_numpy(model.queue.state_dict()["queue"]).copy())  # (D, K)
        self.twin = TorchMoCo(
            torch_encoder_like(model.encoder_q, dtype).train(),
            torch_encoder_like(model.encoder_k, dtype).train(),
            queue.to(dtype),
            model.queue.ptr,
            m=model.m,
            T=model.T,
            lr=sgd.lr,
            momentum=sgd.momentum,
            weight_decay=sgd.weight_decay,
            symmetric=model.symmetric,
            nesterov=sgd.nesterov,
        )
        self.dtype = dtype
        # The trainer's generators: epoch orders and augmentation parameters (the model holds the shuffles').
        self.data_rng = np.random.default_rng([config.seed, 10])
        self.aug_rng = np.random.default_rng([config.seed, 11])
        self.epoch, self.global_step = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_set) // self.config.batch_size

    @property
    def total_steps(self) -> int:
        return self.config.epochs * self.steps_per_epoch

    def stopped(self) -> bool:
        """Whether training is over: all epochs done, or --max-steps reached."""
        c = self.config
        return self.epoch >= c.epochs or bool(c.max_steps and self.global_step >= c.max_steps)

    def run_epoch(self, progress=NoProgress) -> dict:
        """Trains both through the current epoch (or to --max-steps); returns {"ours", "pytorch"}: the mean loss
        of each over the epoch's steps.  ``progress``: the class that shows the epoch's steps (a line every
        --log-every steps off a terminal).

        The trainer's epoch: a fresh order from the data generator (each epoch draws one permutation; the
        trainer's re-seeding from the state saved at the epoch's start draws the same one), full batches,
        the trainer's two views of each image (``two_views``), the epoch's lr and the step's m.
        """
        c = self.config
        lr = learning_rate(c.lr, self.epoch, c.epochs, c.cos, tuple(c.schedule))
        order = self.data_rng.permutation(len(self.train_set))
        losses: dict[str, list[float]] = {name: [] for name in IMPLEMENTATIONS}
        steps = self.steps_per_epoch
        if c.max_steps:
            steps = max(0, min(steps, c.max_steps - self.global_step))
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
            self.global_step += 1
            seconds = time.perf_counter() - started
            bar.show(
                step_in_epoch + 1,
                [
                    f"loss ours {losses['ours'][-1]:.3f}",
                    f"PyTorch {losses['pytorch'][-1]:.3f}",
                    f"{(step_in_epoch + 1) * c.batch_size / seconds:.0f} img/s (both)",
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

    def twin_encoder(self):
        """The twin's encoder_q as a moco-ref encoder (its weights and BatchNorm buffers), for moco-ref's measures."""
        encoder = self.model.encoder_q.copy()
        state = self.twin.encoder_q.state_dict()
        encoder.load_state_dict({name: tensor.detach().cpu().numpy() for name, tensor in state.items()})
        return encoder

    def encoders(self) -> dict:
        """{"ours", "pytorch"}: the two query encoders as moco-ref encoders, as they are now."""
        return {"ours": self.model.encoder_q, "pytorch": self.twin_encoder()}


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


def run_seed(config: TrainConfig, probe_epochs: int = PROBE_EPOCHS, log=None, progress=NoProgress) -> dict:
    """Trains both implementations on one seed and measures both; returns the run's record (module docstring).
    ``progress``: the class that shows the epochs, the kNN passes and the probes (moco_ref.run.progress)."""
    log = log or (lambda line: None)
    train, test = labelled_splits(config)
    check_batchable(train, config.batch_size, config.bn_splits)
    check_batchnorm_values(config)
    pair = PairedTraining(config, train)
    test_transform = make_pipeline("test", config.image_size)
    due = knn_epochs(config)
    record: dict[str, Any] = {
        "seed": config.seed,
        "steps": 0,
        "steps_per_epoch": pair.steps_per_epoch,
        **{name: {"knn_curve": [], "loss": []} for name in IMPLEMENTATIONS},
    }

    def measure_knn() -> dict:
        top1 = {}
        for name, encoder in pair.encoders().items():
            top1[name] = knn_accuracy(
                encoder, train, test, test_transform, pair.backend, config.knn_k, config.knn_t, progress=progress
            )["top1"]
            record[name]["knn_curve"].append({"epoch": pair.epoch, "global_step": pair.global_step, "top1": top1[name]})
        return top1

    top1 = measure_knn()
    log(f"seed {config.seed}: kNN top-1 before training: ours {top1['ours']:.2f}%, PyTorch {top1['pytorch']:.2f}%")
    while not pair.stopped():
        started = pair.epoch
        losses = pair.run_epoch(progress)
        for name in IMPLEMENTATIONS:
            record[name]["loss"].append(losses[name])
        line = (
            f"seed {config.seed} epoch {started + 1}/{config.epochs}: loss ours {losses['ours']:.4f}, "
            f"PyTorch {losses['pytorch']:.4f}"
        )
        if pair.epoch > started and pair.epoch in due:  # a whole epoch, and due
            top1 = measure_knn()
            line += f"; kNN top-1 ours {top1['ours']:.2f}%, PyTorch {top1['pytorch']:.2f}%"
        log(line)
    if record["ours"]["knn_curve"][-1]["global_step"] != pair.global_step:  # stopped by --max-steps
        measure_knn()
    record["steps"] = pair.global_step
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
    log(
        f"seed {config.seed}: linear top-1 ours {record['ours']['linear_top1']:.2f}%, "
        f"PyTorch {record['pytorch']['linear_top1']:.2f}%"
    )
    return record


def summarise(runs: list) -> dict:
    """The summary of the report: per metric, each implementation's mean and std, and the paired difference."""
    summary = {}
    for metric in METRICS:
        values = {name: [run[name][metric] for run in runs] for name in IMPLEMENTATIONS}
        summary[metric] = {
            **{name: mean_and_std(v) for name, v in values.items()},
            "difference": paired_interval(values["ours"], values["pytorch"]),
        }
    return summary


def run_learn(
    values: dict,
    seeds: int = 3,
    first_seed: int = 0,
    probe_epochs: int = PROBE_EPOCHS,
    out=None,
    command: str | None = None,
    log=None,
    progress=NoProgress,
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
            (moco_ref.run.progress; NoProgress: none).
    """
    configs = seed_configs(values, first_seed, seeds)
    finished = finished_runs(out, configs[0], probe_epochs) if out else {}
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
        "runs": [],
        "summary": None,
    }
    runs = dict(finished)  # every seed the report at ``out`` held stays in it
    for config in configs:
        if config.seed in runs:
            (log or (lambda line: None))(f"seed {config.seed}: read back from {out}")
            continue
        runs[config.seed] = run_seed(config, probe_epochs, log, progress)
        report.update(seeds=sorted(runs), runs=[runs[seed] for seed in sorted(runs)])
        report["summary"] = summarise(report["runs"])
        if out:
            write_report(report, out)
    report.update(seeds=sorted(runs), runs=[runs[seed] for seed in sorted(runs)])
    report["summary"] = summarise(report["runs"])
    return report


def finished_runs(out, config: TrainConfig, probe_epochs: int) -> dict:
    """{seed: run record} of the seeds a report at ``out`` already holds, to be read back instead of trained
    again ({} when there is no such file); a UserError when the file is not a report of this configuration
    (every setting but the seed) and these probe epochs."""
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


# ------------------------------------------------------------------ the table and the picture
def _spread(stats: dict, sign: str = "") -> str:
    """mean ± std of one column ("+" as ``sign``: the mean's sign always shown)."""
    return f"{stats['mean']:{sign}.2f}" + (f" ± {stats['std']:.2f}" if stats["std"] is not None else "")


def interval_line(metric: str, difference: dict) -> str:
    """One sentence on the paired difference of one metric and its interval."""
    name, n = METRICS[metric], difference["n"]
    if difference["low"] is None:
        return f"{name}, ours − PyTorch: {difference['mean']:+.2f} points (one seed: no interval)"
    verdict = "contains 0" if difference["contains_zero"] else "does not contain 0"
    degrees = f"{n - 1} degree{'s' if n > 2 else ''} of freedom"
    return (
        f"{name}, ours − PyTorch: {difference['mean']:+.2f} points, {100 * difference['level']:.0f} % interval "
        f"[{difference['low']:+.2f}, {difference['high']:+.2f}] (Student's t, {degrees}, "
        f"t = {difference['t']:.3f}; width {difference['high'] - difference['low']:.2f}): {verdict}"
    )


def table_lines(report: dict) -> list[str]:
    """The per-seed table (markdown), mean ± std, and the interval lines."""
    header = (
        "| seed | kNN ours | kNN PyTorch | kNN ours − PyTorch | linear ours | linear PyTorch | linear ours − PyTorch |"
    )
    lines = [header, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for run in report["runs"]:
        cells = []
        for metric in METRICS:
            a, b = run["ours"][metric], run["pytorch"][metric]
            cells += [f"{a:.2f}", f"{b:.2f}", f"{a - b:+.2f}"]
        lines.append(f"| {run['seed']} | " + " | ".join(cells) + " |")
    summary = report["summary"]
    cells = []
    for metric in METRICS:
        s = summary[metric]
        cells += [_spread(s["ours"]), _spread(s["pytorch"]), _spread(s["difference"], "+")]
    lines.append("| mean ± std | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [interval_line(metric, summary[metric]["difference"]) for metric in METRICS]
    return lines


def can_draw() -> bool:
    """Whether matplotlib (the [plot] extra) is installed, for :func:`draw_curves`."""
    return importlib.util.find_spec("matplotlib") is not None


def draw_curves(report: dict, out) -> Path:
    """The kNN top-1 of both implementations against epochs, one panel a seed (moco-ref solid, PyTorch dashed)."""
    from moco_ref.tools.plot import load_matplotlib

    Figure, FigureCanvasAgg, MaxNLocator = load_matplotlib()
    runs = report["runs"]
    columns = min(len(runs), 5)
    rows = -(-len(runs) // columns)
    figure = Figure(figsize=(2.6 * columns + 0.6, 2.2 * rows + 0.8), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).ravel()
    for ax, run in zip(axes, runs):
        ends = []
        for name, style, colour, label in (("ours", "-", "C0", "moco-ref"), ("pytorch", "--", "C1", "PyTorch")):
            curve = run[name]["knn_curve"]
            epochs = [p["global_step"] / run["steps_per_epoch"] for p in curve]  # whole at each epoch's end
            ax.plot(
                epochs,
                [p["top1"] for p in curve],
                style,
                color=colour,
                marker="o",
                markersize=3,
                linewidth=1.4,
                label=label,
            )
            ends.append(f"{curve[-1]['top1']:.1f}")
        ax.set_title(f"seed {run['seed']}: {' vs '.join(ends)} %", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    for i, ax in enumerate(axes):
        ax.set_visible(i < len(runs))
        ax.tick_params(labelbottom=i + columns >= len(runs))  # epochs under the lowest panel of each column
    axes[0].legend(loc="lower right", fontsize=8)
    figure.supxlabel("epochs", fontsize=9)
    figure.supylabel("kNN top-1 on the held-out split (%)", fontsize=9)
    figure.suptitle("moco-ref bench learn: moco-ref (solid) and its PyTorch twin (dashed), the same steps", fontsize=10)
    figure.savefig(out, dpi=100)
    return Path(out)
