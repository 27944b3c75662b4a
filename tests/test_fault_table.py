"""What a user can give moco-ref, as a table: each fault ends in at most three lines on stderr, with no
traceback and no other library's warning, the exit code the table names, and every file the user had
before byte for byte as it was.

Each row is one fault a user meets: a flag, a path, an image, a checkpoint, a run directory, an
environment variable.  A row's ``setup`` builds what the user had under ``user/`` (a finished tiny run, an
image folder, a file of their own) and returns the command's arguments; what the command may create goes
under ``out/``.  Every row runs ``python -m moco_ref`` in a subprocess, so that the process's own start
(the thread variables, warnings filters, the top-level error handler) is part of what is tested.

The specific behaviour of each kind has its own tests (tests/test_non_finite.py, tests/test_user_paths.py,
tests/test_input_faults.py, tests/test_run_survival.py); this table is the promise across all of them,
and docs/run-directory.md ("What a run survives") lists the same faults with the line each gets.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from helpers import write_image_folder

from moco_ref.run.checkpoint import load_checkpoint, save_checkpoint
from moco_ref.run.directory import LAST_CHECKPOINT, METRICS

ROOT = Path(__file__).resolve().parents[1]
# The tiny recipe: width 2, 8 x 8 crops, batch 32 on the built-in shapes (a second or two an epoch).
TINY = [
    "--width",
    "2",
    "-b",
    "32",
    "--moco-k",
    "64",
    "--moco-dim",
    "8",
    "--image-size",
    "8",
    "--knn-every",
    "0",
    "--epochs",
    "1",
    "--seed",
    "3",
]
# The same on a small image folder (24 training images, batch 8).
TINY_FOLDER = [
    "--width",
    "2",
    "-b",
    "8",
    "--moco-k",
    "16",
    "--moco-dim",
    "8",
    "--image-size",
    "16",
    "--knn-every",
    "0",
    "--epochs",
    "1",
]
# The lines of a run's own log on stderr (its first line, the progress and epoch lines, the kNN monitor), which a
# row that trains (exit 0) prints besides its answer to the fault.
RUN_LOG = re.compile(r"^(training MoCo |resuming |epoch \d|kNN )")
THIRD_PARTY_NOISE = re.compile(r"\w+Warning\b|warnings\.warn|^\s+File \"", re.MULTILINE)


# ----------------------------------------------------------------------------- what a user has
@dataclass
class Desk:
    """Where a row sets up: the user's folder (whose files must survive), out/ for what the command may
    create, and the module's finished tiny run to copy from."""

    user: Path
    out: Path
    tiny_run: Path

    def run(self) -> Path:
        """A copy of the finished tiny run in the user's folder."""
        run = self.user / "run"
        shutil.copytree(self.tiny_run, run)
        return run

    def poisoned(self, array: str = "encoder_q.conv1.weight") -> Path:
        """A finished run whose checkpoint has one float array (the first whose name ends so) all NaN."""
        run = self.run()
        checkpoint = run / LAST_CHECKPOINT
        arrays, meta = load_checkpoint(checkpoint)
        name = next(k for k in arrays if k.endswith(array))
        arrays[name] = np.full_like(arrays[name], np.nan)
        checkpoint.unlink()
        save_checkpoint(checkpoint, arrays, meta)
        return run


@dataclass
class Fault:
    """One row: a name, what the user had and typed (setup), and what the command must answer."""

    name: str
    setup: Callable[[Desk], list]  # -> the command's arguments
    code: int = 2  # the exit code
    says: tuple = ()  # phrases the answer on stderr must hold (lower case)
    env: dict = field(default_factory=dict)  # environment variables of the user's shell
    continues: bool = False  # the row resumes the user's run: user/run grows, keeping its records


def image_folder(user: Path, size: int = 20) -> Path:
    return write_image_folder(user / "images", size=size)


