"""``python -m moco_ref.bench [suite] [--backend numpy|cupy] [--quick] [--out FILE]``: the benchmarks without
the CLI (``moco-ref bench`` runs the same suites)."""

from __future__ import annotations

import argparse
import shlex
import sys

from backends import BackendUnavailable
from moco_ref.bench.cli_entry import CHOICES, run


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m moco_ref.bench", description="Speed and memory figures of moco-ref (and PyTorch's step)."
    )
    parser.add_argument("suite", nargs="?", default="all", choices=CHOICES, help="which suite (default: all)")
    parser.add_argument("--backend", default="numpy", choices=("numpy", "cupy"))
    parser.add_argument("--quick", action="store_true", help="fewer configurations and repetitions")
    parser.add_argument("--out", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    try:
        run(
            args.suite,
            args.backend,
            args.quick,
            args.out,
            print,
            command=shlex.join(["python", "-m", "moco_ref.bench", *argv]),
        )
    except BackendUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. --out in a folder that cannot be written
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
