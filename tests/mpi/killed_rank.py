"""A rank killed with SIGKILL while the other waits in a collective: the launcher must end the job.

Usage: ``mpiexec -n 2 python tests/mpi/killed_rank.py``. After one collective together, rank 1 kills
itself with signal 9 (no Python cleanup, no MPI_Abort: what the OOM killer does); rank 0 then blocks in
``allreduce_sum_``. Rank 1 prints the time of its death.
"""

import os
import signal
import time

import numpy as np

from moco_ref.parallel.launch import get_communicator

if __name__ == "__main__":
    comm = get_communicator("numpy")
    comm.allreduce_sum_([np.ones(4, np.float32)])
    print(f"rank {comm.rank} after the first collective", flush=True)
    if comm.rank == 1:
        time.sleep(1.0)  # rank 0 is in the second collective by now
        print(f"killing at {time.time():.3f}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    comm.allreduce_sum_([np.ones(4, np.float32)])
    print("rank 0 passed the second collective: wrong", flush=True)
