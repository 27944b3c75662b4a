"""What `pip install .` installs: a wheel of exactly two top-level packages, moco_ref and backends, whose CLI
works from a fresh environment without the clone.

The wheel is built offline (setuptools from this environment, no build isolation) from a copy of the working
tree, so the build leaves nothing in the repository.  It is then installed, non-editable, into a new venv with
the system site-packages (for numpy and click), and run from outside the clone: `moco-ref bench --help`
exits 0, the benchmarks import from the installed package, and neither import pulls in torch.
"""

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Build outputs and caches of the working tree: never part of a wheel, and stale egg-info would mislead setuptools.
NOT_SOURCES = shutil.ignore_patterns(".git", "build", "dist", "runs", "*.egg-info", "__pycache__", ".pytest_cache",
                                     ".hypothesis", ".venv*", "venv*")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from a copy of the working tree."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed here: the wheel cannot be built offline")
    source = tmp_path_factory.mktemp("source") / "moco-ref"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                           "--no-index", "-q", "-w", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = out.glob("moco_ref-*.whl")
    return path


def top_level_names(wheel_path: Path) -> set[str]:
    """The first path component of every file in the wheel, less its .dist-info folder."""
    with zipfile.ZipFile(wheel_path) as archive:
        names = {name.split("/", 1)[0] for name in archive.namelist()}
    return {name for name in names if not name.endswith(".dist-info")}


@pytest.mark.slow
def test_wheel_holds_exactly_moco_ref_and_backends(wheel):
    assert top_level_names(wheel) == {"moco_ref", "backends"}
    with zipfile.ZipFile(wheel) as archive:
        assert "moco_ref/bench/cli_entry.py" in archive.namelist()  # the benchmarks travel inside moco_ref


@pytest.mark.slow
def test_installed_wheel_runs_moco_ref_bench_help_outside_the_clone(wheel, tmp_path):
    venv = tmp_path / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                          capture_output=True, text=True, timeout=120)
    if made.returncode != 0:
        pytest.skip(f"cannot create a venv here: {made.stderr.strip().splitlines()[-1:]}")
    python, moco_ref = venv / "bin" / "python", venv / "bin" / "moco-ref"
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    # --force-reinstall: an editable moco-ref in the system site-packages must not stand in for the wheel.
    installed = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                                "--force-reinstall", str(wheel)], capture_output=True, text=True, env=env, timeout=120)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    helped = subprocess.run([str(moco_ref), "bench", "--help"], cwd=tmp_path, capture_output=True, text=True,
                            env=env, timeout=60)
    assert helped.returncode == 0, helped.stdout + helped.stderr
    assert "SUITE" in helped.stdout

    check = ("import sys, moco_ref.cli.main, moco_ref.bench.cli_entry as entry; "
             "print(entry.__file__); print('torch' in sys.modules)")
    imported = subprocess.run([str(python), "-c", check], cwd=tmp_path, capture_output=True, text=True, env=env,
                              timeout=60)
    assert imported.returncode == 0, imported.stderr
    location, torch_imported = imported.stdout.split()
    assert Path(location).is_relative_to(venv), f"moco_ref.bench came from {location}, not the installed wheel"
    assert torch_imported == "False", "importing moco_ref's CLI and benchmarks imported torch"
