"""Means, standard deviations and the Student-t confidence interval of a paired difference, without SciPy.

For n paired measurements (a_i, b_i) the differences d_i = a_i − b_i have mean d̄ and sample standard deviation
s (n − 1 in the denominator); the two-sided interval at level 1 − α is

    d̄ ± t(1 − α/2; n − 1) · s / √n

with t(p; ν) the p-quantile of Student's t distribution with ν degrees of freedom.  Its CDF comes from the
regularised incomplete beta function I_x(a, b) (Abramowitz & Stegun 26.7.1):

    P(T ≤ t) = 1 − ½·I_{ν/(ν+t²)}(ν/2, ½)   for t ≥ 0,   and P(T ≤ −t) = 1 − P(T ≤ t),

I_x(a, b) by its continued fraction (modified Lentz; Numerical Recipes §6.4), and the quantile by bisection on
that CDF.  Checked against the tables: t(0.975; 4) = 2.7764, t(0.975; 9) = 2.2622.

Two samples of differences (``bench learn --control``: ours − PyTorch and PyTorch − PyTorch′ over seeds) are
compared by their spreads and their means:

    F = s_a² / s_b²,  P(F ≤ f) = I_{ν_a f/(ν_a f + ν_b)}(ν_a/2, ν_b/2)  with ν = n − 1  (the F-test of variances)
    t = (ā − b̄) / √(s_a²/n_a + s_b²/n_b),  ν = (s_a²/n_a + s_b²/n_b)² / Σ (s²/n)²/(n − 1)  (Welch's t)

both two-sided and both for independent samples; and by a permutation test that needs no independence nor
normality (``exchangeable_test``).
"""

from __future__ import annotations

import math

import numpy as np


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b) = B(x; a, b) / B(a, b), for a, b > 0, 0 ≤ x ≤ 1."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must lie in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    # x^a (1 − x)^b / (a·B(a, b)) times the continued fraction, which converges fast for x < (a + 1)/(a + b + 2);
    # beyond that, the symmetry I_x(a, b) = 1 − I_{1−x}(b, a).
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float, iterations: int = 300, eps: float = 1e-15) -> float:
    """The continued fraction of I_x(a, b): 1/(1+ d₁/(1+ d₂/(1+ …))), its terms d_{2m}, d_{2m+1} (NR 6.4.5),
    evaluated by the modified Lentz method."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, iterations + 1):
        for term in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),  # d_{2m}
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):  # d_{2m+1}
            d = 1.0 + term * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + term / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < eps:
            return fraction
    return fraction


def t_cdf(t: float, dof: float) -> float:
    """P(T ≤ t) for Student's t with ``dof`` ≥ 1 degrees of freedom (a real number: Welch's are)."""
    if dof < 1:
        raise ValueError(f"Student's t needs at least 1 degree of freedom, got {dof}")
    tail = 0.5 * incomplete_beta(0.5 * dof, 0.5, dof / (dof + t * t))  # P(T > |t|)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, dof: int) -> float:
    """The t with P(T ≤ t) = p, Student's t with ``dof`` degrees of freedom, 0 < p < 1 (bisection on t_cdf)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie strictly between 0 and 1, got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, dof)
    low, high = 0.0, 1.0
    while t_cdf(high, dof) < p:  # bracket the quantile: [0, 2^j]
        low, high = high, 2.0 * high
    for _ in range(200):
        middle = 0.5 * (low + high)
        if t_cdf(middle, dof) < p:
            low = middle
        else:
            high = middle
        if high - low <= 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


def mean_and_std(values) -> dict:
    """{"mean", "std" (sample, n − 1; None for one value), "n"} of a list of numbers."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "n": n}


def paired_interval(ours, theirs, level: float = 0.95) -> dict:
    """The mean difference ours − theirs over paired measurements and its Student-t interval.

    Returns:
        {"mean", "std" of the differences, "n", "level", "t" the quantile used, "low", "high", "contains_zero",
        "differences"}; with one pair, std, t, low and high are None (no interval from one measurement).
    """
    if len(ours) != len(theirs):
        raise ValueError(f"paired measurements need equal counts, got {len(ours)} and {len(theirs)}")
    differences = [float(a) - float(b) for a, b in zip(ours, theirs)]
    spread = mean_and_std(differences)
    n, mean, std = spread["n"], spread["mean"], spread["std"]
    result = {
        **spread,
        "level": level,
        "t": None,
        "low": None,
        "high": None,
        "contains_zero": None,
        "differences": differences,
    }
    if n > 1:
        t = t_quantile(0.5 + 0.5 * level, n - 1)
        half = t * std / math.sqrt(n)
        result.update(t=t, low=mean - half, high=mean + half, contains_zero=mean - half <= 0.0 <= mean + half)
    return result


def f_cdf(f: float, dof_a: float, dof_b: float) -> float:
    """P(F ≤ f) for Fisher's F with (dof_a, dof_b) degrees of freedom, f ≥ 0."""
    if f <= 0.0:
        return 0.0
    return incomplete_beta(0.5 * dof_a, 0.5 * dof_b, dof_a * f / (dof_a * f + dof_b))


