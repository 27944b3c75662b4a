"""``moco-ref bench learn``'s summary, table and picture: what the report of moco_ref/bench/learn.py says.

Over the seeds, per metric (kNN and linear top-1): each model's mean and standard deviation and the paired
difference ours − PyTorch with its Student-t interval (moco_ref/bench/intervals.py).  With PyTorch′
(--control), also PyTorch − PyTorch′, the difference rounding alone makes, with its interval, and the two
spreads compared: where ours − PyTorch is no wider and no further from 0 than PyTorch − PyTorch′, the
difference between moco-ref and PyTorch is chaos, not a bias.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from moco_ref.bench.intervals import (
    exchangeable_test,
    mean_and_std,
    paired_interval,
    variance_ratio_test,
    welch_test,
)

IMPLEMENTATIONS = ("ours", "pytorch")
CONTROL = "control"  # PyTorch′: the twin, one ulp off at the start (--control)
NAMES = {"ours": "ours", "pytorch": "PyTorch", CONTROL: "PyTorch′"}
METRICS = {"knn_top1": "kNN top-1", "linear_top1": "linear top-1"}


# ------------------------------------------------------------------ the summary
def summarise(runs: list) -> dict:
    """The summary of the report: per metric, each implementation's mean and std, and the paired difference;
    where the runs have PyTorch′, also the control's difference and the comparison of the two spreads."""
    control = all(CONTROL in run for run in runs)
    summary = {}
    for metric in METRICS:
        values = {name: [run[name][metric] for run in runs] for name in IMPLEMENTATIONS + (CONTROL,) * control}
        summary[metric] = {
            **{name: mean_and_std(v) for name, v in values.items()},
            "difference": paired_interval(values["ours"], values["pytorch"]),
        }
        if control:
            chaos = paired_interval(values["pytorch"], values[CONTROL])
            summary[metric]["control_difference"] = chaos
            summary[metric]["spreads"] = compare_spreads(summary[metric]["difference"], chaos, values)
    return summary


def compare_spreads(difference: dict, chaos: dict, values: dict) -> dict:
    """Is ours − PyTorch spread (or shifted) more than PyTorch − PyTorch′?  The two standard deviations, the
    F-test of their variances, Welch's t of their means (both treat the two samples as independent, which
    they are not quite: PyTorch's figure is in both) and the within-seed permutation test that does not."""
    a, b = difference["differences"], chaos["differences"]
    return {
        "ours_vs_pytorch_std": difference["std"],
        "pytorch_vs_control_std": chaos["std"],
        "f_test": variance_ratio_test(a, b),
        "welch": welch_test(a, b),
        "permutation": exchangeable_test(values["ours"], values["pytorch"], values[CONTROL]),
    }


# ------------------------------------------------------------------ the table and the picture
def _spread(stats: dict, sign: str = "") -> str:
    """mean ± std of one column ("+" as ``sign``: the mean's sign always shown)."""
    return f"{stats['mean']:{sign}.2f}" + (f" ± {stats['std']:.2f}" if stats["std"] is not None else "")


def interval_line(metric: str, difference: dict, pair: str = "ours − PyTorch") -> str:
    """One sentence on the paired difference ``pair`` of one metric and its interval."""
    name, n = METRICS[metric], difference["n"]
    if difference["low"] is None:
        return f"{name}, {pair}: {difference['mean']:+.2f} points (one seed: no interval)"
    verdict = "contains 0" if difference["contains_zero"] else "does not contain 0"
    degrees = f"{n - 1} degree{'s' if n > 2 else ''} of freedom"
    return (
        f"{name}, {pair}: {difference['mean']:+.2f} points, {100 * difference['level']:.0f} % interval "
        f"[{difference['low']:+.2f}, {difference['high']:+.2f}] (Student's t, {degrees}, "
        f"t = {difference['t']:.3f}; width {difference['high'] - difference['low']:.2f}): {verdict}"
    )


def _interval(difference: dict) -> str:
    """ "+0.27 [-1.20, +1.74]": the mean difference and its interval (the mean alone for one seed)."""
    if difference["low"] is None:
        return f"{difference['mean']:+.2f} (one seed)"
    return f"{difference['mean']:+.2f} [{difference['low']:+.2f}, {difference['high']:+.2f}]"