def text_file(path: Path, text: str = "my own notes\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def bomb_folder(user: Path) -> Path:
    """An image folder in which one training image has more pixels than Pillow's decompression limit."""
    from PIL import Image

    root = image_folder(user)
    Image.new("1", (10_000, 10_000)).save(root / "train" / "red" / "huge.png")  # 10^8 pixels, a few kB
    return root


def small_image_folder(user: Path) -> Path:
    """28 x 28 images (MNIST's size), smaller than the default --image-size of 32."""
    return write_image_folder(user / "digits", size=28)


def sliver_folder(user: Path) -> Path:
    """An image folder with a 1-pixel-high image among good ones."""
    from PIL import Image

    root = image_folder(user)
    Image.new("RGB", (40, 1)).save(root / "train" / "green" / "sliver.png")
    return root


def long_name(out: Path) -> Path:
    return out / ("r" * 300)


def symlink_loop(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "a").symlink_to(out / "b")
    (out / "b").symlink_to(out / "a")
    return out / "a" / "run"


# ----------------------------------------------------------------------------- the table
FAULTS = [
    # --- flags
    Fault("lr is NaN", lambda d: ["train", *TINY, "--lr", "nan", "--out", d.out / "r"], says=("--lr",)),
    Fault("lr is inf", lambda d: ["train", *TINY, "--lr", "inf", "--out", d.out / "r"], says=("--lr",)),
    Fault(
        "temperature is NaN", lambda d: ["train", *TINY, "--moco-t", "nan", "--out", d.out / "r"], says=("--moco-t",)
    ),
    Fault(
        "momentum m is -inf", lambda d: ["train", *TINY, "--moco-m", "-inf", "--out", d.out / "r"], says=("--moco-m",)
    ),
    Fault("weight decay is NaN", lambda d: ["train", *TINY, "--wd", "nan", "--out", d.out / "r"], says=("--wd",)),
    Fault(
        "kNN temperature is inf", lambda d: ["train", *TINY, "--knn-t", "inf", "--out", d.out / "r"], says=("--knn-t",)
    ),
    Fault("epochs is zero", lambda d: ["train", *TINY, "--epochs", "0", "--out", d.out / "r"], says=("--epochs",)),
    Fault("unknown arch", lambda d: ["train", *TINY, "--arch", "resnet50", "--out", d.out / "r"], says=("--arch",)),
    # --- data
    Fault(
        "data folder missing",
        lambda d: ["train", *TINY, "--data", d.user / "nowhere", "--out", d.out / "r"],
        says=("nowhere",),
    ),
    Fault(
        "data folder without images",
        lambda d: ["train", *TINY, "--data", text_file(d.user / "empty" / "a.txt").parent, "--out", d.out / "r"],
        says=("empty",),
    ),
    Fault(
        "decompression bomb among the images",
        lambda d: ["train", *TINY_FOLDER, "--data", bomb_folder(d.user), "--out", d.out / "r"],
        code=0,
        says=("huge.png",),
    ),
    Fault(
        "1-pixel-high image among the images",
        lambda d: ["train", *TINY_FOLDER, "--data", sliver_folder(d.user), "--out", d.out / "r"],
        code=0,
        says=("sliver.png",),
    ),
    Fault(
        "28 x 28 images at the default --image-size",
        lambda d: [
            "train",
            "--width",
            "2",
            "-b",
            "8",
            "--moco-k",
            "16",
            "--moco-dim",
            "8",
            "--knn-every",
            "0",
            "--epochs",
            "1",
            "--data",
            small_image_folder(d.user),
            "--out",
            d.out / "r",
        ],
        code=0,
        says=("scaled up",),
    ),
    Fault(
        "one value per channel in a BatchNorm layer",
        lambda d: ["train", *TINY, "-b", "32", "--bn-splits", "32", "--out", d.out / "r"],
        says=("batchnorm",),
    ),
    # --- the run directory and other paths
    Fault(
        "--out is a folder of the user's files",
        lambda d: ["train", *TINY, "--out", text_file(d.user / "mine" / "config.json").parent],
        says=("config.json",),
    ),
    Fault(
        "--out name longer than 255 bytes",
        lambda d: ["train", *TINY, "--out", long_name(d.out)],
        says=("name too long",),
    ),
    Fault(
        "--out inside a file",
        lambda d: ["train", *TINY, "--out", text_file(d.user / "notes.txt") / "run"],
        says=("notes.txt",),
    ),
    Fault(
        "--out through a loop of links",
        lambda d: ["train", *TINY, "--out", symlink_loop(d.out)],
        says=("symbolic links",),
    ),
    Fault("--resume of a missing run", lambda d: ["train", "--resume", d.user / "nowhere"], says=("nowhere",)),
    Fault(
        "--resume of a folder that is not a run",
        lambda d: ["train", "--resume", text_file(d.user / "mine" / "a.txt").parent],
        says=("mine",),
    ),
    Fault(
        "export to a name longer than 255 bytes",
        lambda d: ["export", "--checkpoint", d.run(), "--out", f"{long_name(d.out)}.npz"],
        says=("name too long",),
    ),
    Fault(
        "export over a user's file",
        lambda d: ["export", "--checkpoint", d.run(), "--out", text_file(d.user / "w.npz")],
        says=("w.npz",),
    ),
    Fault(
        "plot into a file's sub-folder",
        lambda d: ["plot", d.run(), "--out", text_file(d.user / "notes.txt") / "c.png"],
        says=("notes.txt",),
    ),
    Fault(
        "ablate into a folder of the user's files",
        lambda d: ["ablate", "momentum", "--out", text_file(d.user / "mine" / "table.md").parent],
        says=("table.md",),
    ),
    Fault(
        "plot of a folder that is not a run",
        lambda d: ["plot", text_file(d.user / "mine" / "a.txt").parent],
        says=("mine",),
    ),
    # --- checkpoints
    Fault(
        "eval knn of a text file",
        lambda d: ["eval", "knn", "--checkpoint", text_file(d.user / "c.npz")],
        says=("c.npz",),
    ),
    Fault(
        "eval knn of a truncated checkpoint",
        lambda d: ["eval", "knn", "--checkpoint", truncated(d.run() / LAST_CHECKPOINT)],
        says=(LAST_CHECKPOINT,),
    ),
    Fault(
        "eval knn of a NaN checkpoint",
        lambda d: ["eval", "knn", "--checkpoint", d.poisoned()],
        says=("nan or infinite", "conv1"),
    ),
    Fault(
        "eval linear of a NaN checkpoint",
        lambda d: ["eval", "linear", "--checkpoint", d.poisoned(), "--epochs", "1"],
        says=("nan or infinite",),
    ),
    Fault(
        "export of a NaN checkpoint",
        lambda d: ["export", "--checkpoint", d.poisoned(), "--out", d.out / "w.npz"],
        says=("nan or infinite",),
    ),
    Fault(
        "resume of a NaN checkpoint",
        lambda d: ["train", "--resume", d.poisoned(), "--epochs", "2"],
        says=("nan or infinite",),
    ),
    Fault(
        "resume of a checkpoint with a NaN queue",
        lambda d: ["train", "--resume", d.poisoned("queue"), "--epochs", "2"],
        says=("nan or infinite", "queue"),
    ),
    Fault(
        "show neighbours of a NaN checkpoint",
        lambda d: ["show", "neighbours", d.poisoned(), "--out", d.out / "n.png"],
        says=("nan or infinite",),
    ),
    Fault(
        "eval linear's lr is NaN",
        lambda d: ["eval", "linear", "--checkpoint", d.run(), "--lr", "nan", "--epochs", "1"],
        says=("--lr",),
    ),
    Fault(
        "eval knn's training data missing",
        lambda d: ["eval", "knn", "--checkpoint", d.run(), "--train-data", d.user / "nowhere"],
        says=("nowhere",),
    ),
    Fault(
        "resume with a setting a resume cannot change",
        lambda d: ["train", "--resume", d.run(), "--moco-k", "32"],
        says=("--moco-k",),
    ),
    Fault(
        "resume after a kill cut metrics.jsonl's last line",
        lambda d: ["train", "--resume", torn_metrics(d.run()), "--epochs", "2", "--max-steps", "63"],
        code=0,
        says=("resuming",),
        continues=True,
    ),
    # --- training that diverges
    Fault(
        "the loss diverges",
        lambda d: ["train", *TINY, "--lr", "1e30", "--log-every", "5", "--out", d.out / "r"],
        says=("step",),
    ),
    # --- other libraries' settings
    Fault(
        "NUMBA_NUM_THREADS is not a number",
        lambda d: ["train", *TINY, "--max-steps", "2", "--out", d.out / "r"],
        code=0,
        says=("numba_num_threads",),
        env={"NUMBA_NUM_THREADS": "abc"},
    ),
    Fault(
        "NUMBA_NUM_THREADS is absurd",
        lambda d: ["train", *TINY, "--max-steps", "2", "--out", d.out / "r"],
        code=0,
        says=("numba_num_threads", "lowered"),
        env={"NUMBA_NUM_THREADS": "100000"},
    ),
    Fault(
        "OMP_NUM_THREADS is negative",
        lambda d: ["train", *TINY, "--max-steps", "2", "--out", d.out / "r"],
        code=0,
        says=("omp_num_threads",),
        env={"OMP_NUM_THREADS": "-3"},
    ),
    Fault(
        "MKL_NUM_THREADS is zero",
        lambda d: ["train", *TINY, "--max-steps", "2", "--out", d.out / "r"],
        code=0,
        says=("mkl_num_threads",),
        env={"MKL_NUM_THREADS": "0"},
    ),
    Fault(
        "a Numba threading layer that cannot start",
        lambda d: ["train", *TINY, "--max-steps", "2", "--out", d.out / "r"],
        says=("numba_threading_layer",),
        env={"NUMBA_THREADING_LAYER": "bogus"},
    ),
    Fault(
        "OPENBLAS_NUM_THREADS is a fraction",
        lambda d: ["train", *TINY, "--max-steps", "2", "--out", d.out / "r"],
        code=0,
        says=("openblas_num_threads",),
        env={"OPENBLAS_NUM_THREADS": "1.5"},
    ),
]


def torn_metrics(run: Path) -> Path:
    """The run, with the last line of its metrics.jsonl cut in half (a kill in the middle of a write)."""
    metrics = run / METRICS
    text = metrics.read_text()
    metrics.write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])
    return run


