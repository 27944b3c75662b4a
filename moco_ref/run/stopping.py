"""Stopping on a signal: SIGINT (Ctrl-C) and SIGTERM (a scheduler's pre-emption) end a run at a step.

While :class:`StopSignals` is active, either signal only records that a stop was asked for; the trainer
looks after every step, finishes that step, saves a checkpoint at it (a mid-epoch checkpoint resumes
exactly) and raises :class:`StoppedBySignal`; the command line prints how to resume and exits with
128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as a shell reports a process the signal
killed.

The handler never raises, so a further signal (a second Ctrl-C, or the SIGTERM that follows) cannot break
into the save: the atomic write completes, and the run stops as asked.  To end a run at once, SIGKILL it;
the previous checkpoint is kept either way.

Data parallel: mpiexec forwards a signal to every process, but not always at the same step.  So the
decision is collective (:func:`agreed_signal`, one tiny allreduce a step, only when there are several
processes): all of them stop after the same step, and rank 0 saves.
"""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StoppedBySignal(Exception):
    """Raised by ``Trainer.run`` once the checkpoint of the step it stopped at is saved."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {self.name}")

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """128 + the signal's number: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


class StopSignals:
    """A context in which SIGINT and SIGTERM are recorded (``received``) instead of ending the process.

    The first signal received is kept; later ones change nothing.  A signal that was ignored when the
    context began (SIG_IGN: the SIGINT of a job started with ``&`` by a script) stays ignored, as Python
    itself leaves it.  Outside the main thread nothing is installed (Python allows handlers only there).
    """

    def __init__(self):
        self.received: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                previous = signal.getsignal(signum)
                if previous is not signal.SIG_IGN:
                    self._previous[signum] = previous
                    signal.signal(signum, self._record)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def _record(self, signum, frame) -> None:
        if self.received is None:
            self.received = signum


def agreed_signal(comm, received: int | None) -> int | None:
    """The signal all processes of ``comm`` stop for after this step, or None to go on.

    Call it once a step on every process: one allreduce of two flags (with one process, its own
    ``received``); if any process got SIGTERM, every one stops for SIGTERM, else for SIGINT if any got that.
    """
    interrupted, terminated = comm.allreduce_host_mean(
        [float(received == signal.SIGINT), float(received == signal.SIGTERM)]
    )
    if terminated > 0:
        return signal.SIGTERM
    return signal.SIGINT if interrupted > 0 else None
