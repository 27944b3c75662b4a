"""``python -m moco_ref.bench ARGS`` is ``moco-ref bench ARGS``: the same click group (moco_ref/cli/bench.py),
started as ``python -m moco_ref`` starts every command.  An entry point, above every layer, like
moco_ref/__main__.py."""

import sys

from moco_ref.__main__ import main

if __name__ == "__main__":
    main(["bench", *sys.argv[1:]])
