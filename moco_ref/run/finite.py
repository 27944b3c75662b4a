"""Finite numbers: whether a set of named arrays holds a NaN or ±inf, and which array first does.

A run that diverges shows it as NaN or ±inf somewhere in its state: the loss, a weight, a BatchNorm
running statistic, the queue, an optimiser buffer.  This module is the one place that decides it.  The
trainer asks after every step and keeps the answer on the device until the loss is read (no host
synchronisation per step); every reader of a checkpoint asks before it uses one.

    finite_flags(arrays)       (n,) booleans on the arrays' device, one per float array: every element finite
    first_non_finite(arrays)   the name of the first float array (in the order given) that is not, or None

Arrays that are not floating point (counters, pointers, labels) are always finite and are skipped.
"""

from __future__ import annotations

import numpy as np

from backends import get_array_module, to_numpy


def float_names(arrays: dict) -> list[str]:
    """The names of the floating-point arrays of ``arrays``, in their order: the ones that can be non-finite."""
    return [name for name, a in arrays.items() if np.dtype(a.dtype).kind in "fc"]


def finite_flags(arrays: dict):
    """flags (n,) bool on the arrays' device, ``flags[i]`` = every element of the i-th float array of
    ``arrays`` (:func:`float_names`'s order) is finite; no host synchronisation.  The float arrays must
    share one array module (all host, or all on the device)."""
    names = float_names(arrays)
    if not names:
        return np.ones(0, dtype=bool)
    xp = get_array_module(arrays[names[0]])
    return xp.stack([xp.isfinite(arrays[name]).all() for name in names])  # (n,)


def first_non_finite(arrays: dict) -> str | None:
    """The name of the first float array of ``arrays`` that holds a NaN or ±inf, or None when all are finite
    (one host read of :func:`finite_flags`)."""
    bad = np.flatnonzero(~to_numpy(finite_flags(arrays)))
    return float_names(arrays)[bad[0]] if bad.size else None
