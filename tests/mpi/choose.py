"""Prints which communicator ``get_communicator(backend)`` picks and whether mpi4py was imported.

Usage: ``[mpiexec -n 2] python tests/mpi/choose.py [numpy|cupy]``; each rank prints one line
``rank <r> size <W> <class name> mpi4py=<imported?>``.
"""

import sys

from moco_ref.parallel.launch import get_communicator, run_or_abort

if __name__ == "__main__":
    backend = sys.argv[1] if len(sys.argv) > 1 else "numpy"
    try:
        comm = get_communicator(backend)
    except Exception as error:  # before there is a communicator: one line, as the CLI does
        print(f"moco-ref: error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"rank {comm.rank} size {comm.size} {type(comm).__name__} mpi4py={'mpi4py' in sys.modules}", flush=True)
    run_or_abort(comm, comm.barrier)
