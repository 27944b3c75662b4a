"""The clocks of the benchmarks.

Timing rules (the machines are shared and noisy):
    * warm-up repetitions first, never timed;
    * the backend is synchronised before every clock read (a no-op on NumPy);
    * ours and PyTorch's repetitions alternate (ours, torch, ours, torch, …) so both see the same noise;
    * the figure reported is the MEDIAN of the timed repetitions.
"""

from __future__ import annotations

import statistics
import time


def median(values) -> float:
    return float(statistics.median(values))


def median_ms(fn, reps: int = 30, warmup: int = 3) -> float:
    """The median of ``reps`` timed calls of ``fn`` after ``warmup`` untimed ones, in milliseconds (work on the
    CPU: nothing to synchronise).  For the dated experiment scripts under benchmarks/."""
    return 1e3 * median(interleaved({"fn": (fn, lambda: None)}, reps, warmup)["fn"])


def clock(fn, synchronize) -> float:
    """Seconds fn() takes, with the device synchronised before both clock reads."""
    synchronize()
    start = time.perf_counter()
    fn()
    synchronize()
    return time.perf_counter() - start


def interleaved(runners: dict, reps: int, warmup: int) -> dict:
    """Times several runners in alternation.

    Args:
        runners: {name: (fn, synchronize)}.
        reps, warmup: timed and untimed rounds; each round runs every runner once, in order.
    Returns:
        {name: [seconds of each timed round]}.
    """
    for _ in range(warmup):
        for fn, sync in runners.values():
            clock(fn, sync)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(reps):
        for name, (fn, sync) in runners.items():
            times[name].append(clock(fn, sync))
    return times
