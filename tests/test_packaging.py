"""What `pip install .` installs: a wheel of exactly two top-level packages, moco_ref and backends, whose CLI
works from a fresh environment without the clone.

The wheel is built offline (setuptools from this environment, no build isolation) from a copy of the working
tree, so the build leaves nothing in the repository.  It is then installed, non-editable, into a new venv that
sees this interpreter's packages (for numpy, pillow and click), and run from outside the clone: `moco-ref bench --help`
exits 0, the benchmarks import from the installed package, and neither import pulls in torch.
"""

import importlib.util
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Build outputs and caches of the working tree: never part of a wheel, and stale egg-info would mislead setuptools.
NOT_SOURCES = shutil.ignore_patterns(
    ".git", "build", "dist", "runs", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", ".venv*", "venv*"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from a copy of the working tree."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed here: the wheel cannot be built offline")
    source = tmp_path_factory.mktemp("source") / "moco-ref"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
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
        assert "moco_ref/bench/suites.py" in archive.namelist()  # the benchmarks travel inside moco_ref


def parent_site_packages() -> list[str]:
    """The site-packages folders on this interpreter's path: in a venv, the venv's own (and the base's where the
    venv was made with --system-site-packages); with the system or a conda Python, theirs."""
    candidates = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
    return [folder for folder in candidates if folder in sys.path]


def venv_seeing_these_packages(venv: Path) -> Path:
    """A new venv at `venv` whose path ends with this interpreter's site-packages, so it finds numpy, pillow and
    click wherever they are installed here; its own site-packages comes first.  Its Python, or a skip.

    A .pth file of plain folders, not `--system-site-packages`: from a venv's interpreter the latter shows the
    base interpreter's packages, not the venv's.  The folders' own .pth files are not run, so an editable
    moco-ref installed here does not stand in for the wheel.
    """
    made = subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], capture_output=True, text=True, timeout=120
    )
    if made.returncode != 0:
        pytest.skip(f"cannot create a venv here: {made.stderr.strip().splitlines()[-1:]}")
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "parent_site_packages.pth").write_text("".join(f"{folder}\n" for folder in parent_site_packages()))
    return python


@pytest.mark.slow
def test_installed_wheel_runs_moco_ref_bench_help_outside_the_clone(wheel, tmp_path):
    pip_version = subprocess.run(
        [sys.executable, "-m", "pip", "--version"], capture_output=True, text=True, timeout=60
    ).stdout.split()[1:2]
    if not pip_version or tuple(int(part) for part in pip_version[0].split(".")[:2]) < (22, 3):
        pytest.skip(f"pip {pip_version} has no --python (pip 22.3 and later): `python -m pip install -U pip`")
    venv = tmp_path / "venv"
    python, moco_ref = venv_seeing_these_packages(venv), venv / "bin" / "moco-ref"
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    # This interpreter's pip installs into the venv (--python): the venv needs no pip of its own.  pip leaves the
    # editable moco-ref installed here alone ("outside environment"); the wheel goes first on the venv's path.
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr

    helped = subprocess.run(
        [str(moco_ref), "bench", "--help"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60
    )
    assert helped.returncode == 0, helped.stdout + helped.stderr
    assert "SUITE" in helped.stdout

    check = (
        "import sys, moco_ref.cli.main, moco_ref.bench.suites as entry; "
        "print(entry.__file__); print('torch' in sys.modules)"
    )
    imported = subprocess.run(
        [str(python), "-c", check], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60
    )
    assert imported.returncode == 0, imported.stderr
    location, torch_imported = imported.stdout.split()
    assert Path(location).is_relative_to(venv), f"moco_ref.bench came from {location}, not the installed wheel"
    assert torch_imported == "False", "importing moco_ref's CLI and benchmarks imported torch"
