"""Speed measurements of moco-ref: ``moco-ref bench`` (moco_ref/cli/bench.py; ``python -m moco_ref.bench`` runs
the same command), figures only: the tests never time anything.

Importing this package imports neither torch nor CuPy: PyTorch's twin (moco_ref/pytorch_moco.py) is imported only
when a suite compares with it, and the measurement records live in the repository's ``benchmarks/`` folder.
"""
