"""``python -m moco_ref ...`` is the ``moco-ref`` command (e.g. under ``mpiexec -n 2 python -m moco_ref train``)."""

from moco_ref.runtime import console_main

console_main()
