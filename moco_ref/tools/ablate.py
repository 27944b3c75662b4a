"""Ablations: the paper's claims about MoCo as short runs of one recipe that differ in one setting.

    momentum     m ∈ {0, 0.9, 0.99, 0.999}: how consistent the keys must be (the momentum encoder)
    queue        K ∈ the four largest of 16, 64, 256, … up to the training set: how many negatives
    shuffle-bn   S BatchNorm groups with the keys shuffled across them (split BN, the shuffle-BN stand-in on
                 one device), the same S groups with every key in its query's group, and 1 group (plain BN);
                 S = --bn-splits when above 2, else the paper's 8 (2 where 8 does not divide the batch)

Each study is a :class:`Study` of its own (its rows, the flags it refuses, its shape line, the paper's figures).

Each setting is a normal run directory DIR/<setting> trained in this process by
:class:`moco_ref.run.trainer.Trainer`, then measured by main_lincls's linear probe with the training
features encoded once (the fast ``--no-augment`` probe of ``moco-ref eval linear``), kept in the run
directory (moco_ref/run/directory.py names its files).  The table
(DIR/ablation.md and .json) and the kNN curves (DIR/ablation.png) are made from the run directories
alone, so an ablation that was interrupted continues where it stopped when the same command runs
again: a finished run is read back, an unfinished one resumed from its checkpoint exactly as
``moco-ref train --resume`` would, a run whose loss became NaN is reported as failed.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from moco_ref.data import check_batchable, load_dataset
from moco_ref.errors import RunDirectoryError, UserError
from moco_ref.evaluation.linear import linear_probe
from moco_ref.paths import check_output_folder, refused
from moco_ref.progress import SLOW_S, Progress
from moco_ref.run.batchnorm_values import check_batchnorm_values
from moco_ref.run.config import OPTIONS, TrainConfig
from moco_ref.run.directory import FAILED, PROBE, RunDirectory, check_run_folder, is_run_folder, read_meta
from moco_ref.run.resume import changed_settings, finished
from moco_ref.run.stopping import StoppedBySignal
from moco_ref.run.trainer import NonFiniteLoss, Trainer
from moco_ref.tools.plot import curves, load_matplotlib
from moco_ref.tools.runs import load_run

# The ablation's one default of its own: the kNN monitor every 2 epochs, for the curves.  The rest is
# `moco-ref train`'s recipe, 20 epochs included, so the m = 0.99 run of the momentum study is the default run.
DEFAULT_KNN_EVERY = 2
PROBE_EPOCHS = 100
ABLATION_DEFAULTS = {"knn_every": DEFAULT_KNN_EVERY}

# MoCo v1 (He et al., 2020), the momentum ablation: ResNet-50, K = 4096, ImageNet linear top-1 (%).
# None: "fails to train" (the loss oscillates).
PAPER_MOMENTUM = {0.0: None, 0.9: 55.2, 0.99: 57.8, 0.999: 59.0, 0.9999: 58.9}
PAPER_MOMENTUM_SOURCE = "MoCo v1 (He et al., 2020): ResNet-50, K = 4096, ImageNet linear top-1"
# MoCo v1, the queue size: its Figure 3 shows accuracy rising with K from 256 to 65536; the two values the
# paper states in its text and tables are these (m = 0.999, ImageNet linear top-1, %).
PAPER_QUEUE = {4096: 59.0, 65536: 60.6}
PAPER_QUEUE_SOURCE = (
    "MoCo v1 (He et al., 2020): ResNet-50, ImageNet linear top-1; 59.0 at K = 4096 (the momentum "
    "ablation's m = 0.999 row), 60.6 at K = 65536 (the main result); its Figure 3 shows accuracy "
    "rising with K from 256 to 65536"
)
UNSHUFFLED = "-unshuffled"  # a shuffle-bn row whose keys stay in their queries' BatchNorm groups

# The files of an ablation's folder, beside its runs' folders.
REPORT_MD, REPORT_JSON, REPORT_PNG = "ablation.md", "ablation.json", "ablation.png"
REPORT_FILES = (REPORT_MD, REPORT_JSON, REPORT_PNG)


@dataclass(frozen=True)
class Study:
    """One ablation: the configuration fields its rows set, the question it asks, and everything particular to
    it, each a method a study overrides (its rows and their names, the flags it refuses, its shape line, the
    paper's figures and the table's extra column); the code that runs and reports an ablation asks the study.

    Args:
        name: the command line's STUDY.  fields: the configuration fields a row sets.  column: the table's first
        column.  question: the question it asks.  example: ``--values`` as an example of its own.
    """

    name: str
    fields: tuple
    column: str
    question: str
    example: str

    # ---------------------------------------------------------------- the rows
    def default_values(self, base: TrainConfig, train_size: int) -> list:
        """The rows run when --values is not given."""
        raise NotImplementedError

    def changes(self, value) -> dict:
        """The configuration of the row ``value``: {field: setting}."""
        return {self.fields[0]: value}

    def run_name(self, value) -> str:
        """The folder of the row's run, inside the ablation's folder."""
        raise NotImplementedError

    def setting(self, value) -> str:
        """The row's setting in words, as the table shows it."""
        raise NotImplementedError

    def value_type(self) -> type:
        """The type of a value of --values."""
        return int

    def rows(self, values: list) -> list:
        """The rows of the values given with --values (the values themselves, unless a study splits one)."""
        return values

    def parse(self, text: str) -> list:
        """``--values`` (e.g. the study's ``example``): the rows, each value checked against the field's
        declared range."""
        declared, kind = OPTIONS[self.fields[0]], self.value_type()
        try:
            values = [kind(v) for v in text.replace(" ", "").split(",") if v]
        except ValueError:
            raise UserError(
                f"--values {text!r}: give {'numbers' if kind is float else 'integers'} separated by commas"
            ) from None
        if not values:
            raise UserError(f"--values {text!r} names no value")
        for v in values:
            refusal = declared.refusal(v)
            if refusal:
                raise UserError(f"--values: {v:g} is not a possible {declared.flag}, which {refusal}")
        return self.rows(list(dict.fromkeys(values)))  # in the order given, without repeats

    # ---------------------------------------------------------------- the command line's checks
    def varied_by_itself(self) -> tuple:
        """The fields whose flags the command refuses: the study sets them itself, row by row."""
        return self.fields

    def check_flags(self, given: dict) -> None:
        """UserError (one line) where a flag ``given`` sets what the study varies itself."""
        varied = [name for name in self.varied_by_itself() if name in given]
        if varied:
            raise UserError(
                f"moco-ref ablate {self.name} varies {OPTIONS[varied[0]].flag.split('/')[0]} itself; give the "
                f"settings with --values (e.g. --values {self.example})"
            )

    def values_from_flags(self, given: dict) -> str | None:
        """The --values a flag given implies when --values is not given (None: the default rows)."""
        return None

    # ---------------------------------------------------------------- the report
    def shape(self, ours: dict, outcomes: list[Outcome], use_linear: bool, metric: str) -> str:
        """The shape line (see :func:`shape_line`) from ``ours`` ({value: score}) and the rows."""
        raise NotImplementedError

    def paper(self) -> dict | None:
        """The paper's figures for the study's table, with their source (None: the paper gives no number)."""
        return None

    def paper_cell(self, value) -> str:
        """The paper's number for a row ("fails", or "—" where the paper gives none for that setting)."""
        return "—"

    def extra_columns(self) -> list[str]:
        """The headers of the columns this study's table adds after the common ones."""
        return []

    def extra_cells(self, row: Outcome) -> list[str]:
        return []

    def notes(self, rows: list[Outcome], paper: dict | None) -> list[str]:
        """The lines after the table's common note (the paper's source where it gives figures)."""
        return ["", f"Paper: {paper['source']}."] if paper else []


