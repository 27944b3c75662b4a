"""Training curves of a run directory as one PNG (``moco-ref plot RUN_DIR``).

Reads the run's metrics (moco_ref/run/directory.py), one JSON object a line, as written by
:mod:`moco_ref.run.trainer` and :mod:`moco_ref.run.monitor`:

    {"kind": "step",  "global_step", "epoch", "loss", "acc1" (%), "lr", "m", "images_per_s"}
    {"kind": "epoch", "epoch" (0-based, the epoch just run), "loss", "acc1", "lr", "knn_top1"?, "complete"}
    {"kind": "knn",   "epoch": 0, "knn_top1", "untrained": true}   # before the first step
    {"kind": "instruments", "epoch" (epochs completed), "global_step", "alignment", "uniformity",
     "feature_std", "logit_pos", "logit_neg", "key_drift" (null at the first), "queue_age", "probe_images"}
    {"kind": "final", ...}                                         # the summary when training stops

and draws four panels: the InfoNCE loss and the (K+1)-way instance accuracy against the global
step (each with its chance level when the configuration gives K: ln(K+1) per loss term and 1/(K+1); a
healthy run's loss falls below ln(K+1) early), the kNN top-1 against
epochs completed (0 = the untrained encoder; an "epoch" record with index e counts as e + 1
epochs), and the learning rate against the step.  When the run has "instruments" records
(moco_ref/evaluation/instruments.py says what each one measures), four more panels below, against
the global step: alignment and uniformity, the feature standard deviation (with 1/√D when the
configuration gives D), the mean positive and negative logits, and the key encoder's drift with the queue's age;
for labelled data two more: the share of the queue's keys in the query's class (its false negatives), and the
mean negative logit of those keys against the others.
Other kinds are ignored.

matplotlib is an optional extra (``pip install 'moco-ref[plot]'``).  The figure is drawn with
the Agg canvas directly (no pyplot, no global backend switch), so it works without a display.
"""

from __future__ import annotations

import math
from pathlib import Path

from moco_ref.errors import UserError
from moco_ref.loss import chance_accuracy, chance_loss
from moco_ref.paths import check_input, check_output_file, refusal
from moco_ref.run.config import current_names
from moco_ref.run.directory import RunDirectory

PLOT_INSTALL = "pip install 'moco-ref[plot]'"


def read_metrics(run_dir) -> list[dict]:
    """The complete records of a run's metrics (a line cut short is dropped, as every reader does); UserError
    (one line) when there is no run directory or it has logged nothing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"no run directory at {run_dir}")
    try:
        records = RunDirectory(run_dir).records()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read the metrics of {run_dir}: {error}") from None
    if not records:
        raise UserError(
            f"{run_dir} holds no metrics: it is not a moco-ref run directory, or the run has not logged anything yet"
        )
    return records


def _number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def _points(records, kind, x_key, y_key):
    xs, ys = [], []
    for r in records:
        if r.get("kind") == kind and _number(r.get(x_key)) is not None and _number(r.get(y_key)) is not None:
            xs.append(r[x_key])
            ys.append(r[y_key])
    return xs, ys


# The fields of an "instruments" record that are drawn, each against the global step.
INSTRUMENTS = (
    "alignment",
    "uniformity",
    "feature_std",
    "logit_pos",
    "logit_neg",
    "key_drift",
    "queue_age",
    "false_negatives",
    "logit_same_class",
    "logit_other_class",
)
FALSE_NEGATIVES = ("false_negatives", "logit_same_class", "logit_other_class")


def curves(records: list[dict]) -> dict:
    """The series to draw: {name: (xs, ys)} for loss, acc1, lr (against the step), knn (against epochs)
    and each of INSTRUMENTS (against the step; empty when the run has no "instruments" records)."""
    series = {name: _points(records, "step", "global_step", name) for name in ("loss", "acc1", "lr")}
    for name in ("loss", "acc1", "lr"):  # no step records (an old or tiny run): fall back to the epochs
        if not series[name][0]:
            series[name] = _points(records, "epoch", "global_step", name)
    knn = {}
    for r in records:
        top1, epoch = _number(r.get("knn_top1")), _number(r.get("epoch"))
        if top1 is None or epoch is None:
            continue
        if r.get("kind") == "knn":
            knn[epoch] = top1  # the untrained encoder, epoch 0
        elif r.get("kind") == "epoch":
            knn[epoch + 1] = top1  # measured after epoch index e: e + 1 epochs done
        elif r.get("kind") == "final":
            knn.setdefault(epoch, top1)  # "epoch" = epochs completed when training stopped
    series["knn"] = (sorted(knn), [knn[e] for e in sorted(knn)])
    for name in INSTRUMENTS:
        series[name] = _points(records, "instruments", "global_step", name)
    return series


def load_matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise UserError(f"plotting needs matplotlib, an optional extra: {PLOT_INSTALL}") from None
    return Figure, FigureCanvasAgg, MaxNLocator


def _config_int(run_dir: Path, name: str):
    """An integer setting of the run's configuration ("K", "dim"), or None."""
    try:
        return int(current_names(RunDirectory(run_dir).read_config() or {})[name])
    except (ValueError, KeyError, TypeError, OverflowError):  # OverflowError: int(inf)
        return None