def _p(value) -> str:
    return "—" if value is None else f"{value:.3g}"


def spread_line(metric: str, spreads: dict) -> str:
    """One sentence comparing the spreads of ours − PyTorch and PyTorch − PyTorch′ (compare_spreads)."""
    a, b = spreads["ours_vs_pytorch_std"], spreads["pytorch_vs_control_std"]
    if a is None or b is None:
        stds = "one seed: no spread"
    else:
        stds = f"std of ours − PyTorch {a:.2f}, of PyTorch − PyTorch′ {b:.2f}"
    f, welch, permutation = spreads["f_test"], spreads["welch"], spreads["permutation"]
    return (
        f"{METRICS[metric]}: {stds}; F-test of the variances F = {_p(f['f'])}, p = {_p(f['p'])}; "
        f"Welch's t of the means t = {_p(welch['t'])}, p = {_p(welch['p'])}; "
        f"ours farther from PyTorch than PyTorch′ (within-seed permutations, "
        f"{permutation['relabellings']}): p = {_p(permutation['p'])}"
    )


def table_lines(report: dict) -> list[str]:
    """The per-seed table (markdown), mean ± std, and the interval lines; with PyTorch′ (--control) its
    columns and PyTorch − PyTorch′ beside ours − PyTorch, a table of both intervals and the spreads."""
    summary = report["summary"]
    control = "control_difference" in summary["knn_top1"]
    columns = ["ours", "PyTorch"] + ["PyTorch′"] * control + ["ours − PyTorch"] + ["PyTorch − PyTorch′"] * control
    header = [f"{short} {column}" for short in ("kNN", "linear") for column in columns]
    lines = ["| seed | " + " | ".join(header) + " |", "| ---: " * (len(header) + 1) + "|"]
    for run in report["runs"]:
        cells = []
        for metric in METRICS:
            a, b = run["ours"][metric], run["pytorch"][metric]
            if control:
                c = run[CONTROL][metric]
                cells += [f"{a:.2f}", f"{b:.2f}", f"{c:.2f}", f"{a - b:+.2f}", f"{b - c:+.2f}"]
            else:
                cells += [f"{a:.2f}", f"{b:.2f}", f"{a - b:+.2f}"]
        lines.append(f"| {run['seed']} | " + " | ".join(cells) + " |")
    cells = []
    for metric in METRICS:
        s = summary[metric]
        cells += [_spread(s["ours"]), _spread(s["pytorch"])] + ([_spread(s[CONTROL])] if control else [])
        cells += [_spread(s["difference"], "+")] + ([_spread(s["control_difference"], "+")] if control else [])
    lines.append("| mean ± std | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [interval_line(metric, summary[metric]["difference"]) for metric in METRICS]
    if control:
        lines += [interval_line(m, summary[m]["control_difference"], "PyTorch − PyTorch′") for m in METRICS]
        lines += [
            "",
            "| difference, points (95 % interval) | kNN top-1 | linear top-1 |",
            "| --- | ---: | ---: |",
            "| ours − PyTorch (bias and chaos) | "
            + " | ".join(_interval(summary[m]["difference"]) for m in METRICS)
            + " |",
            "| PyTorch − PyTorch′ (chaos alone) | "
            + " | ".join(_interval(summary[m]["control_difference"]) for m in METRICS)
            + " |",
            "",
        ]
        lines += [spread_line(metric, summary[metric]["spreads"]) for metric in METRICS]
    return lines


LINES = (("ours", "-", "C0", "moco-ref"), ("pytorch", "--", "C1", "PyTorch"), (CONTROL, ":", "C2", "PyTorch′"))


def can_draw() -> bool:
    """Whether matplotlib (the [plot] extra) is installed, for :func:`draw_curves`."""
    return importlib.util.find_spec("matplotlib") is not None


def draw_curves(report: dict, out) -> Path:
    """The kNN top-1 of both implementations against epochs, one panel a seed (moco-ref solid, PyTorch dashed,
    PyTorch′ dotted where there is one)."""
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
        for name, style, colour, label in LINES:
            if name not in run:
                continue
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
