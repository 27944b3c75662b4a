"""Communicators: the one seam between data-parallel MoCo and the engine that moves the bytes.

The training code talks to a ``Communicator`` and never to MPI or NCCL, as in ChainerMN's communicators:
the same MoCo step runs in one process, over MPI on CPUs, or over NCCL on GPUs.

Notation: W is the number of processes (``size``), n the rows one rank contributes to a gather.

The interface (every implementation has exactly these members)::

    rank: int                        this process, 0..W-1
    size: int                        W
    local_rank: int                  rank among the processes on this host (chooses the GPU)
    allreduce_sum_(arrays)           in place: each array becomes its sum over the ranks; ONE collective for
                                     the whole list (packed into one flat buffer, reduced, unpacked);
                                     float32 or float64 arrays of one dtype and one backend, else ValueError
    average_(arrays)                 in place: each array becomes its mean over the ranks (the same one collective)
    allgather(x)                     (n, ...) on every rank -> (W·n, ...): the ranks' blocks in rank order
    bcast_host(array, root=0)        a host numpy array from root to every rank (returned)
    allreduce_host_mean(values)      means over the ranks of a few host floats (metrics), one collective
    barrier()
    abort(code=1)                    ends the whole job, not only this process

The implementations, one module each:

- ``SingleProcess`` (here): W = 1; the collectives are the identity (inputs are still checked, so misuse
  shows up on one process too).  The training code never asks how many processes there are: with one,
  every collective simply hands its input back.
- ``MPICommunicator`` (parallel/mpi.py): mpi4py's buffer methods.
- ``NCCLCommunicator`` (parallel/nccl.py): CuPy arrays over NCCL, one GPU per rank.

parallel/launch.py picks one from the launcher's environment and aborts the job when a rank fails.
"""

from __future__ import annotations

import sys

import numpy

from backends import get_array_module

__all__ = ["Communicator", "SingleProcess"]

REDUCIBLE_DTYPES = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))


# ----------------------------------------------------------------- shared helpers
def _check_reducible(arrays: list):
    """Returns the array module of ``arrays`` (numpy or cupy) after checking they can be summed in place.

    Raises:
        ValueError: not a list of arrays; an integer (or other non-float32/64) dtype; mixed dtypes or
            mixed backends.
    """
    if not isinstance(arrays, (list, tuple)):
        raise ValueError(f"allreduce_sum_ takes a list of arrays, got {type(arrays).__name__}")
    if not arrays:
        return numpy
    xp = get_array_module(*arrays)
    dtype = None
    for i, array in enumerate(arrays):
        if not isinstance(array, xp.ndarray):
            raise ValueError(
                f"allreduce_sum_: item {i} is a {type(array).__name__}, item 0 a "
                f"{type(arrays[0]).__name__} (all arrays must be on one backend)"
            )
        if array.dtype not in REDUCIBLE_DTYPES:
            raise ValueError(f"allreduce_sum_ sums float32 or float64 arrays in place; item {i} is {array.dtype}")
        if dtype is not None and array.dtype != dtype:
            raise ValueError(
                f"allreduce_sum_ packs the list into one buffer of one dtype; item {i} is "
                f"{array.dtype}, item 0 is {dtype}"
            )
        dtype = array.dtype
    return xp


def _pack(xp, arrays: list):
    """The arrays raveled and concatenated into one new flat buffer (a copy)."""
    return xp.concatenate([array.reshape(-1) for array in arrays])


def _unpack_(buffer, arrays: list) -> None:
    """Writes consecutive slices of the flat ``buffer`` back into ``arrays``, in place."""
    offset = 0
    for array in arrays:
        array[...] = buffer[offset : offset + array.size].reshape(array.shape)
        offset += array.size


def _check_gatherable(x) -> None:
    if getattr(x, "ndim", 0) < 1:
        raise ValueError("allgather takes an array of shape (n, ...); got a scalar or 0-d array")


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed or broken stream must not stop the abort
            pass


# ----------------------------------------------------------------- the interface
class Communicator:
    """The interface the training code calls; see the module docstring for the contract of each member."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    def allreduce_sum_(self, arrays: list) -> None:
        """In place: each array becomes the sum over ranks of that array; one collective for the whole list."""
        raise NotImplementedError

    def average_(self, arrays: list) -> None:
        """In place: each array becomes its mean over the ranks (one allreduce_sum_, then × 1/W)."""
        self.allreduce_sum_(arrays)
        inverse = 1.0 / self.size
        for a in arrays:
            a *= inverse

    def allgather(self, x):
        """(n, ...) on every rank (same n and shape everywhere) -> (size·n, ...), blocks in rank order."""
        raise NotImplementedError

    def bcast_host(self, array: numpy.ndarray, root: int = 0) -> numpy.ndarray:
        """Root's host array on every rank; the others' ``array`` only gives the shape and dtype."""
        raise NotImplementedError

    def allreduce_host_mean(self, values: list) -> list:
        """Means over the ranks of a few host floats, in one collective."""
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError

    def abort(self, code: int = 1) -> None:
        """Ends the whole job with exit code ``code``; does not return."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size}, local_rank={self.local_rank})"


class SingleProcess(Communicator):
    """One process: every collective is the identity (allgather returns ``x`` itself, not a copy)."""

    def allreduce_sum_(self, arrays: list) -> None:
        _check_reducible(arrays)  # the sum over one rank is the array itself

    def average_(self, arrays: list) -> None:
        _check_reducible(arrays)  # the mean over one rank is the array itself

    def allgather(self, x):
        _check_gatherable(x)
        return x

    def bcast_host(self, array: numpy.ndarray, root: int = 0) -> numpy.ndarray:
        if root != 0:
            raise ValueError(f"bcast_host: root {root} does not exist in a single process")
        return array

    def allreduce_host_mean(self, values: list) -> list:
        return [float(v) for v in values]

    def barrier(self) -> None:
        pass

    def abort(self, code: int = 1) -> None:
        _flush_std_streams()
        sys.exit(code)
