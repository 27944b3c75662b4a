"""The ``moco-ref`` command: ``python -m moco_ref ...`` and the console script both start here.

The process-wide settings that must precede NumPy's import come first (moco_ref/runtime.py: under
``mpiexec``, each process's BLAS threads), then the command line of moco_ref/cli.py.
"""

from moco_ref.runtime import share_cores_between_processes


def main() -> None:
    share_cores_between_processes()
    from moco_ref.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
