"""NCCL through CuPy: the device half of the NCCL communicator (moco_ref/parallel/nccl.py).

Every CuPy call of data-parallel training on GPUs is here, so that nothing under moco_ref/ imports CuPy.
The collectives are queued on CuPy's current stream and do not wait for the host.  Written from CuPy's
documented ``cupy.cuda.nccl`` API.
"""

from __future__ import annotations

import numpy

from backends import BackendUnavailable


def load():
    """(cupy, cupy.cuda.nccl), or BackendUnavailable naming what to install."""
    try:
        import cupy
        from cupy.cuda import nccl
    except ImportError as error:
        raise BackendUnavailable(f"the NCCL communicator needs CuPy ({error}); pip install 'moco-ref[gpu]'") from None
    if not getattr(nccl, "available", False):
        raise BackendUnavailable(
            "CuPy cannot load NCCL (pip install nvidia-nccl-cu12, or -cu13 for CUDA "
            "13); or set MOCO_REF_COMM=mpi to reduce through host-staged MPI"
        )
    return cupy, nccl


def device_count() -> int:
    cupy, _ = load()
    return cupy.cuda.runtime.getDeviceCount()


def unique_id():
    """This process's new NCCL unique id (made on rank 0 and sent to the others): 128 values, a tuple of
    C ``char`` before CuPy 14, ``bytes`` from 14 on (cupy/cupy#9430)."""
    _, nccl = load()
    return nccl.get_unique_id()


class NcclDevice:
    """One rank's GPU and its NCCL communicator.

    Args:
        size, rank: the job's world and this rank.
        device: the GPU of this rank, made current.
        nccl_id: the unique id of rank 0 (the same on every rank).  Constructing is collective.
    """

    def __init__(self, size: int, rank: int, device: int, nccl_id):
        self.cupy, self.nccl = load()
        self.device = self.cupy.cuda.Device(device)
        self.device.use()
        self.communicator = self.nccl.NcclCommunicator(size, nccl_id, rank)  # collective over the ranks
        self.size = size
        self._dtypes = {
            numpy.dtype(numpy.float32): self.nccl.NCCL_FLOAT32,
            numpy.dtype(numpy.float64): self.nccl.NCCL_FLOAT64,
        }

    def holds(self, x) -> bool:
        """Whether ``x`` is a CuPy array (NumPy arrays go over MPI instead)."""
        return isinstance(x, self.cupy.ndarray)

    def allreduce_sum_(self, buffer) -> None:
        """The flat float32/float64 device ``buffer`` becomes its sum over the ranks, in place."""
        stream = self.cupy.cuda.get_current_stream()
        self.communicator.allReduce(
            buffer.data.ptr, buffer.data.ptr, buffer.size, self._dtypes[buffer.dtype], self.nccl.NCCL_SUM, stream.ptr
        )

    def allgather(self, x):
        """(n, ...) on every rank -> (W·n, ...), rank order; sent as bytes, so any dtype (images, keys, indices)."""
        send = self.cupy.ascontiguousarray(x)
        gathered = self.cupy.empty((self.size * x.shape[0],) + tuple(x.shape[1:]), dtype=x.dtype)  # (W·n, ...)
        stream = self.cupy.cuda.get_current_stream()
        self.communicator.allGather(send.data.ptr, gathered.data.ptr, send.nbytes, self.nccl.NCCL_UINT8, stream.ptr)
        return gathered