class MomentumStudy(Study):
    def default_values(self, base: TrainConfig, train_size: int) -> list:
        return [0.0, 0.9, 0.99, 0.999]

    def value_type(self) -> type:
        return float

    def run_name(self, value) -> str:
        return f"m-{value:g}"

    def setting(self, value) -> str:
        return f"m = {value:g}"

    def shape(self, ours: dict, outcomes: list[Outcome], use_linear: bool, metric: str) -> str:
        paper: dict = {}
        for m in ours:
            try:
                top1 = _paper_top1(float(m))
            except KeyError:
                continue
            paper[m] = -math.inf if top1 is None else top1
        ours = {m: s for m, s in ours.items() if m in paper}
        if len(ours) < 2:
            return "shape: fewer than two of the paper's m values were run; nothing to compare"
        best_here, best_paper = _extreme(ours, max), max(paper, key=lambda m: paper[m])
        low_here, low_paper = _extreme(ours, min), min(paper, key=lambda m: paper[m])
        here = {
            name: " and ".join(f"{v:g}" for v in values) for name, values in (("best", best_here), ("low", low_here))
        }
        best = (
            f"best at m = {best_paper:g} in both"
            if best_here == [best_paper]
            else f"best at m = {here['best']} here, at {best_paper:g} in the paper"
        )
        fails = " (where the paper's run fails)" if low_paper == 0 else ""
        low = (
            f"m = {low_paper:g} lowest in both{fails}"
            if low_here == [low_paper]
            else f"lowest at m = {here['low']} here, at {low_paper:g} in the paper{fails}"
        )
        order = (
            "the same order as the paper"
            if _order(ours) == _order(paper)
            else f"order here {_order(ours)}, in the paper {_order(paper)}"
        )
        return f"shape ({metric} here, ImageNet linear top-1 in the paper): {best}; {low}; {order}"

    def paper(self) -> dict | None:
        return {"source": PAPER_MOMENTUM_SOURCE, "linear_top1": {f"{m:g}": top1 for m, top1 in PAPER_MOMENTUM.items()}}

    def paper_cell(self, value) -> str:
        try:
            top1 = _paper_top1(value)
        except KeyError:
            return "—"
        return "fails" if top1 is None else f"{top1:.1f}"

    def notes(self, rows: list[Outcome], paper: dict | None) -> list[str]:
        if not paper:
            return []
        rest = [
            f"m = {m:g}: {'fails' if top1 is None else f'{top1:.1f}'}"
            for m, top1 in PAPER_MOMENTUM.items()
            if not any(math.isclose(m, float(r.value), abs_tol=1e-12) for r in rows)
        ]
        also = f" Also in the paper: {'; '.join(rest)}." if rest else ""
        return ["", f"Paper: {PAPER_MOMENTUM_SOURCE} (%).{also}"]


