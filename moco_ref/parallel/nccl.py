"""The NCCL communicator: CuPy arrays over NCCL, one GPU per rank; host operations over MPI.

The GPU is ``local_rank % device_count``, made current.  NCCL's unique id is made on rank 0 and sent
over MPI.  ``allreduce_sum_`` and ``allgather`` are queued on CuPy's current stream and do not wait for
the host: the results are stream-ordered before whatever the caller queues next.  NumPy arrays given to
them go over MPI instead.  The device calls are backends/nccl.py's, written from CuPy's documented
``cupy.cuda.nccl`` API.
"""

from __future__ import annotations

import numpy

from backends import nccl as device
from moco_ref.errors import UserError
from moco_ref.parallel.communicator import (
    Communicator,
    _check_gatherable,
    _check_reducible,
    _pack,
    _unpack_,
)
from moco_ref.parallel.mpi import MPICommunicator


def _bcast_nccl_unique_id(mpi: MPICommunicator):
    """Rank 0's NCCL unique id on every rank, sent with ``Bcast`` as 129 int32 (kind, 128 values).

    CuPy before v14 returns the id as a tuple of 128 C ``char`` values (signed on x86, unsigned on ARM;
    cupy/cupy#9430), v14 as ``bytes``; the id is rebuilt in the kind rank 0 got, value for value, which
    is what ``NcclCommunicator`` of the same CuPy takes back.
    """
    message = numpy.zeros(129, dtype=numpy.int32)  # [0 = tuple | 1 = bytes, the 128 values]
    if mpi.rank == 0:
        unique_id = device.unique_id()
        if len(unique_id) != 128:
            raise RuntimeError(f"NCCL unique id of {len(unique_id)} bytes; expected 128")
        message[0] = 1 if isinstance(unique_id, (bytes, bytearray)) else 0
        message[1:] = list(unique_id)
    message = mpi.bcast_host(message, root=0)
    values = [int(v) for v in message[1:]]
    return bytes(values) if message[0] == 1 else tuple(values)


class NCCLCommunicator(Communicator):
    """CuPy arrays over NCCL, one GPU per rank; host operations over the MPI communicator it holds.

    Args:
        mpi: the MPI communicator of the job (a new ``MPICommunicator`` by default); constructing is
            collective.
    """

    def __init__(self, mpi: MPICommunicator | None = None):
        device.load()  # BackendUnavailable first, before any collective
        self.mpi = MPICommunicator() if mpi is None else mpi
        self.rank, self.size, self.local_rank = self.mpi.rank, self.mpi.size, self.mpi.local_rank
        count = device.device_count()
        if self.mpi.local_size > count:
            raise UserError(
                f"{self.mpi.local_size} processes on this host but {count} GPU(s): NCCL needs "
                "one GPU per process; start fewer, or set MOCO_REF_COMM=mpi to share GPUs over MPI"
            )
        self.gpu = device.NcclDevice(self.size, self.rank, self.local_rank % count, _bcast_nccl_unique_id(self.mpi))

    def allreduce_sum_(self, arrays: list) -> None:
        xp = _check_reducible(arrays)
        if xp is numpy:
            return self.mpi.allreduce_sum_(arrays)
        if not arrays:
            return
        buffer = _pack(xp, arrays)  # (sum of sizes,) on this GPU
        self.gpu.allreduce_sum_(buffer)
        _unpack_(buffer, arrays)  # queued on the same stream, after the reduction

    def allgather(self, x):
        _check_gatherable(x)
        if not self.gpu.holds(x):
            return self.mpi.allgather(x)
        return self.gpu.allgather(x)

    def bcast_host(self, array: numpy.ndarray, root: int = 0) -> numpy.ndarray:
        return self.mpi.bcast_host(array, root)

    def allreduce_host_mean(self, values: list) -> list:
        return self.mpi.allreduce_host_mean(values)

    def barrier(self) -> None:
        self.mpi.barrier()

    def abort(self, code: int = 1) -> None:
        self.mpi.abort(code)  # MPI_Abort ends every process; their GPU contexts go with them
