"""One rank of the ``dp`` suite: our MoCo step over MPI, every collective timed; rank 0 prints the figures.

    mpiexec -n 2 python -m moco_ref.bench.data_parallel_worker --batch 128 --steps 12 --warmup 3

Each rank holds its share of a global batch of N images (rows rank, rank + W, …: what ``moco-ref train``
gives it), with plain BatchNorm, so the W ranks compute what one process computes with ``bn_splits = W``.
Every step starts after a barrier (not timed) and is timed on every rank; the communicator's methods
(``allreduce_sum_``, ``allgather``, ``bcast_host``) are wrapped with timers, and so are the MPI calls inside
them (``Allreduce``, ``Allgather``, ``Bcast``), which tells the bytes on the wire from the packing around them.
After the last step the ranks' records are gathered, and rank 0 prints one JSON line on stdout: per step the
maximum over ranks (the step is as slow as its slowest rank), and the medians over steps.  A collective's time
includes waiting for the other ranks to reach it: per step, the rank that spent least time in the communicator
(the one that came last to each collective) gives the cost of the collectives themselves.

Notation: W processes, N global batch, n = N/W per rank, S image side, D feature dimension.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict

# Kinds of traffic, in the order the table prints them.
KINDS = ("gradients + BN buffers", "key images", "keys", "permutation")


class CommTimers:
    """Wraps a communicator's methods (and the MPI calls inside them) with clocks; ``remove()`` undoes it.

    Per step (``start_step()`` clears it): ``seconds[kind]`` the time in the communicator's method,
    ``wire[kind]`` the time in the MPI call alone, ``calls[kind]``; ``bytes_sent[kind]`` what this rank
    contributes (the reduced vector; its block of a gather; the broadcast array) and ``bytes_received[kind]``
    the size of the result (the gathered whole batch).
    """

    def __init__(self, comm):
        self.comm = comm
        self.start_step()
        self._current = None  # the kind being timed, for the wire clocks
        for name in ("allreduce_sum_", "allgather", "bcast_host"):
            setattr(comm, name, self._wrap(name, getattr(comm, name)))
        self._mpi = getattr(comm, "comm", None)  # MPICommunicator's mpi4py communicator
        if self._mpi is not None:
            comm.comm = _TimedMPI(self._mpi, self)

    def start_step(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.wire: defaultdict[str, float] = defaultdict(float)
        self.calls: defaultdict[str, int] = defaultdict(int)
        self.bytes_sent: defaultdict[str, int] = defaultdict(int)
        self.bytes_received: defaultdict[str, int] = defaultdict(int)

    def remove(self) -> None:
        for name in ("allreduce_sum_", "allgather", "bcast_host"):
            del self.comm.__dict__[name]  # the class's method shows through again
        if self._mpi is not None:
            self.comm.comm = self._mpi

    def _wrap(self, name, method):
        def timed(value, *args, **kwargs):
            if name == "allreduce_sum_":
                kind, sent = KINDS[0], sum(a.nbytes for a in value)
            elif name == "allgather":
                kind, sent = (KINDS[1] if value.ndim == 4 else KINDS[2]), value.nbytes  # (n, 3, S, S) or (n, D)
            else:
                kind, sent = KINDS[3], value.nbytes
            self._current = kind
            start = time.perf_counter()
            result = method(value, *args, **kwargs)
            self.seconds[kind] += time.perf_counter() - start
            self._current = None
            self.calls[kind] += 1
            self.bytes_sent[kind] += sent
            self.bytes_received[kind] += result.nbytes if name == "allgather" else sent
            return result

        return timed

    def wire_clock(self, seconds: float) -> None:
        if self._current is not None:
            self.wire[self._current] += seconds


class _TimedMPI:
    """Forwards everything to an mpi4py communicator; clocks Allreduce, Allgather and Bcast."""

    def __init__(self, mpi, timers: CommTimers):
        self._mpi, self._timers = mpi, timers

    def __getattr__(self, name):
        attribute = getattr(self._mpi, name)
        if name not in ("Allreduce", "Allgather", "Bcast"):
            return attribute

        def timed(*args, **kwargs):
            start = time.perf_counter()
            result = attribute(*args, **kwargs)
            self._timers.wire_clock(time.perf_counter() - start)
            return result

        return timed


def measure(comm, args) -> dict | None:
    """Builds the model on every rank, times the steps, gathers the records; the figures on rank 0."""
    import numpy as np

    from backends import get_backend
    from moco_ref.bench.machine import blas_info
    from moco_ref.bench.workload import Config, make_inputs
    from moco_ref.moco import MoCo

    W, rank = comm.size, comm.rank
    if W < 2 or args.batch % W:
        raise SystemExit(f"data_parallel_worker: needs W >= 2 processes dividing the batch {args.batch}; got W = {W}")
    config = Config(
        arch=args.arch, width=args.width, batch=args.batch, K=args.K, dim=args.dim, size=args.size, bn_splits=1
    )
    backend = get_backend("numpy")
    model = MoCo(
        arch=config.arch,
        width=config.width,
        dim=config.dim,
        K=config.K,
        m=0.99,
        T=0.1,
        bn_splits=1,
        backend=backend,
        dtype="float32",
        comm=comm,
    )
    x_q, x_k = make_inputs(config, backend)  # (N, 3, S, S), as one process
    x_q, x_k = np.ascontiguousarray(x_q[rank::W]), np.ascontiguousarray(x_k[rank::W])  # (n, 3, S, S)
    timers = CommTimers(comm)
    rows = []  # per timed step: [step s, then per kind: s, wire s]
    for step in range(args.warmup + args.steps):
        comm.barrier()  # every rank starts the step together (not timed)
        timers.start_step()
        start = time.perf_counter()
        model.step(x_q, x_k)
        seconds = time.perf_counter() - start
        if step >= args.warmup:
            rows.append([seconds] + [t for kind in KINDS for t in (timers.seconds[kind], timers.wire[kind])])
    traffic = {
        kind: {
            "calls": timers.calls[kind],
            "bytes_sent": timers.bytes_sent[kind],
            "bytes_received": timers.bytes_received[kind],
        }
        for kind in KINDS
    }
    timers.remove()
    threads = blas_info()["threads"]
    gathered = comm.allgather(np.array(rows, dtype=np.float64)[None])  # (W, steps, 1 + 2·kinds)
    thread_counts = comm.allgather(np.array([threads]))  # (W,)
    if rank != 0:
        return None
    return summarise(gathered, traffic, config, W, args, [int(t) for t in thread_counts])


def summarise(gathered, traffic: dict, config, W: int, args, thread_counts: list) -> dict:
    """Maximum over ranks per step, then medians over steps; the traffic of one step."""
    worst = gathered.max(axis=0)  # (steps, 1 + 2·kinds)
    step_s = worst[:, 0]
    comm_per_rank = gathered[:, :, 1::2].sum(axis=2)  # (W, steps): time in the comm
    wire_per_rank = gathered[:, :, 2::2].sum(axis=2)
    comm = {}
    for i, kind in enumerate(KINDS):
        comm[kind] = dict(
            traffic[kind],
            median_s=statistics.median(gathered[:, :, 1 + 2 * i].max(axis=0)),
            wire_median_s=statistics.median(gathered[:, :, 2 + 2 * i].max(axis=0)),
        )
    median_s = statistics.median(step_s)
    from mpi4py import MPI

    return {
        "processes": W,
        "blas_threads_per_rank": thread_counts,
        "config": config.as_dict(),
        "batch_per_rank": config.batch // W,
        "bn_splits_per_rank": 1,
        "steps": args.steps,
        "warmup": args.warmup,
        "median_s": median_s,
        "images_per_s": config.batch / median_s,
        "step_s_max_over_ranks": step_s.tolist(),
        "step_s_per_rank": gathered[:, :, 0].tolist(),
        "comm_median_s": statistics.median(comm_per_rank.max(axis=0)),  # the rank that waited longest
        "comm_last_rank_median_s": statistics.median(comm_per_rank.min(axis=0)),  # the rank that came last
        "wire_median_s": statistics.median(wire_per_rank.max(axis=0)),
        "compute_median_s": statistics.median((gathered[:, :, 0] - comm_per_rank).max(axis=0)),
        "comm_s_per_rank": comm_per_rank.tolist(),
        "comm": comm,
        "bytes_per_rank_per_step": sum(t["bytes_sent"] for t in traffic.values()),
        "mpi": " ".join(MPI.Get_library_version().split("\n")[0].split()),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet10")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=128, help="the global batch N (n = N/W per rank)")
    parser.add_argument("--K", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    from backends.cpu import reuse_freed_memory

    reuse_freed_memory()  # as `moco-ref train` and the in-process suites
    from moco_ref.parallel.launch import get_communicator, run_or_abort

    comm = get_communicator("numpy")
    figures = run_or_abort(comm, measure, comm, args)
    if figures is not None:
        print(json.dumps(figures))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