def _chance(run_dir: Path) -> tuple[float, float] | None:
    """(the loss, the instance accuracy in %) at chance of the run's configuration: ln(K+1) a loss term (two
    with --symmetric) and 1/(K+1); None where the configuration does not give K."""
    K = _config_int(run_dir, "K")
    if not K:
        return None
    symmetric = (RunDirectory(run_dir).read_config() or {}).get("symmetric") is True
    return chance_loss(K, 2 if symmetric else 1), 100.0 * chance_accuracy(K)


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_instruments(axes, series: dict, dim, MaxNLocator) -> None:
    """The four panels of the instruments, on ``axes`` (2, 2), each against the global step."""
    panels: tuple = (
        (
            axes[0, 0],
            "alignment and uniformity (lower is better)",
            "alignment / uniformity",
            (("alignment", "alignment E‖f(x)−f(x⁺)‖²"), ("uniformity", "uniformity log E e^(−2‖f(x)−f(y)‖²)")),
        ),
        (
            axes[0, 1],
            "feature std over the probe set (collapse → 0)",
            "mean std per dimension",
            (("feature_std", "feature std"),),
        ),
        (
            axes[1, 0],
            "mean logits of the probe pairs",
            "logit (·/T)",
            (("logit_pos", "positive q·k₊/T"), ("logit_neg", "negative q·queue/T")),
        ),
        (
            axes[1, 1],
            "key encoder drift and queue age",
            "mean cos(keys now, keys before)",
            (("key_drift", "drift: cosine to the previous probe keys"),),
        ),
    )
    if len(axes) > 2:  # the queue's false negatives, for labelled data
        panels += (
            (
                axes[2, 0],
                "false negatives: the queue's keys of the query's class",
                "share of the queue",
                (("false_negatives", "share of same-class keys"),),
            ),
            (
                axes[2, 1],
                "negative logits by class",
                "logit (·/T)",
                (("logit_same_class", "keys of the query's class"), ("logit_other_class", "keys of other classes")),
            ),
        )
    for ax, title, ylabel, lines in panels:
        ax.set_title(title)
        ax.set_xlabel("global step")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        drawn = False
        for name, label in lines:
            xs, ys = series[name]
            if xs:
                ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.5, label=label)
                drawn = True
        if ax is axes[0, 1] and dim and drawn:
            ax.axhline(
                1.0 / math.sqrt(dim),
                color="0.5",
                linestyle="--",
                linewidth=1,
                label=f"1/√D = {1.0 / math.sqrt(dim):.3f} (spread on the sphere)",
            )
        if ax is axes[1, 1] and series["queue_age"][0]:
            right = ax.twinx()
            right.plot(*series["queue_age"], color="C1", marker="s", markersize=3, linewidth=1, label="queue age")
            right.set_ylabel("oldest key's age (steps)")
            right.yaxis.set_major_locator(MaxNLocator(integer=True))
            right.set_ylim(bottom=0)
            handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
            ax.legend(handles, [h.get_label() for h in handles], loc="best", fontsize=8)
            drawn = True
        elif drawn:
            ax.legend(loc="best", fontsize=8)
        if not drawn:
            _empty(ax, "not measured")
            continue
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_run(run_dir, out=None, replace: bool = False) -> Path:
    """Draws the panels of RUN_DIR's metrics to ``out`` (default RUN_DIR/curves.png); returns the path.

    A file already at ``out`` is replaced only with ``replace`` (--force); RUN_DIR/curves.png is the run's.

    Four panels, eight when the run has "instruments" records, ten when they hold false negatives.
    """
    run_dir = check_input(run_dir)
    if out:
        out = check_output_file(out, "--out", replace)
    records = read_metrics(run_dir)
    series = curves(records)
    if not any(xs for xs, _ in series.values()):
        raise UserError(f"the metrics of {run_dir} have no step, epoch or kNN measurements to plot")
    out = Path(out) if out else run_dir / "curves.png"
    if out.suffix.lower() != ".png":
        raise UserError(f"--out {out} must end in .png")
    if not out.parent.is_dir():
        raise UserError(f"no folder {out.parent} to write {out.name} into")
    Figure, FigureCanvasAgg, MaxNLocator = load_matplotlib()

    instruments = any(series[name][0] for name in INSTRUMENTS)
    rows = 2 + (2 if instruments else 0) + (1 if any(series[name][0] for name in FALSE_NEGATIVES) else 0)
    figure = Figure(figsize=(11, 3.75 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, 2)
    chance = _chance(run_dir)
    panels = (
        (axes[0, 0], "loss", "InfoNCE loss", "global step", "loss", "no loss logged"),
        (
            axes[0, 1],
            "acc1",
            "instance accuracy (positive ranked first)",
            "global step",
            "accuracy (%)",
            "no accuracy logged",
        ),
        (
            axes[1, 0],
            "knn",
            "kNN top-1 (k = 200) on the test split",
            "epochs completed",
            "top-1 (%)",
            "no kNN measurement (--knn-every 0, or unlabelled data)",
        ),
        (axes[1, 1], "lr", "learning rate", "global step", "lr", "no learning rate logged"),
    )
    for ax, name, title, xlabel, ylabel, empty in panels:
        xs, ys = series[name]
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if not xs:
            ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, color="0.4")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        marker = "o" if name == "knn" or len(xs) <= 30 else None
        ax.plot(xs, ys, marker=marker, markersize=4, linewidth=1.5)
        if name == "knn":
            ax.margins(x=0.05, y=0.15)
            if xs[0] == 0:
                ax.annotate(
                    f"untrained {ys[0]:.1f}%",
                    (xs[0], ys[0]),
                    textcoords="offset points",
                    xytext=(8, 4),
                    fontsize=8,
                    color="0.3",
                )
            if xs[-1] != 0:
                ax.annotate(
                    f"{ys[-1]:.1f}%",
                    (xs[-1], ys[-1]),
                    textcoords="offset points",
                    xytext=(-6, -14),
                    fontsize=8,
                    ha="right",
                )
    for ax, name, level, formula in ((axes[0, 0], "loss", 0, "ln(K+1)"), (axes[0, 1], "acc1", 1, "1/(K+1)")):
        if chance and series[name][0]:
            ax.axhline(
                chance[level],
                color="0.5",
                linestyle="--",
                linewidth=1,
                label=f"chance: {formula} = {chance[level]:.3g}{'%' if level else ''}",
            )
            ax.legend(loc="best", fontsize=8)
    if instruments:
        _draw_instruments(axes[2:], series, _config_int(run_dir, "dim"), MaxNLocator)
    figure.suptitle(f"moco-ref run {run_dir.resolve().name}")
    try:
        figure.savefig(out, dpi=110)
    except OSError as error:
        raise refusal(out, error, "--out") from None
    return out