class QueueStudy(Study):
    def default_values(self, base: TrainConfig, train_size: int) -> list:
        powers = [16 * 4**i for i in range(12) if 16 * 4**i <= train_size] or [16]
        return powers[-4:]

    def run_name(self, value) -> str:
        return f"K-{value}"

    def setting(self, value) -> str:
        return f"K = {value}"

    def shape(self, ours: dict, outcomes: list[Outcome], use_linear: bool, metric: str) -> str:
        return _queue_shape(ours, {o.value: o.false_negatives for o in outcomes}, metric)

    def paper(self) -> dict | None:
        return {"source": PAPER_QUEUE_SOURCE, "linear_top1": {str(k): top1 for k, top1 in PAPER_QUEUE.items()}}

    def paper_cell(self, value) -> str:
        return f"{PAPER_QUEUE[value]:.1f}" if value in PAPER_QUEUE else "—"

    def extra_columns(self) -> list[str]:
        return ["false negatives (%)"]

    def extra_cells(self, row: Outcome) -> list[str]:
        return [_number(row.false_negatives)]

    def notes(self, rows: list[Outcome], paper: dict | None) -> list[str]:
        return [
            "",
            "The loss is not comparable across K: its chance level log(K+1) grows with K. False negatives: "
            "the share of the queue's keys whose image has the probe query's class, at the last measurement "
            "(with C balanced classes about 1/C).",
            *super().notes(rows, paper),
        ]


