"""The exponential moving average (EMA) against the raw signal: what MoCo's momentum m does.

The key encoder of MoCo is an EMA of the query encoder, parameter by parameter:

    θ_k ← m·θ_k + (1 − m)·θ_q          (moco_ref.momentum.momentum_update_)

The tutorial this project started from (in Chinese, not part of the repository) explains it with a
stock price: the daily price jumps about, its EMA follows the trend.  This script feeds a noisy signal,
value by value, through the same ``momentum_update_`` that trains MoCo (one-element dicts
{"theta": array}: θ_q is the raw value, θ_k the average), for m = 0.9 and m = 0.99, and prints what
the average buys and costs:

    noise kept     variance of the average around a constant signal, over the raw noise variance;
                   theory (1 − m)/(1 + m): 0.053 for m = 0.9, 0.005 for m = 0.99
    half-life      steps until the average has covered half of a sudden jump: ln 0.5 / ln m
                   (6.6 and 69 steps)
    lag            how far the average trails a steady ramp, in steps: m/(1 − m) (9 and 99)

MoCo's m = 0.999 keeps 0.05 % of the noise and trails by 999 steps: the keys in the queue, computed
over the last K/N steps, all come from nearly the same encoder.

    python examples/ema.py                 # numbers, and ema.png if matplotlib is installed
    python examples/ema.py --m 0.9 --m 0.99 --m 0.999 --steps 8000 --no-plot
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from moco_ref.momentum import momentum_update_

MOMENTA = (0.9, 0.99)


def ema(signal: np.ndarray, m: float) -> np.ndarray:
    """The EMA of signal along axis 0, computed with momentum_update_: (steps, ...) -> (steps, ...).

    Starts from the first value (as the key encoder starts as a copy of the query encoder), then
    θ_k ← m·θ_k + (1 − m)·x_t for every later value x_t.
    """
    theta_k = {"theta": np.array(signal[0], dtype=np.float64)}
    out = np.empty(signal.shape, dtype=np.float64)
    out[0] = theta_k["theta"]
    for t in range(1, len(signal)):
        momentum_update_(theta_k, {"theta": signal[t]}, m)
        out[t] = theta_k["theta"]
    return out


def noise_kept(m: float, steps: int, replicas: int, noise: float, rng) -> float:
    """Variance of the EMA of pure noise around its mean, over the noise variance (after a burn-in).

    Runs `replicas` independent noise sequences at once (θ is a vector, as a weight tensor is).
    """
    signal = noise * rng.standard_normal((steps, replicas))  # (steps, R)
    average = ema(signal, m)
    settled = average[steps // 2 :]  # past the start-up transient
    return float(settled.var() / noise**2)


def half_life(m: float, steps: int) -> int | None:
    """Steps after a jump from 0 to 1 until the EMA first reaches 0.5 (None if not within steps)."""
    signal = np.concatenate([[0.0], np.ones(steps)])
    reached = np.flatnonzero(ema(signal, m) >= 0.5)
    return int(reached[0]) if reached.size else None


def ramp_lag(m: float, steps: int) -> float:
    """How many steps the EMA trails the ramp x_t = t at the end: (x_T − EMA_T) / slope."""
    signal = np.arange(steps, dtype=np.float64)
    return float(signal[-1] - ema(signal, m)[-1])


def draw(momenta, steps: int, noise: float, seed: int, path: Path) -> bool:
    """A noisy random walk and its EMAs to path; False when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = min(steps, 1000)  # a readable stretch
    rng = np.random.default_rng(seed)
    trend = np.cumsum(0.08 * rng.standard_normal(steps))  # the slow "price"
    raw = trend + noise * rng.standard_normal(steps)  # what is observed each day
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(raw, color="0.75", lw=0.8, label="raw signal")
    ax.plot(trend, color="k", lw=1, ls="--", label="trend (hidden)")
    for m in momenta:
        ax.plot(ema(raw, m), lw=1.6, label=f"EMA, m = {m:g}")
    ax.set_xlabel("step")
    ax.set_title("θ_k ← m·θ_k + (1 − m)·θ_q: a larger m is smoother and lags more")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(
    momenta=MOMENTA, steps: int = 4000, replicas: int = 64, noise: float = 1.0, seed: int = 0, out="ema.png", plot=True
) -> dict:
    """Prints measured against theoretical noise reduction, half-life and lag; returns them per m.

    ``steps`` must be a few times 1/(1 − m) for the largest m, or the lag has not settled.
    """
    rng = np.random.default_rng(seed)
    results = {}
    print(f"EMA by momentum_update_, {steps} steps ({replicas} noise sequences for the variance)")
    print("     m   noise kept (theory)    half-life (theory)    lag on a ramp (theory)")
    for m in momenta:
        row = {
            "noise_kept": noise_kept(m, steps, replicas, noise, rng),
            "noise_kept_theory": (1 - m) / (1 + m),
            "half_life": half_life(m, steps),
            "half_life_theory": math.log(0.5) / math.log(m),
            "lag": ramp_lag(m, steps),
            "lag_theory": m / (1 - m),
        }
        results[m] = row
        half = "-" if row["half_life"] is None else str(row["half_life"])
        print(
            f"{m:6g}   {row['noise_kept']:.4f} ({row['noise_kept_theory']:.4f})"
            f"       {half:>5} ({row['half_life_theory']:6.1f})"
            f"      {row['lag']:8.2f} ({row['lag_theory']:.2f})"
        )
    print("a larger m averages more noise away and follows changes more slowly")
    if plot:
        if draw(momenta, steps, noise, seed, Path(out)):
            print(f"wrote {out}")
        else:
            print("matplotlib is not installed, so no chart was drawn (pip install 'moco-ref[plot]')")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--m", type=float, action="append", help="a momentum in [0, 1) (repeat the flag)")
    parser.add_argument("--steps", type=int, default=4000, help="length of the signals")
    parser.add_argument("--replicas", type=int, default=64, help="noise sequences averaged for the variance")
    parser.add_argument("--noise", type=float, default=1.0, help="standard deviation of the noise")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="ema.png", help="where to draw the chart")
    parser.add_argument("--no-plot", action="store_true", help="print the numbers only")
    args = parser.parse_args()
    main(tuple(args.m or MOMENTA), args.steps, args.replicas, args.noise, args.seed, args.out, not args.no_plot)
