"""The temperature of the softmax: the tutorial's figure, as numbers (and a bar chart if matplotlib is there).

InfoNCE divides every similarity by a temperature τ before the softmax:

    p_i = exp(z_i / τ) / Σ_j exp(z_j / τ)

A small τ stretches the differences between the logits, so the largest one takes almost all the
probability; a large τ shrinks them, and the distribution flattens toward uniform.  The ratio of
the largest to the smallest probability is exactly exp((z_max − z_min) / τ).  The tutorial
this project started from (in Chinese, not part of the repository) shows it with three logits X = 1,
Y = 2, Z = 3 at τ = 1 (the plain softmax), τ = 0.5 (sharper) and τ = 2 (flatter).  MoCo v1 uses
τ = 0.07, MoCo v2 τ = 0.2, the CIFAR-10 demo τ = 0.1.

    python examples/temperature.py                     # table, and temperature.png if matplotlib is installed
    python examples/temperature.py --tau 0.07 --tau 1 --out t.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from moco_ref.loss import softmax

LOGITS = (1.0, 2.0, 3.0)  # the tutorial's X, Y, Z
TEMPERATURES = (0.5, 1.0, 2.0)  # sharper, plain, flatter
NAMES = ("X", "Y", "Z")


def temperature_table(logits=LOGITS, temperatures=TEMPERATURES) -> np.ndarray:
    """softmax(logits / τ) for every τ: (len(temperatures), len(logits)), each row sums to 1."""
    z = np.asarray(logits, dtype=np.float64)
    return np.stack([softmax(z, T=tau) for tau in temperatures])


def entropy_bits(p: np.ndarray) -> np.ndarray:
    """Shannon entropy of each row in bits: 0 for one-hot, log2(n) for uniform."""
    logs = np.log2(np.where(p > 0, p, 1.0))  # 0 · log 0 = 0
    return -(p * logs).sum(axis=-1)


def draw(probabilities: np.ndarray, logits, temperatures, path: Path) -> bool:
    """Grouped bar chart to path; False (and nothing written) when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [NAMES[i] if len(logits) <= len(NAMES) else str(i) for i in range(len(logits))]
    fig, axes = plt.subplots(1, len(temperatures), figsize=(3.2 * len(temperatures), 3), sharey=True)
    for ax, tau, row in zip(np.atleast_1d(axes), temperatures, probabilities):
        ax.bar([f"{n}={z:g}" for n, z in zip(names, logits)], row, color="tab:blue")
        ax.set_title(f"τ = {tau:g}")
        ax.set_ylim(0, 1)
        for i, p in enumerate(row):
            ax.text(i, p + 0.02, f"{p:.2f}", ha="center")
    np.atleast_1d(axes)[0].set_ylabel("softmax probability")
    fig.suptitle("softmax(z / τ): a small τ sharpens, a large τ flattens")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(logits=LOGITS, temperatures=TEMPERATURES, out="temperature.png", plot=True) -> np.ndarray:
    """Prints the table (and draws the chart to ``out`` when plot is True); returns the probabilities."""
    probabilities = temperature_table(logits, temperatures)
    names = [NAMES[i] if len(logits) <= len(NAMES) else f"z{i}" for i in range(len(logits))]
    header = "    τ  " + "".join(f"{n + '=' + format(z, 'g'):<8}" for n, z in zip(names, logits)) + "  max/min  entropy"
    print("softmax of the logits", ", ".join(f"{n}={z:g}" for n, z in zip(names, logits)), "at each temperature τ")
    print(header)
    for tau, row in zip(temperatures, probabilities):
        cells = "".join(f"{p:<8.4f}" for p in row)
        print(f"{tau:5g}  {cells}  {row.max() / row.min():7.4g}  {entropy_bits(row):.3f} bits")
    print(f"(uniform over {len(logits)} would be {1 / len(logits):.4f} each, entropy {np.log2(len(logits)):.3f} bits)")
    if plot:
        if draw(probabilities, logits, temperatures, Path(out)):
            print(f"wrote {out}")
        else:
            print("matplotlib is not installed, so no chart was drawn (pip install 'moco-ref[plot]')")
    return probabilities


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logits", type=float, nargs="+", default=list(LOGITS), help="the logits z")
    parser.add_argument("--tau", type=float, action="append", help="a temperature (repeat the flag)")
    parser.add_argument("--out", default="temperature.png", help="where to draw the chart")
    parser.add_argument("--no-plot", action="store_true", help="print the table only")
    args = parser.parse_args()
    main(tuple(args.logits), tuple(args.tau or TEMPERATURES), args.out, plot=not args.no_plot)