class ShuffleBNStudy(Study):
    """A row's value is a text naming the BatchNorm groups and whether the keys are shuffled across them: "8"
    (8 groups, shuffled), "8-unshuffled", "1" (plain BN)."""

    def default_values(self, base: TrainConfig, train_size: int) -> list:
        groups = base.bn_splits if base.bn_splits > 2 else 8  # the paper's 8 GPUs
        return self.rows([groups if base.batch_size % groups == 0 else 2, 1])

    def rows(self, values: list) -> list:
        """Each S > 1 as two rows, keys shuffled and not; S = 1 (plain BN, where shuffling changes nothing) as one."""
        return [arm for S in values for arm in ((f"{S}", f"{S}{UNSHUFFLED}") if S > 1 else ("1",))]

    def changes(self, value) -> dict:
        groups, shuffled = _groups(value)
        return {"bn_splits": groups, "shuffle_bn": shuffled}

    def run_name(self, value) -> str:
        groups, shuffled = _groups(value)
        return f"bn-{groups}" if groups == 1 else f"bn-{groups}-{'shuffled' if shuffled else 'unshuffled'}"

    def setting(self, value) -> str:
        groups, shuffled = _groups(value)
        if groups == 1:
            return "1 group (plain BN)"
        return f"{groups} groups, keys {'shuffled' if shuffled else 'not shuffled'}"

    def varied_by_itself(self) -> tuple:
        return ("shuffle_bn",)  # --bn-splits S is allowed: it names the S of the rows

    def values_from_flags(self, given: dict) -> str | None:
        return f"{given['bn_splits']},1" if "bn_splits" in given else None  # S = --bn-splits groups, and plain BN

    def shape(self, ours: dict, outcomes: list[Outcome], use_linear: bool, metric: str) -> str:
        return _shuffle_shape(outcomes, use_linear, metric)


def _groups(value) -> tuple:
    """(BatchNorm groups, keys shuffled) of a shuffle-bn row ("8", "8-unshuffled", "1")."""
    text = str(value)
    return int(text.removesuffix(UNSHUFFLED)), not text.endswith(UNSHUFFLED)


STUDIES: dict[str, Study] = {
    study.name: study
    for study in (
        MomentumStudy(
            "momentum",
            ("m",),
            "m",
            "how consistent must the negatives be? (the key encoder's momentum m)",
            "0,0.9,0.99",
        ),
        QueueStudy("queue", ("K",), "K", "how many negatives? (the queue size K)", "64,256"),
        ShuffleBNStudy(
            "shuffle-bn",
            ("bn_splits", "shuffle_bn"),
            "BatchNorm groups",
            "can BatchNorm leak the positive? (S BatchNorm groups with the keys shuffled across them, the "
            "same groups with every key in its query's group, and one group)",
            "8,1",
        ),
    )
}


@dataclass
class Outcome:
    """One run of an ablation, as read back from its run directory (accuracies in %)."""

    value: float | str
    setting: str
    run_dir: str
    status: str  # "finished" or "failed"
    knn_top1: float | None = None
    knn_top1_untrained: float | None = None
    knn_curve: dict = field(default_factory=lambda: {"epochs": [], "top1": []})
    linear_top1: float | None = None
    loss: float | None = None
    acc1: float | None = None
    train_seconds: float = 0.0
    epochs: int = 0
    global_step: int = 0
    error: str | None = None
    false_negatives: float | None = None  # the last measurement's share of same-class keys in the queue (%)


# ------------------------------------------------------------------ the runs
def base_config(given: dict, preset_values: dict) -> TrainConfig:
    """`moco-ref train`'s defaults, then the ablation's, the preset's and the flags given."""
    return TrainConfig.from_dict({**TrainConfig().to_dict(), **ABLATION_DEFAULTS, **preset_values, **given})


def _check_same_recipe(stored: TrainConfig, wanted: TrainConfig, run_dir: Path) -> None:
    changed = changed_settings(stored, wanted)
    if changed:
        name = changed[0]
        raise UserError(
            f"{run_dir} holds a run with {OPTIONS[name].flag} {getattr(stored, name)}, this ablation "
            f"asks for {getattr(wanted, name)}; give the flags of that ablation again, or another --out"
        )


