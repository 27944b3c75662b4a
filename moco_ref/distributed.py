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
    allgather(x)                     (n, ...) on every rank -> (W·n, ...): the ranks' blocks in rank order
    bcast_host(array, root=0)        a host numpy array from root to every rank (returned)
    allreduce_host_mean(values)      means over the ranks of a few host floats (metrics), one collective
    barrier()
    abort(code=1)                    ends the whole job, not only this process

The implementations:

- ``SingleProcess``: W = 1; the collectives are the identity (inputs are still checked, so misuse shows up
  on one process too).
- ``MPICommunicator``: mpi4py's buffer methods (``Allreduce``, ``Allgather``, ``Bcast``; never the pickling
  lower-case ones). CuPy arrays are staged through host memory unless ``MOCO_REF_CUDA_AWARE_MPI=1`` says the
  MPI takes device pointers (the PyPI ``mpich`` wheel is not assumed to).
- ``NCCLCommunicator``: CuPy arrays over NCCL on the current stream, one GPU per rank; host operations
  go through the ``MPICommunicator`` it holds.

``get_communicator(backend_name)`` picks one from the launcher's environment, without importing mpi4py
when there is one process. ``run_or_abort(comm, fn, ...)`` runs ``fn`` and, if it raises on one rank,
reports the error and aborts the job, so that no other rank waits forever in its next collective.
"""

from __future__ import annotations

import os
import sys
import time
import traceback

import numpy

from backends import BackendUnavailable, get_array_module
from moco_ref.errors import UserError
from moco_ref.runtime import launcher_world_size, world_size_variable

__all__ = [
    "Communicator",
    "SingleProcess",
    "MPICommunicator",
    "NCCLCommunicator",
    "get_communicator",
    "launcher_world_size",
    "run_or_abort",
]

MPI_INSTALL_HINT = "pip install 'moco-ref[mpi]'"
# Measured with MPICH 5.0.2's hydra on 2 ranks: without a pause before MPI_Abort the error line just
# written to stderr was lost in 2 of 60 aborts (the job is killed before hydra reads the pipe); with 0.1 s,
# in none of 100.
ABORT_GRACE_S = 0.1
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
            raise ValueError(f"allreduce_sum_: item {i} is a {type(array).__name__}, not a {xp.__name__} array "
                             "(all arrays must be on one backend)")
        if array.dtype not in REDUCIBLE_DTYPES:
            raise ValueError(f"allreduce_sum_ sums float32 or float64 arrays in place; item {i} is {array.dtype}")
        if dtype is not None and array.dtype != dtype:
            raise ValueError(f"allreduce_sum_ packs the list into one buffer of one dtype; item {i} is "
                             f"{array.dtype}, item 0 is {dtype}")
        dtype = array.dtype
    return xp


def _pack(xp, arrays: list):
    """The arrays raveled and concatenated into one new flat buffer (a copy)."""
    return xp.concatenate([array.reshape(-1) for array in arrays])


def _unpack_(buffer, arrays: list) -> None:
    """Writes consecutive slices of the flat ``buffer`` back into ``arrays``, in place."""
    offset = 0
    for array in arrays:
        array[...] = buffer[offset:offset + array.size].reshape(array.shape)
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


# ----------------------------------------------------------------- MPI
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


# ----------------------------------------------------------------- NCCL
def _bcast_nccl_unique_id(mpi: MPICommunicator, nccl):
    """Rank 0's ``nccl.get_unique_id()`` on every rank, sent with ``Bcast`` as 129 int32 (kind, 128 bytes).

    CuPy before v14 returns the id as a tuple of 128 C ``char`` values (signed on x86, unsigned on ARM;
    cupy/cupy#9430), v14 as ``bytes``; the id is rebuilt in the kind rank 0 got, value for value, which
    is what ``NcclCommunicator`` of the same CuPy takes back.
    """
    message = numpy.zeros(129, dtype=numpy.int32)  # [0 = tuple | 1 = bytes, the 128 values]
    if mpi.rank == 0:
        unique_id = nccl.get_unique_id()
        if len(unique_id) != 128:
            raise RuntimeError(f"NCCL unique id of {len(unique_id)} bytes; expected 128")
        message[0] = 1 if isinstance(unique_id, (bytes, bytearray)) else 0
        message[1:] = list(unique_id)
    message = mpi.bcast_host(message, root=0)
    values = [int(v) for v in message[1:]]
    return bytes(values) if message[0] == 1 else tuple(values)


class NCCLCommunicator(Communicator):
    """CuPy arrays over NCCL, one GPU per rank; host operations over the MPI communicator it holds.

    The GPU is ``local_rank % device_count``, made current. NCCL's unique id is made on rank 0 and sent
    over MPI. ``allreduce_sum_`` and ``allgather`` are queued on CuPy's current stream and do not wait for
    the host: the results are stream-ordered before whatever the caller queues next. NumPy arrays given to
    them go over MPI instead.

    Unverified: written from CuPy's documented ``cupy.cuda.nccl`` API; it has not run on GPUs yet.

    Args:
        mpi: the MPI communicator of the job (a new ``MPICommunicator`` by default); constructing is
            collective.
    """

    def __init__(self, mpi: MPICommunicator | None = None):
        try:
            import cupy
            from cupy.cuda import nccl
        except ImportError as error:
            raise BackendUnavailable(f"the NCCL communicator needs CuPy ({error}); pip install 'moco-ref[gpu]'"
                                     ) from None
        if not getattr(nccl, "available", False):
            raise BackendUnavailable("CuPy cannot load NCCL (pip install nvidia-nccl-cu12, or -cu13 for CUDA "
                                     "13); or set MOCO_REF_COMM=mpi to reduce through host-staged MPI")
        self.mpi = MPICommunicator() if mpi is None else mpi
        self.rank, self.size, self.local_rank = self.mpi.rank, self.mpi.size, self.mpi.local_rank
        device_count = cupy.cuda.runtime.getDeviceCount()
        if self.mpi.local_size > device_count:
            raise UserError(f"{self.mpi.local_size} processes on this host but {device_count} GPU(s): NCCL needs "
                            "one GPU per process; start fewer, or set MOCO_REF_COMM=mpi to share GPUs over MPI")
        self.cupy, self.nccl = cupy, nccl
        self.device = cupy.cuda.Device(self.local_rank % device_count)
        self.device.use()
        unique_id = _bcast_nccl_unique_id(self.mpi, nccl)
        self.communicator = nccl.NcclCommunicator(self.size, unique_id, self.rank)  # collective over ranks
        self._nccl_dtypes = {numpy.dtype(numpy.float32): nccl.NCCL_FLOAT32,
                             numpy.dtype(numpy.float64): nccl.NCCL_FLOAT64}

    def allreduce_sum_(self, arrays: list) -> None:
        xp = _check_reducible(arrays)
        if xp is numpy:
            return self.mpi.allreduce_sum_(arrays)
        if not arrays:
            return
        buffer = _pack(xp, arrays)  # (sum of sizes,) on this GPU
        stream = self.cupy.cuda.get_current_stream()
        self.communicator.allReduce(buffer.data.ptr, buffer.data.ptr, buffer.size,
                                    self._nccl_dtypes[buffer.dtype], self.nccl.NCCL_SUM, stream.ptr)
        _unpack_(buffer, arrays)  # queued on the same stream, after the reduction

    def allgather(self, x):
        _check_gatherable(x)
        if not isinstance(x, self.cupy.ndarray):
            return self.mpi.allgather(x)
        send = self.cupy.ascontiguousarray(x)
        gathered = self.cupy.empty((self.size * x.shape[0],) + tuple(x.shape[1:]), dtype=x.dtype)  # (W·n, ...)
        stream = self.cupy.cuda.get_current_stream()
        # A gather only copies: sent as bytes it works for every dtype (images, keys, indices).
        self.communicator.allGather(send.data.ptr, gathered.data.ptr, send.nbytes, self.nccl.NCCL_UINT8,
                                    stream.ptr)
        return gathered

    def bcast_host(self, array: numpy.ndarray, root: int = 0) -> numpy.ndarray:
        return self.mpi.bcast_host(array, root)

    def allreduce_host_mean(self, values: list) -> list:
        return self.mpi.allreduce_host_mean(values)

    def barrier(self) -> None:
        self.mpi.barrier()

    def abort(self, code: int = 1) -> None:
        self.mpi.abort(code)  # MPI_Abort ends every process; their GPU contexts go with them


# ----------------------------------------------------------------- choosing one
def get_communicator(backend_name: str) -> Communicator:
    """The communicator for this process: SingleProcess, MPICommunicator or NCCLCommunicator.

    One process (no launcher variable, or a world size of 1): ``SingleProcess``, and mpi4py is not
    imported. More: mpi4py is imported (MPI is initialised); ``backend_name == "cupy"`` gives NCCL unless
    ``MOCO_REF_COMM=mpi`` asks for host-staged MPI (needed when ranks share a GPU); otherwise MPI.
    Collective when W > 1: every rank must call it.

    Raises:
        UserError: mpi4py is missing or cannot load its MPI; MPI sees another world size than the
            launcher (mpi4py built for another MPI than this mpiexec); a bad MOCO_REF_COMM.
    """
    variable, size = world_size_variable(os.environ)
    if size <= 1:
        return SingleProcess()
    choice = os.environ.get("MOCO_REF_COMM", "").strip().lower()
    if choice not in ("", "mpi", "nccl"):
        raise UserError(f"MOCO_REF_COMM={choice!r}: use 'mpi' or 'nccl' (or leave it unset)")
    if choice == "nccl" and backend_name != "cupy":
        raise UserError("MOCO_REF_COMM=nccl needs --backend cupy")
    try:
        import mpi4py  # noqa: F401  (only to tell "not installed" from "cannot load its MPI")
    except ImportError:
        raise UserError(f"launched with {size} processes but mpi4py is not installed; {MPI_INSTALL_HINT}") from None
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError) as error:
        raise UserError(f"launched with {size} processes but mpi4py cannot load its MPI library ({error})"
                        ) from None
    mpi = MPICommunicator()
    if mpi.size != size:
        library = " ".join(MPI.Get_library_version().split("\n")[0].split())
        raise UserError(f"{variable}={size} says {size} processes but MPI sees {mpi.size}: launch with the "
                        f"mpiexec of the MPI that mpi4py uses ({library}), or unset {variable}")
    if backend_name == "cupy" and choice != "mpi":
        return run_or_abort(mpi, NCCLCommunicator, mpi)  # a rank without a GPU must not leave others waiting
    return mpi


# ----------------------------------------------------------------- failures
def run_or_abort(comm: Communicator, fn, *args, **kwargs):
    """Returns ``fn(*args, **kwargs)``; if it raises on one rank of several, reports and aborts the job.

    Without this, a rank that raises exits while the others wait in their next collective forever. The
    report goes to stderr, every line prefixed with ``[rank r]``: one line for a user error (``UserError``,
    ``BackendUnavailable``; abort code 2), the traceback otherwise (code 1); Ctrl-C gives 130 and a
    non-zero ``sys.exit(code)`` aborts with that code. With one process it re-raises instead, and the CLI
    turns the error into its one line as usual.
    """
    if comm.size == 1:
        return fn(*args, **kwargs)
    try:
        return fn(*args, **kwargs)
    except SystemExit as error:
        if error.code in (None, 0):
            raise
        code, message = (error.code, f"exit {error.code}") if isinstance(error.code, int) else (1, str(error.code))
    except KeyboardInterrupt:
        code, message = 130, "interrupted"
    except (UserError, BackendUnavailable) as error:
        code, message = 2, f"moco-ref: error: {error}"
    except BaseException:
        code, message = 1, traceback.format_exc().rstrip("\n")
    prefix = f"[rank {comm.rank}] "
    sys.stderr.write("".join(prefix + line + "\n" for line in message.splitlines()))
    comm.abort(code)
    raise SystemExit(code)  # reached only if abort returned
