"""The MPI communicator: collectives over mpi4py's buffer methods, for NumPy arrays and, staged, CuPy arrays.

``Allreduce``, ``Allgather``, ``Bcast`` take buffers without pickling (never the lower-case, pickling
methods).  CuPy arrays are staged through host memory unless ``MOCO_REF_CUDA_AWARE_MPI=1`` says the MPI
takes device pointers (the PyPI ``mpich`` wheel is not assumed to).  mpi4py is imported when one is built.
"""

from __future__ import annotations

import os
import time

import numpy

from backends import get_array_module
from moco_ref.parallel.communicator import (
    Communicator,
    _check_gatherable,
    _check_reducible,
    _flush_std_streams,
    _pack,
    _unpack_,
)

# A pause before MPI_Abort, so that the launcher forwards the error line just written to stderr before it
# tears the job down (without one, MPICH's hydra can kill the job before it has read the pipe).
ABORT_GRACE_S = 0.1


def _cuda_aware_from_env() -> bool:
    """True only if MOCO_REF_CUDA_AWARE_MPI=1: staging through the host is the safe default."""
    return os.environ.get("MOCO_REF_CUDA_AWARE_MPI", "").strip() == "1"


class MPICommunicator(Communicator):
    """Collectives over MPI (mpi4py buffer methods), for NumPy arrays and, staged, CuPy arrays.

    NumPy arrays are handed to MPI as they are. A CuPy array is copied to the host (``cupy.asnumpy``, which
    waits for the stream), reduced or gathered there, and copied back (``cupy.asarray``), unless the MPI is
    CUDA-aware (``MOCO_REF_CUDA_AWARE_MPI=1``, or ``cuda_aware=True``): then the current stream is
    synchronised and the device buffer goes to MPI directly.

    Args:
        comm: an ``mpi4py.MPI.Comm``; ``MPI.COMM_WORLD`` by default. Constructing is collective
            (``Split_type``): every rank of ``comm`` must construct it.
        cuda_aware: overrides the environment variable.
    """

    def __init__(self, comm=None, cuda_aware: bool | None = None):
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        host = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)  # the ranks sharing this host's memory
        self.local_rank = host.Get_rank()
        self.local_size = host.Get_size()
        host.Free()
        self.cuda_aware = _cuda_aware_from_env() if cuda_aware is None else bool(cuda_aware)

    def allreduce_sum_(self, arrays: list) -> None:
        xp = _check_reducible(arrays)
        if not arrays:
            return
        buffer = _pack(xp, arrays)  # (sum of sizes,)
        if xp is numpy:
            self.comm.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)
        elif self.cuda_aware:
            xp.cuda.get_current_stream().synchronize()  # MPI knows no streams: the packing must be done
            self.comm.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)
        else:
            host = xp.asnumpy(buffer)  # waits for the stream
            self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
            buffer = xp.asarray(host)
        _unpack_(buffer, arrays)

    def allgather(self, x):
        _check_gatherable(x)
        xp = get_array_module(x)
        out_shape = (self.size * x.shape[0],) + tuple(x.shape[1:])  # (W·n, ...)
        if xp is numpy or self.cuda_aware:
            send = xp.ascontiguousarray(x)
            gathered = xp.empty(out_shape, dtype=x.dtype)
            if xp is not numpy:
                xp.cuda.get_current_stream().synchronize()
            self.comm.Allgather(send, gathered)
            return gathered
        send = numpy.ascontiguousarray(xp.asnumpy(x))  # a host copy (waits for the stream)
        gathered = numpy.empty(out_shape, dtype=send.dtype)
        self.comm.Allgather(send, gathered)
        return xp.asarray(gathered)

    def bcast_host(self, array: numpy.ndarray, root: int = 0) -> numpy.ndarray:
        if not isinstance(array, numpy.ndarray):
            raise ValueError(f"bcast_host takes a host numpy array, got {type(array).__name__}")
        if self.rank == root:
            buffer = numpy.ascontiguousarray(array)
        else:
            buffer = numpy.empty(array.shape, dtype=array.dtype)  # never writes into the caller's array
        self.comm.Bcast(buffer, root=root)
        return buffer

    def allreduce_host_mean(self, values: list) -> list:
        buffer = numpy.array([float(v) for v in values], dtype=numpy.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)
        return (buffer / self.size).tolist()

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        _flush_std_streams()  # MPI_Abort ends the process without Python's own flushing
        time.sleep(ABORT_GRACE_S)  # lets the launcher forward that output before the job is torn down
        self.comm.Abort(code)