def train_run(config: TrainConfig, run_dir: Path, log, stop=None) -> str:
    """Brings ``run_dir`` to the end of ``config``'s training; returns "new", "resumed" or "finished".

    A finished run is left as it is; an unfinished one continues from its checkpoint (only the
    settings ``moco-ref train --resume`` may change can differ from the stored recipe).  ``stop``:
    as ``Trainer.run``'s (a signal ends the run after a step, with a checkpoint of that step).
    """
    directory = RunDirectory(run_dir)
    if not directory.last_checkpoint.exists():
        Trainer(config, run_dir, log=log).run(stop=stop)
        return "new"
    meta = read_meta(run_dir)
    _check_same_recipe(TrainConfig.from_dict(meta.get("config", {})), config, run_dir)
    if meta["epoch"] > config.epochs:
        raise UserError(
            f"{run_dir} holds {meta['epoch']} epochs, more than --epochs {config.epochs}; "
            f"give --epochs {meta['epoch']} or another --out"
        )
    if finished(directory, meta, config):
        return "finished"
    trainer = Trainer(config, run_dir, log=log)
    trainer.restore()  # run() then drops the records logged after this checkpoint
    log(f"resuming {run_dir} at epoch {trainer.epoch + 1}, step {trainer.global_step}")
    trainer.run(stop=stop)
    return "resumed"


def probe_run(run_dir: Path, probe_epochs: int, log) -> dict | None:
    """main_lincls's linear probe of the run's encoder_q (features encoded once); kept in the run directory.

    Read back when it was measured on the same checkpoint step with the same epochs.  None when the
    data has no labels or no held-out split.
    """
    run, directory = load_run(run_dir), RunDirectory(run_dir)
    kept = directory.read_json(PROBE)
    if kept and kept.get("global_step") == run.meta["global_step"] and kept.get("epochs") == probe_epochs:
        return kept
    c = run.config
    try:
        train = load_dataset(c.data, "train", c.image_size, c.seed)
        test = load_dataset(c.data, "test", c.image_size, c.seed)
    except UserError as error:
        log(f"note: no linear probe: {error}")
        return None
    if train.labels is None or test.labels is None:
        log("note: no linear probe: the data has no labels")
        return None
    log(f"linear probe of {run_dir.name}: {probe_epochs} epochs, features encoded once")
    result = linear_probe(
        run.encoder_q,
        train,
        test,
        run.encoder_q.backend,
        epochs=probe_epochs,
        augment=False,
        progress=partial(Progress, delay=SLOW_S),
    )
    result["global_step"] = run.meta["global_step"]
    directory.write_json(PROBE, result)
    return result


def read_outcome(study: Study, value, run_dir: Path, probe: dict | None) -> Outcome:
    """The table row of one run directory."""
    directory = RunDirectory(run_dir)
    outcome = Outcome(value=value, setting=study.setting(value), run_dir=str(run_dir), status="finished")
    failed = directory.read_json(FAILED)
    if failed is not None:
        outcome.status, outcome.error = "failed", failed["error"]
    records = directory.records()
    epochs_done = [r for r in records if r.get("kind") == "epoch"]
    finals = [r for r in records if r.get("kind") == "final"]
    outcome.train_seconds = sum(r.get("seconds", 0.0) for r in epochs_done)
    if epochs_done:
        outcome.loss, outcome.acc1 = epochs_done[-1].get("loss"), epochs_done[-1].get("acc1")
        outcome.global_step = epochs_done[-1].get("global_step", 0)
    if finals:
        outcome.knn_top1 = finals[-1].get("knn_top1")
        outcome.knn_top1_untrained = finals[-1].get("knn_top1_untrained")
        outcome.epochs, outcome.global_step = finals[-1]["epoch"], finals[-1]["global_step"]
    if records:
        series = curves(records)
        epochs, top1 = series["knn"]
        outcome.knn_curve = {"epochs": epochs, "top1": top1}
        measured = series["false_negatives"][1]
        outcome.false_negatives = 100.0 * measured[-1] if measured else None
    if probe is not None:
        outcome.linear_top1 = probe["top1"]
    return outcome


