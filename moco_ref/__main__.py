"""The ``moco-ref`` command: ``python -m moco_ref ...`` and the console script both start here.

The process-wide settings that must precede NumPy's import come first (moco_ref/run/runtime.py: under
``mpiexec``, each process's BLAS threads), then the command line of moco_ref/cli/main.py.
"""

from __future__ import annotations

from moco_ref.run.runtime import share_cores_between_processes


def main(argv: list[str] | None = None) -> None:
    """Runs ``moco-ref`` with ``argv`` (default: this process's arguments)."""
    share_cores_between_processes()
    from moco_ref.cli.main import main as cli_main

    cli_main(argv)


if __name__ == "__main__":
    main()
