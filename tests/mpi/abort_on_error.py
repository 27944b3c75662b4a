"""One rank raises inside ``run_or_abort`` while the other waits in a collective: the job must end.

Usage: ``mpiexec -n 2 python tests/mpi/abort_on_error.py user|bug``. Rank 1 raises a ``UserError``
(``user``: one line, exit code 2) or a ``RuntimeError`` (``bug``: the traceback, exit code 1) after a
second, and prints the time it failed; rank 0 is meanwhile blocked in ``allreduce_sum_``, which never
completes, so only the abort can end it.
"""

import sys
import time

import numpy as np

from moco_ref.errors import UserError
from moco_ref.parallel.launch import get_communicator, run_or_abort


def step(comm, kind):
    if comm.rank == 1:
        time.sleep(1.0)  # rank 0 is in the collective by now
        print(f"failing at {time.time():.3f}", flush=True)
        if kind == "user":
            raise UserError("the data folder /nowhere does not exist")
        raise RuntimeError("a bug on rank 1")
    comm.allreduce_sum_([np.ones(4, np.float32)])  # rank 1 never joins: waits until the abort
    print("rank 0 passed the collective: wrong", flush=True)


if __name__ == "__main__":
    comm = get_communicator("numpy")
    comm.barrier()
    run_or_abort(comm, step, comm, sys.argv[1])