def run_ablation(
    study_name: str, base: TrainConfig, out_dir, values=None, probe_epochs: int = PROBE_EPOCHS, log=None, stop=None
) -> dict:
    """Trains (or resumes, or reads back) every run of the study; returns the report (see ``write_report``).

    ``stop`` (moco_ref.run.stopping.StopSignals): once it has received a signal, the run in progress ends
    after its current step with a checkpoint, and StoppedBySignal is raised; a signal received while a
    run is probed stops before the next run starts.
    """
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    study = STUDIES[study_name]
    out_dir = check_out_folder(out_dir)
    started = time.perf_counter()
    train_set = load_dataset(base.data, "train", base.image_size, base.seed)
    if values is None:
        values = study.default_values(base, len(train_set))
    planned = [
        (value, TrainConfig.from_dict({**base.to_dict(), **study.changes(value)}), out_dir / study.run_name(value))
        for value in values
    ]
    for _, config, run_dir in planned:  # what would stop a later run is refused before anything trains
        check_batchable(train_set, config.batch_size, config.bn_splits)
        check_batchnorm_values(config)
        check_run_folder(run_dir)
        if RunDirectory(run_dir).last_checkpoint.exists():
            _check_same_recipe(TrainConfig.from_dict(read_meta(run_dir).get("config", {})), config, run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for number, (value, config, run_dir) in enumerate(planned, start=1):
        if stop is not None and stop.received is not None:
            raise StoppedBySignal(stop.received)
        log(f"ablate {study.name}: run {number}/{len(values)}, {study.setting(value)}, in {run_dir}")
        probe, directory = None, RunDirectory(run_dir)
        if directory.read_json(FAILED) is None:
            try:
                if train_run(config, run_dir, log, stop) == "finished":
                    log(f"{run_dir} is finished: read back")
                probe = probe_run(run_dir, probe_epochs, log) if probe_epochs else None
            except NonFiniteLoss as error:
                log(f"{study.setting(value)} failed: {error}")
                directory.write_json(FAILED, {"error": str(error)})
        else:
            log(f"{run_dir} failed before (its {FAILED} says why); delete the folder to try it again")
        outcomes.append(read_outcome(study, value, run_dir, probe))
    return {
        "study": study.name,
        "varied": list(study.fields),
        "flag": " and ".join(OPTIONS[name].flag.split("/")[0] for name in study.fields),
        "question": study.question,
        "values": list(values),
        "config": base.to_dict(),
        "probe_epochs": probe_epochs,
        "rows": [asdict(o) for o in outcomes],
        "shape": shape_line(study, outcomes, probe_epochs > 0),
        "paper": study.paper(),
        "seconds": time.perf_counter() - started,
        "out": str(out_dir),
    }


# ------------------------------------------------------------------ the shape against the paper
def _score(outcome: Outcome, use_linear: bool) -> float:
    """The accuracy a row is ranked by: its linear probe (or kNN); a failed run ranks lowest."""
    value = outcome.linear_top1 if use_linear else outcome.knn_top1
    return -math.inf if outcome.status == "failed" or value is None else value


def _order(scores: dict) -> str:
    """ "0.99 > 0.999 = 0.9 > 0": the values from the highest score to the lowest, ties joined by "="."""
    ranked = sorted(scores, key=lambda v: -scores[v])
    text = f"{ranked[0]:g}"
    for before, value in zip(ranked, ranked[1:]):
        text += f" {'=' if scores[value] == scores[before] else '>'} {value:g}"
    return text


def _extreme(scores: dict, pick) -> list:
    """The values whose score is the maximum (``pick = max``) or the minimum, ties included."""
    target = pick(scores.values())
    return [v for v in scores if scores[v] == target]


def _paper_top1(m: float):
    """The paper's top-1 for m (None = fails to train), or a KeyError when the paper did not run m."""
    for paper_m, top1 in PAPER_MOMENTUM.items():
        if math.isclose(paper_m, m, abs_tol=1e-12):
            return top1
    raise KeyError(m)


def shape_line(study: Study, outcomes: list[Outcome], probed: bool) -> str:
    """One honest sentence, computed from the numbers, on whether the shape of the results is the paper's."""
    use_linear = probed and all(o.linear_top1 is not None for o in outcomes if o.status == "finished")
    metric = "linear top-1" if use_linear else "kNN top-1"
    ours = {o.value: _score(o, use_linear) for o in outcomes}
    return study.shape(ours, outcomes, use_linear, metric)


def _queue_shape(ours: dict, false_negatives: dict, metric: str) -> str:
    """This run's numbers as this run's, the paper's claim as the paper's, never one for the other."""
    ks = sorted(ours)
    path = " → ".join("failed" if ours[k] == -math.inf else f"{ours[k]:.1f}" for k in ks)
    paper = (
        f"in the paper accuracy rises with K ({', '.join(f'{PAPER_QUEUE[k]:.1f} % at K = {k}' for k in PAPER_QUEUE)}"
        f", ImageNet linear top-1)"
    )
    if len(ks) < 2:
        return f"shape: one K only here ({metric} {path} %); nothing to compare; {paper}"
    rises = all(ours[b] > ours[a] for a, b in zip(ks, ks[1:]))
    best = " and ".join(map(str, _extreme(ours, max)))
    here = "rises with K at every step, as in the paper" if rises else f"does not rise with K (best at K = {best})"
    shares = [false_negatives.get(k) for k in ks]
    known = (
        ", false negatives " + " → ".join("—" if f is None else f"{f:.0f}" for f in shares) + " % of the queue"
        if any(f is not None for f in shares)
        else ""
    )
    return f"shape: this run's {metric} {here} (K {ks[0]} → {ks[-1]}: {path} %{known}); {paper}"


def _shuffle_shape(outcomes: list, use_linear: bool, metric: str) -> str:
    """For every S: the unshuffled row against the shuffled one, on the paper's two signs of the cheat."""
    finished = {o.value: o for o in outcomes if o.status == "finished"}
    pairs = [
        (finished[v], finished[f"{_groups(v)[0]}{UNSHUFFLED}"])
        for v in finished
        if _groups(v)[1] and _groups(v)[0] > 1 and f"{_groups(v)[0]}{UNSHUFFLED}" in finished
    ]
    if not pairs:
        return "shape: the comparison needs a finished run with S > 1 groups, keys shuffled, and one without"
    parts = []
    for shuffled, unshuffled in pairs:
        higher_pretext = (unshuffled.acc1 or 0) > (shuffled.acc1 or 0)
        worse = _score(unshuffled, use_linear) < _score(shuffled, use_linear)
        seen = {
            (True, True): "both seen here",
            (False, False): "neither seen here",
            (True, False): "only the higher pretext accuracy seen here",
            (False, True): "only the worse representation seen here",
        }[(higher_pretext, worse)]
        parts.append(
            f"{_groups(shuffled.value)[0]} groups without the shuffle against with it: instance accuracy "
            f"{unshuffled.acc1:.1f} % vs {shuffled.acc1:.1f} %, {metric} {_score(unshuffled, use_linear):.1f} % "
            f"vs {_score(shuffled, use_linear):.1f} %; the paper's sign of the cheat (a higher pretext "
            f"accuracy and a worse representation without shuffle BN): {seen}"
        )
    return "shape: " + "; ".join(parts)


# ------------------------------------------------------------------ the table and the picture
def _number(value, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _recipe(config: dict, study: Study) -> str:
    """The settings every run shares, in words (the varied one left out)."""
    c = TrainConfig.from_dict(config)
    parts = {
        "arch": f"{c.arch} width {c.width}",
        "data": f"data {c.data}",
        "epochs": f"{c.epochs} epochs",
        "max_steps": f"at most {c.max_steps} steps" if c.max_steps else "",
        "batch_size": f"batch {c.batch_size}",
        "lr": f"lr {c.lr:g}{' cosine' if c.cos else ''}",
        "K": f"K {c.K}",
        "m": f"m {c.m:g}",
        "T": f"T {c.T:g}",
        "bn_splits": f"{c.bn_splits} BN groups",
        "aug": f"aug {c.aug}",
        "seed": f"seed {c.seed}",
        "backend": f"backend {c.backend}",
    }
    return ", ".join(text for name, text in parts.items() if text and name not in study.fields)


def markdown(report: dict) -> str:
    """The report as Markdown: the recipe, the table (this run's numbers; the paper's where it gives them, in
    their own column), notes, the shape."""
    study = STUDIES[report["study"]]
    rows = [Outcome(**row) for row in report["rows"]]
    paper = report["paper"]
    header = [study.column, "kNN top-1 (%)", "linear top-1 (%)", "loss", "instance acc. (%)", "train time (s)"]
    header += study.extra_columns()
    if paper:
        header.append("paper, ImageNet (%)")
    lines = [
        f"# moco-ref ablate {study.name}",
        "",
        f"{study.question[0].upper()}{study.question[1:]}",
        "",
        f"Every run: {_recipe(report['config'], study)}; only {report['flag']} differ(s).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        failed = row.status == "failed"
        cells = [
            row.setting,
            "failed" if failed else _number(row.knn_top1),
            "failed" if failed else _number(row.linear_top1),
            _number(row.loss, 3),
            _number(row.acc1),
            f"{row.train_seconds:.0f}",
        ]
        cells += study.extra_cells(row)
        if paper:
            cells.append(study.paper_cell(row.value))
        lines.append("| " + " | ".join(cells) + " |")
    untrained = next((r.knn_top1_untrained for r in rows if r.knn_top1_untrained is not None), None)
    lines += [
        "",
        f"kNN top-1: k = {TrainConfig.from_dict(report['config']).knn_k} on the held-out split after the "
        f"last epoch" + (f" (the untrained encoder: {untrained:.1f} %)" if untrained is not None else "") + ". "
        f"Linear top-1: main_lincls's probe (SGD lr 30, momentum 0.9, {report['probe_epochs']} epochs, lr ×0.1 "
        f"at 60 % and 80 %), training features encoded once (--no-augment), the final classifier. Loss and "
        f"instance accuracy: the last epoch's mean InfoNCE loss and (K+1)-way accuracy. Train time: the "
        f"epochs' wall time, without the kNN monitor and the probe.",
    ]
    lines += study.notes(rows, paper)
    lines += ["", report["shape"] + "."]
    return "\n".join(lines) + "\n"


def check_out_folder(out_dir) -> Path:
    """``out_dir`` once an ablation may write there: a folder to be made, an empty one, or one an ablation has
    written (its report files, its runs' folders).  Anything else in it is the user's: refused in one line
    naming it, nothing touched.  PathRefused where the OS refuses the path."""
    out_dir = check_output_folder(out_dir, "--out")
    if not out_dir.is_dir():
        return out_dir
    with refused(out_dir, "--out"):
        foreign = sorted(name for name in os.listdir(out_dir) if not _written_by_ablation(out_dir / name))
    if foreign:
        others = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise RunDirectoryError(
            f"{out_dir} holds files that no ablation wrote ({foreign[0]}{others}); an "
            f"ablation writes only into a new folder, an empty one or its own: give a new or "
            f"empty --out"
        )
    return out_dir


def _written_by_ablation(path: Path) -> bool:
    if path.name in REPORT_FILES:
        return True
    return path.is_dir() and (is_run_folder(path) or not any(path.iterdir()))


def write_report(report: dict, out_dir, picture: bool = True) -> list[Path]:
    """Writes DIR/ablation.md and DIR/ablation.json, and with ``picture`` the kNN curves DIR/ablation.png (needs
    matplotlib); returns their paths."""
    out_dir = Path(out_dir)
    md, js = out_dir / REPORT_MD, out_dir / REPORT_JSON
    md.write_text(markdown(report))
    js.write_text(json.dumps(report, indent=2) + "\n")
    return [md, js, draw_curves(report, picture_of(out_dir))] if picture else [md, js]


def picture_of(out_dir) -> Path:
    """The kNN curves' picture of the ablation in ``out_dir``."""
    return Path(out_dir) / REPORT_PNG


def draw_curves(report: dict, out) -> Path:
    """The kNN top-1 of every run against epochs completed, one line a setting, to the PNG ``out``."""

    Figure, FigureCanvasAgg, MaxNLocator = load_matplotlib()
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    for row in report["rows"]:
        epochs, top1 = row["knn_curve"]["epochs"], row["knn_curve"]["top1"]
        if not epochs:
            continue
        end = "failed" if row["status"] == "failed" else f"{top1[-1]:.1f} %"
        ax.plot(epochs, top1, marker="o", markersize=4, linewidth=1.5, label=f"{row['setting']}: {end}")
    ax.set_title(f"moco-ref ablate {report['study']}: kNN top-1 on the held-out split")
    ax.set_xlabel("epochs completed")
    ax.set_ylabel("kNN top-1 (%)")
    measured = sorted({e for row in report["rows"] for e in row["knn_curve"]["epochs"]})
    if 0 < len(measured) <= 25:
        ax.set_xticks(measured)  # the epochs the monitor measured
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend(loc="best", fontsize=9)
    figure.savefig(out, dpi=100)
    return Path(out)
