"""Progress of long work on stderr: a tqdm bar on a terminal, plain lines elsewhere.

On a terminal (tqdm, redrawn in place):

    epoch 3/20  45%|████▌     | 14/31 [00:05<00:06], run left 02:41, loss 8.412, …, 640 img/s, data 12 %

Elsewhere (CI, a log file, a pipe) one line every ``every`` steps and at the last, with the same fields:

    epoch 3/20 14/31 [00:05<00:06], run left 02:41, loss 8.412, …, 640 img/s, data 12 %

``[elapsed<left]``: the time this bar has run and the time left for its steps at the mean pace of the steps it
has run (tqdm with smoothing 0); "run left" adds the ``after`` steps that follow this bar at the same pace.
The fields after it are the caller's.  ``delay``: nothing is shown before that many seconds, so work that
ends sooner shows nothing.

Only the process that writes shows progress: the others get :class:`NoProgress`, chosen once where the run
is built (a role is an object); functions that may show progress take the class to build it with.
"""

from __future__ import annotations

import os
import sys
import time

from tqdm import tqdm

# Work that takes longer than this many seconds shows its progress (``delay`` of the passes that are often short).
SLOW_S = 5.0
FALLBACK_WIDTH, FALLBACK_HEIGHT = 100, 24  # the size assumed of a terminal that does not tell its own
BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]{postfix}"


def clock(seconds: float) -> str:
    """ "02:41", "1:02:41": tqdm's way of writing a duration."""
    return tqdm.format_interval(max(0.0, seconds))


class Progress:
    """Progress through ``total`` steps of one piece of work named ``label``.

    Args:
        total: steps of this bar.  label: its name ("epoch 3/20").
        done: steps already done when it starts (a resumed epoch); they do not count towards the pace.
        after: steps of the run that follow this bar (None: no time left for the run is shown).
        every: steps between two plain lines (off a terminal).  delay: seconds before anything is shown.
        leave: whether the finished bar stays on the terminal.  stream: where to write (stderr).
    """

    def __init__(
        self,
        total: int,
        label: str,
        *,
        done: int = 0,
        after: int | None = None,
        every: int = 1,
        delay: float = 0.0,
        leave: bool = True,
        stream=None,
    ):
        self.total, self.label, self.after, self.every, self.delay = total, label, after, every, delay
        self.stream = stream or sys.stderr
        self.first = self.done = self.printed = done
        self.fields: list[str] = []
        self.start = time.perf_counter()
        tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        sized = tty and _width(self.stream) > 0  # a terminal that tells its width: the bar follows it
        self.bar = (
            tqdm(
                total=total,
                initial=done,
                desc=label,
                file=self.stream,
                bar_format=BAR_FORMAT,
                smoothing=0,
                delay=delay,
                leave=leave,
                dynamic_ncols=sized,
                **({} if sized else {"ncols": FALLBACK_WIDTH, "nrows": FALLBACK_HEIGHT}),
            )
            if tty
            else None
        )

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def seconds_left(self) -> tuple[float | None, float | None]:
        """(time left for this bar, time left for the run) at the mean pace so far; None before a step."""
        ran = self.done - self.first
        if ran <= 0:
            return None, None
        per_step = self.elapsed / ran
        left = (self.total - self.done) * per_step
        return left, None if self.after is None else left + self.after * per_step

    def show(self, done: int, fields: list[str] | None = None) -> None:
        """``done`` of ``total`` steps are done; ``fields`` ("loss 8.412", "640 img/s") follow the times
        (None: the last ones given)."""
        self.done = done
        if fields is not None:
            self.fields = list(fields)
        left, run_left = self.seconds_left()
        shown = ([f"run left {clock(run_left)}"] if run_left is not None else []) + self.fields
        if self.bar is not None:
            self.bar.set_postfix_str(", ".join(shown), refresh=False)
            self.bar.update(done - self.bar.n)
            return
        if (
            (done - self.printed < self.every and done < self.total)
            or done == self.printed
            or self.elapsed < self.delay
        ):
            return
        self.printed = done
        times = f"[{clock(self.elapsed)}<{clock(left) if left is not None else '?'}]"
        self.stream.write(", ".join([f"{self.label} {done}/{self.total} {times}", *shown]) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _width(stream) -> int:
    """The width of the terminal ``stream`` writes to; 0 where it does not say (a bare pseudo-terminal)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is an OSError and a ValueError
        return 0


class NoProgress:
    """Progress of a process that does not show it (ranks other than 0): every call does nothing."""

    def __init__(self, *arguments, **settings):
        pass

    def show(self, done: int, fields: list[str] | None = None) -> None:
        pass

    def close(self) -> None:
        pass