def variance_ratio_test(a, b) -> dict:
    """The F-test of equal variances of two independent normal samples: {"f" = s_a²/s_b², "dof": [n_a − 1,
    n_b − 1], "p" two-sided}; every value None where a sample has fewer than two values or b no spread."""
    a, b = mean_and_std(a), mean_and_std(b)
    if a["std"] is None or b["std"] is None or b["std"] == 0.0:
        return {"f": None, "dof": None, "p": None}
    f, dof_a, dof_b = (a["std"] / b["std"]) ** 2, a["n"] - 1, b["n"] - 1
    below = f_cdf(f, dof_a, dof_b)
    return {"f": f, "dof": [dof_a, dof_b], "p": min(1.0, 2.0 * min(below, 1.0 - below))}


def welch_test(a, b) -> dict:
    """Welch's t-test of equal means of two independent samples: {"t", "dof" (Welch–Satterthwaite), "p"
    two-sided}; every value None where a sample has fewer than two values or neither has spread."""
    a, b = mean_and_std(a), mean_and_std(b)
    if a["std"] is None or b["std"] is None:
        return {"t": None, "dof": None, "p": None}
    va, vb = a["std"] ** 2 / a["n"], b["std"] ** 2 / b["n"]
    if va + vb == 0.0:
        return {"t": None, "dof": None, "p": None}
    t = (a["mean"] - b["mean"]) / math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (a["n"] - 1) + vb**2 / (b["n"] - 1))
    return {"t": t, "dof": dof, "p": min(1.0, 2.0 * (1.0 - t_cdf(abs(t), dof)))}


def exchangeable_test(ours, pytorch, control, draws: int = 10000, seed: int = 0) -> dict:
    """Is ours farther from PyTorch than PyTorch′ is?  A permutation test over seeds.

    The statistic is S = mean_i (o_i − p_i)² − mean_i (p_i − p′_i)² over the seeds i.  Under the null
    hypothesis that the three figures of a seed are exchangeable (ours is one more draw of the same chaos,
    as PyTorch′ is), relabelling them within each seed (3! ways, independently per seed) leaves the
    distribution of S unchanged; the one-sided p is the share of relabellings with S at least the one
    observed (all 6ⁿ of them where 6ⁿ ≤ ``draws``, else ``draws`` random ones from default_rng(seed), the
    observed labelling counted).  Unlike the F and Welch tests it does not assume the two samples of
    differences independent (they share PyTorch's figure) nor normal.

    Returns:
        {"statistic": S, "p", "relabellings": how many were counted, "exact": whether all were}.
    """
    figures = np.array([ours, pytorch, control], dtype=np.float64).T  # (n, 3)
    orders = np.array([[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])

    def statistic(relabelled):  # (..., n, 3)
        o, p, c = relabelled[..., 0], relabelled[..., 1], relabelled[..., 2]
        return ((o - p) ** 2).mean(axis=-1) - ((p - c) ** 2).mean(axis=-1)

    n = len(figures)
    observed = float(statistic(figures))
    exact = 6**n <= draws
    if exact:
        choices = np.stack(np.meshgrid(*[np.arange(6)] * n, indexing="ij"), axis=-1).reshape(-1, n)
    else:
        choices = np.random.default_rng(seed).integers(0, 6, size=(draws - 1, n))
        choices = np.vstack([np.zeros((1, n), dtype=choices.dtype), choices])  # the observed labelling
    relabelled = np.take_along_axis(figures[None], orders[choices], axis=-1)  # (R, n, 3)
    values = statistic(relabelled)
    p = float(np.mean(values >= observed - 1e-12 * max(1.0, abs(observed))))
    return {"statistic": observed, "p": p, "relabellings": len(choices), "exact": exact}
