"""Checks every collective of the MPI communicator; run with ``mpiexec -n 2 python tests/mpi/collectives.py``.

Each rank builds rank-dependent values deterministically, so every rank knows what the sum, the gather
and the broadcast must be and checks its own result. A mismatch raises inside ``run_or_abort``, which
aborts the job (non-zero exit); each rank prints "ok rank <r>" only after every check passed.
"""

import numpy as np

from moco_ref.parallel.launch import get_communicator, run_or_abort
from moco_ref.parallel.mpi import MPICommunicator


def values(rank, shape, dtype, seed):
    """The array rank ``rank`` contributes: deterministic, different on every rank."""
    rng = np.random.default_rng([seed, rank])
    return rng.standard_normal(shape).astype(dtype)


def check_allreduce(comm):
    W = comm.size
    for dtype, tolerance in ((np.float32, 1e-6), (np.float64, 1e-14)):
        shapes = [(3, 4), (7,), (2, 3, 5), (1,), (4, 4)]
        arrays = [values(comm.rank, shape, dtype, seed) for seed, shape in enumerate(shapes)]
        arrays[-1] = arrays[-1].T  # a non-contiguous view is written in place too
        expected = [
            sum(values(r, shape, dtype, seed).astype(np.float64) for r in range(W)) for seed, shape in enumerate(shapes)
        ]
        expected[-1] = expected[-1].T
        ids = [id(a) for a in arrays]
        comm.allreduce_sum_(arrays)
        assert [id(a) for a in arrays] == ids
        for i, (got, want) in enumerate(zip(arrays, expected)):
            assert got.dtype == dtype and got.shape == want.shape, (i, got.dtype, got.shape)
            error = np.max(np.abs(got - want) / (np.abs(want) + 1))
            assert error <= tolerance, f"allreduce_sum_ {np.dtype(dtype)} item {i}: max rel. error {error:.3g}"


def check_refusals(comm):
    for bad in ([np.arange(4)], [np.zeros(2, np.float32), np.zeros(2, np.float64)], [np.zeros(3, np.float16)]):
        try:
            comm.allreduce_sum_(bad)
        except ValueError:
            continue
        raise AssertionError(f"allreduce_sum_ accepted {[a.dtype for a in bad]}")


def check_allgather(comm):
    W, n = comm.size, 3
    for dtype in (np.float32, np.int64):
        block = (np.arange(n * 2).reshape(n, 2) + 100 * comm.rank).astype(dtype)  # (n, 2)
        gathered = comm.allgather(block)
        expected = np.concatenate([(np.arange(n * 2).reshape(n, 2) + 100 * r).astype(dtype) for r in range(W)])
        assert gathered.dtype == dtype and gathered.shape == (W * n, 2), gathered.shape
        assert np.array_equal(gathered, expected), f"allgather order:\n{gathered}"


def check_bcast_host(comm):
    for root in range(comm.size):
        mine = np.full((2, 3), 10.0 * comm.rank + 1)  # each rank offers its own; root's must win
        mine_before = mine.copy()
        got = comm.bcast_host(mine, root=root)
        assert np.array_equal(got, np.full((2, 3), 10.0 * root + 1)), (root, got)
        assert np.array_equal(mine, mine_before), "bcast_host wrote into a non-root input"
    permutation = comm.bcast_host(np.random.default_rng(comm.rank).permutation(8), root=0)
    assert np.array_equal(permutation, np.random.default_rng(0).permutation(8))


def check_host_mean(comm):
    W = comm.size
    means = comm.allreduce_host_mean([float(comm.rank), 2.5, comm.rank**2])
    expected = [sum(range(W)) / W, 2.5, sum(r * r for r in range(W)) / W]
    assert np.allclose(means, expected, rtol=0, atol=1e-12), (means, expected)
    assert all(isinstance(v, float) for v in means)


def main():
    comm = get_communicator("numpy")
    assert isinstance(comm, MPICommunicator), repr(comm)
    assert comm.size == 2, comm.size
    assert comm.local_rank == comm.rank, "one host: the local rank is the rank"
    run_or_abort(comm, check_allreduce, comm)
    run_or_abort(comm, check_refusals, comm)
    run_or_abort(comm, check_allgather, comm)
    run_or_abort(comm, check_bcast_host, comm)
    run_or_abort(comm, check_host_mean, comm)
    comm.barrier()
    print(f"ok rank {comm.rank}", flush=True)


if __name__ == "__main__":
    main()