def truncated(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# ----------------------------------------------------------------------------- the promise
def snapshot(folder: Path) -> dict:
    """Every file and link under folder: its bytes' digest (a link: its target)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            key = str(path.relative_to(folder))
            if path.is_symlink():
                found[key] = "-> " + os.readlink(path)
            elif path.is_file():
                found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                found[key] = "dir"
    return found


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """One finished tiny run on the built-in data (1 epoch), copied by the rows that need a run."""
    run = tmp_path_factory.mktemp("tiny") / "run"
    process = subprocess.run(
        [sys.executable, "-m", "moco_ref", "train", *TINY, "--out", str(run)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=300,
    )
    assert process.returncode == 0, process.stderr
    return run


def clean_env(**extra) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MOCO_REF_", "NUMBA_", "OMP_", "OPENBLAS_NUM", "MKL_", "PYTHONWARNINGS"))
    }
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OPENBLAS_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def test_the_table_is_large_and_names_are_unique():
    assert len(FAULTS) >= 30
    assert len({fault.name for fault in FAULTS}) == len(FAULTS)


@pytest.mark.slow
@pytest.mark.parametrize("fault", FAULTS, ids=[fault.name for fault in FAULTS])
def test_fault(fault: Fault, tmp_path, tiny_run):
    user = tmp_path / "user"
    user.mkdir()
    (tmp_path / "out").mkdir()
    args = [str(a) for a in fault.setup(Desk(user, tmp_path / "out", tiny_run))]
    before = snapshot(user)
    records_before = complete_lines(user / "run" / METRICS) if fault.continues else []
    process = subprocess.run(
        [sys.executable, "-m", "moco_ref", *args],
        capture_output=True,
        text=True,
        env=clean_env(**fault.env),
        cwd=tmp_path,
        timeout=300,
    )
    err = process.stderr
    shown = f"moco-ref {' '.join(args)}\nexit {process.returncode}\nstderr:\n{err}"
    assert process.returncode == fault.code, shown
    assert "Traceback" not in err, shown
    assert not THIRD_PARTY_NOISE.search(err), shown
    answer = [line for line in err.splitlines() if line.strip() and not RUN_LOG.match(line)]
    assert len(answer) <= 3, shown
    for phrase in fault.says:
        assert phrase in err.lower(), f"{phrase!r} not on stderr\n{shown}"
    if fault.continues:
        kept = complete_lines(user / "run" / METRICS)
        assert kept[: len(records_before)] == records_before, f"the run's records were not kept\n{shown}"
        assert len(kept) > len(records_before), shown
    else:
        assert snapshot(user) == before, f"the user's files changed\n{shown}"


def complete_lines(path: Path) -> list[str]:
    """The lines of a file that end in a newline (a line cut short by a kill does not)."""
    return [line for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]
