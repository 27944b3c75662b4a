"""Small helpers shared by the tests."""

import numpy as np


def assert_close(actual, expected, rtol: float, what: str) -> None:
    """Asserts moco_ref.tools.gradcheck.relative_error ≤ rtol, naming the worst element on failure."""
    from moco_ref.tools.gradcheck import relative_error

    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shapes differ: {a.shape} vs {e.shape}"
    error, worst = relative_error(a, e)
    if error > rtol:
        raise AssertionError(
            f"{what}: relative error {error:.3e} > {rtol:.0e} at {worst}: got {a[worst]!r}, expected {e[worst]!r}"
        )


def error_line(code: int, err: str, *phrases) -> str:
    """Asserts exit code 2 and exactly one line on stderr, "moco-ref: error: ...", with every phrase."""
    assert code == 2, f"exit code {code}, stderr:\n{err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("moco-ref: error: "), f"expected one error line, got:\n{err}"
    for phrase in phrases:
        assert phrase in lines[0], f"{phrase!r} not in {lines[0]!r}"
    return lines[0]


# bench learn's tiny recipe (tests/test_bench_learn.py, tests/test_bench_control.py) on the image folder of the
# ``folder`` fixture (conftest.py): 3 steps an epoch, 3 epochs (the lr changes each epoch, m each step).
TINY_LEARN = {
    "image_size": 16,
    "width": 2,
    "dim": 8,
    "K": 32,
    "batch_size": 8,
    "bn_splits": 2,
    "epochs": 3,
    "m_cos": True,
    "knn_every": 1,
    "knn_k": 5,
    "seed": 4,
}


def write_image_folder(root, train_per_class: int = 12, val_per_class: int = 4, size: int = 20, seed: int = 0):
    """root/train/{red,green}/*.png and root/val/{red,green}/*.png: noisy images, one dominant colour per class."""
    from pathlib import Path

    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for label, name in enumerate(("red", "green")):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = np.zeros((size, size, 3))
                image[..., label] = 180
                image = np.clip(image + rng.normal(0, 40, image.shape), 0, 255).astype(np.uint8)
                Image.fromarray(image).save(folder / f"{i:03d}.png")
    return root


def skip_if_cupy_installed() -> None:
    """For tests of the no-GPU behaviour: skips where CuPy can be imported."""
    import importlib.util

    import pytest

    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed: this test is for machines without it")


def mount(*arguments) -> None:
    """Runs mount(8); skips the test where this machine does not allow it (not root, no CAP_SYS_ADMIN)."""
    import os
    import shutil
    import subprocess

    import pytest

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting needs root and mount(8)")
    result = subprocess.run(["mount", *map(str, arguments)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount here: {result.stderr.strip()}")


def run_cli(args, capsys) -> tuple:
    """Runs ``moco-ref ARGS`` in-process; returns (exit code, stdout, stderr) of that run alone."""
    from moco_ref.cli.main import main

    capsys.readouterr()  # drop what earlier steps of the test printed
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------- launching several processes
def _find_mpiexec():
    """The mpiexec next to this Python (the `mpich` wheel puts it there), else the first on PATH."""
    import shutil
    import sys
    from pathlib import Path

    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def _skip_without_mpi():
    import importlib.util

    import pytest

    return pytest.mark.skipif(
        not (importlib.util.find_spec("mpi4py") is not None and MPIEXEC),
        reason="needs mpi4py and an mpiexec (pip install 'moco-ref[mpi]')",
    )


MPIEXEC = _find_mpiexec()
needs_mpi = _skip_without_mpi()


def mpi_env(root, **extra):
    """This environment without any launcher's world size or moco-ref switch, one BLAS thread per rank,
    with the checkout ``root`` importable."""
    import os

    from moco_ref.parallel.environment import WORLD_SIZE_VARIABLES

    env = {k: v for k, v in os.environ.items() if k not in WORLD_SIZE_VARIABLES and not k.startswith("MOCO_REF_")}
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OPENBLAS_NUM_THREADS"] = "1"
    env.update(extra)
    return env
