"""The paths a user gives: a folder of the user's own is never written into, a file of the user's is never
replaced without --force, and a path the operating system refuses (a name or a whole path too long, a
component that is a file, a loop of symbolic links, no permission) ends in one line that names it, with
the OS's reason, at every entry point that takes a path.

Each fault runs ``moco-ref`` in this process and asserts: exit code 2, one line on stderr naming the path,
no traceback, and every file and folder that existed before byte for byte unchanged (nothing made either).
No permission cannot be had for real as root: it is injected where the OS would answer it (``os.stat`` of
the path, which fails with EACCES when a folder above it may not be searched).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import error_line, mount, run_cli, write_image_folder

from moco_ref.paths import check_output

TINY = [
    "--image-size",
    "16",
    "--width",
    "2",
    "-b",
    "8",
    "--moco-k",
    "20",
    "--moco-dim",
    "8",
    "--bn-splits",
    "2",
    "--log-every",
    "1",
    "--knn-every",
    "0",
    "--max-steps",
    "1",
]
LONG_NAME = "n" * 300  # one name beyond the file system's 255 bytes
DEEP = "/".join(["d" * 200] * 21)  # names that fit, a whole path beyond PATH_MAX


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def run(tmp_path_factory, data):
    """A finished run of one step on the tiny folder."""
    from moco_ref.cli.main import main

    run_dir = tmp_path_factory.mktemp("runs") / "run"
    with (
        contextlib.redirect_stderr(io.StringIO()),
        contextlib.redirect_stdout(io.StringIO()),
        pytest.raises(SystemExit) as exit_,
    ):
        main(["train", "--data", str(data), *TINY, "--epochs", "1", "--out", str(run_dir)])
    assert exit_.value.code == 0
    return run_dir


@pytest.fixture
def places(tmp_path, data, run):
    """The paths a fault is made of, in tmp_path: a file, a loop of links, a folder of the user's (with a
    config.json and a metrics.jsonl of the user's, the names of a run's files), files of the user's with the
    names an --out would write."""
    (tmp_path / "a_file").write_text("the user's file\n")
    os.symlink(tmp_path / "loop_b", tmp_path / "loop_a")
    os.symlink(tmp_path / "loop_a", tmp_path / "loop_b")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    os.mkfifo(tmp_path / "fifo")
    user = tmp_path / "user"
    user.mkdir()
    (user / "config.json").write_text('{"the user\'s": "settings"}\n')
    (user / "metrics.jsonl").write_text('{"the user\'s": "log"}\n')
    shutil.copy(run / "checkpoint_last.npz", user / "downloaded.npz")
    for name in ("mine.npz", "mine.png", "mine.json"):
        (tmp_path / name).write_bytes(b"the user's " + name.encode())
    return {
        "tmp": tmp_path,
        "data": data,
        "run": run,
        "file": tmp_path / "a_file",
        "loop": tmp_path / "loop_a",
        "dangling": tmp_path / "dangling",
        "fifo": tmp_path / "fifo",
        "almost": tmp_path / ("x" * 250),
        "user": user,
        "long": tmp_path / LONG_NAME,
        "deep": tmp_path / DEEP,
    }


def tree(*roots) -> dict:
    """Every folder, file and link under ``roots``: {path: what it is and holds} (files by their hash)."""
    seen = {}
    for root in roots:
        for folder, folders, files in os.walk(root):
            seen[folder] = "folder"
            for name in folders + files:
                path = os.path.join(folder, name)
                if os.path.islink(path):
                    seen[path] = "link to " + os.readlink(path)
                elif os.path.isfile(path):
                    seen[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return seen


# (the command line, with {places}; the path the line must name; a phrase of the reason)
FAULTS = {
    "train --out: a name of 300 bytes": (
        ["train", *TINY, "--data", "{data}", "--out", "{long}"],
        "{long}",
        "File name too long",
    ),
    "train --out: beyond PATH_MAX": (
        ["train", *TINY, "--data", "{data}", "--out", "{deep}"],
        "{deep}",
        "File name too long",
    ),
    "train --out: below a file": (
        ["train", *TINY, "--data", "{data}", "--out", "{file}/run"],
        "{file}/run",
        "Not a directory",
    ),
    "train --out: a loop of links": (
        ["train", *TINY, "--data", "{data}", "--out", "{loop}/run"],
        "{loop}/run",
        "Too many levels of symbolic links",
    ),
    "train --out: a link to nothing": (
        ["train", *TINY, "--data", "{data}", "--out", "{dangling}"],
        "{dangling}",
        "does not exist",
    ),
    "train --out: a FIFO": (["train", *TINY, "--data", "{data}", "--out", "{fifo}"], "{fifo}", "Not a directory"),
    "train --out: below /dev/null": (
        ["train", *TINY, "--data", "{data}", "--out", "/dev/null/run"],
        "/dev/null/run",
        "Not a directory",
    ),
    "train --out: the user's folder": (
        ["train", *TINY, "--data", "{data}", "--out", "{user}"],
        "{user}",
        "config.json",
    ),
    "train --out: a run": (["train", *TINY, "--data", "{data}", "--out", "{run}"], "{run}", "--resume"),
    "train --resume into the user's folder": (
        ["train", "--resume", "{run}", "--out", "{user}"],
        "{user}",
        "no run wrote",
    ),
    "train --resume: a checkpoint in the user's folder": (
        ["train", "--resume", "{user}/downloaded.npz"],
        "{user}",
        "config.json",
    ),
    "train --resume: a name of 300 bytes": (["train", "--resume", "{long}"], "{long}", "File name too long"),
    "train --resume: below a file": (["train", "--resume", "{file}/run"], "{file}/run", "Not a directory"),
    "train --data: a name of 300 bytes": (
        ["train", *TINY, "--data", "{long}", "--out", "{tmp}/new"],
        "{long}",
        "File name too long",
    ),
    "train --data: a loop of links": (
        ["train", *TINY, "--data", "{loop}", "--out", "{tmp}/new"],
        "{loop}",
        "Too many levels of symbolic links",
    ),
    "eval knn --checkpoint: too long": (["eval", "knn", "--checkpoint", "{long}"], "{long}", "File name too long"),
    "eval linear --checkpoint: below a file": (
        ["eval", "linear", "--checkpoint", "{file}/run"],
        "{file}/run",
        "Not a directory",
    ),
    "export --out: too long": (
        ["export", "--checkpoint", "{run}", "--out", "{long}.npz"],
        "{long}.npz",
        "File name too long",
    ),
    "export --out: below a file": (
        ["export", "--checkpoint", "{run}", "--out", "{file}/e.npz"],
        "{file}/e.npz",
        "Not a directory",
    ),
    "export --out: a loop of links": (
        ["export", "--checkpoint", "{run}", "--out", "{loop}/e.npz"],
        "{loop}/e.npz",
        "Too many levels of symbolic links",
    ),
    "export --out: a name that fits, its temporary file's does not": (
        ["export", "--checkpoint", "{run}", "--out", "{almost}.npz"],
        "{almost}.npz",
        "File name too long",
    ),
    "export --out: the user's file": (
        ["export", "--checkpoint", "{run}", "--out", "{tmp}/mine.npz"],
        "{tmp}/mine.npz",
        "--force",
    ),
    "plot RUN_DIR: too long": (["plot", "{long}"], "{long}", "File name too long"),
    "plot --out: below a file": (["plot", "{run}", "--out", "{file}/c.png"], "{file}/c.png", "Not a directory"),
    "plot --out: the user's file": (["plot", "{run}", "--out", "{tmp}/mine.png"], "{tmp}/mine.png", "--force"),
    "show embedding --out: too long": (
        ["show", "embedding", "{run}", "--out", "{long}.png"],
        "{long}.png",
        "File name too long",
    ),
    "show neighbours RUN: a loop of links": (
        ["show", "neighbours", "{loop}"],
        "{loop}",
        "Too many levels of symbolic links",
    ),
    "show views --out: the user's file": (["show", "views", "--out", "{tmp}/mine.png"], "{tmp}/mine.png", "--force"),
    "ablate --out: too long": (
        ["ablate", "momentum", *TINY, "--data", "{data}", "--values", "0", "--out", "{long}"],
        "{long}",
        "File name too long",
    ),
    "ablate --out: below a file": (
        ["ablate", "momentum", *TINY, "--data", "{data}", "--values", "0", "--out", "{file}/a"],
        "{file}/a",
        "Not a directory",
    ),
    "ablate --out: a FIFO": (
        ["ablate", "momentum", *TINY, "--data", "{data}", "--values", "0", "--out", "{fifo}"],
        "{fifo}",
        "Not a directory",
    ),
    "ablate --out: the user's folder": (
        ["ablate", "momentum", *TINY, "--data", "{data}", "--values", "0", "--out", "{user}"],
        "{user}",
        "config.json",
    ),
    "bench step --out: below a file": (
        ["bench", "step", "--quick", "--out", "{file}/b.json"],
        "{file}/b.json",
        "Not a directory",
    ),
    "bench step --out: the user's file": (
        ["bench", "step", "--quick", "--out", "{tmp}/mine.json"],
        "{tmp}/mine.json",
        "--force",
    ),
    "bench gpu --out: too long": (["bench", "gpu", "--out", "{long}.json"], "{long}.json", "File name too long"),
    "bench learn --out: a loop of links": (
        ["bench", "learn", "--out", "{loop}/r.json"],
        "{loop}/r.json",
        "Too many levels of symbolic links",
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_path_the_os_refuses_or_a_users_file_is_one_line_naming_it_and_nothing_changes(fault, places, capsys):
    words, named, reason = FAULTS[fault]
    before = tree(places["tmp"], places["run"], places["data"])
    code, _, err = run_cli([word.format(**places) for word in words], capsys)
    assert "Traceback" not in err
    error_line(code, err, named.format(**places), reason)
    assert tree(places["tmp"], places["run"], places["data"]) == before


@pytest.mark.parametrize(
    "words",
    [
        ["train", *TINY, "--data", "{data}", "--out", "{tmp}/locked/run"],
        ["export", "--checkpoint", "{run}", "--out", "{tmp}/locked/e.npz"],
        ["eval", "knn", "--checkpoint", "{tmp}/locked/run"],
    ],
    ids=["train --out", "export --out", "eval --checkpoint"],
)
def test_no_permission_is_one_line_naming_the_path(words, places, capsys, monkeypatch):
    locked = places["tmp"] / "locked"
    locked.mkdir()
    stat = os.stat

    def refusing_stat(path, *args, **kwargs):
        if str(path).startswith(str(locked) + os.sep):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", refusing_stat)
    before = tree(places["tmp"], places["run"])
    code, _, err = run_cli([word.format(**places) for word in words], capsys)
    monkeypatch.undo()
    error_line(code, err, str(locked), "permission denied")
    assert tree(places["tmp"], places["run"]) == before


@pytest.mark.parametrize(
    "words",
    [
        ["train", *TINY, "--data", "{data}", "--out", "{read_only}/run"],
        ["export", "--checkpoint", "{run}", "--out", "{read_only}/e.npz"],
        ["show", "views", "--out", "{read_only}/v.png"],
        ["ablate", "momentum", *TINY, "--data", "{data}", "--values", "0", "--out", "{read_only}/a"],
    ],
    ids=["train --out", "export --out", "show views --out", "ablate --out"],
)
def test_a_read_only_file_system_is_one_line_naming_the_path(words, places, capsys):
    """A real read-only bind mount (skipped where this machine does not allow mounting)."""
    source, view = places["tmp"] / "source", places["tmp"] / "read_only"
    source.mkdir()
    view.mkdir()
    mount("--bind", source, view)
    try:
        mount("-o", "remount,bind,ro", view)
        before = tree(places["tmp"], places["run"])
        code, _, err = run_cli([word.format(**places, read_only=view) for word in words], capsys)
        assert tree(places["tmp"], places["run"]) == before
    finally:
        subprocess.run(["umount", "-l", view], capture_output=True, check=False)
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 3, err
    assert code == 2 and str(view) in err.strip().splitlines()[-1] and "read-only" in err, err


def test_force_replaces_the_users_file_that_export_names(places, capsys):
    mine = places["tmp"] / "mine.npz"
    code, out, err = run_cli(["export", "--checkpoint", places["run"], "--out", mine, "--force"], capsys)
    assert code == 0, err
    assert mine.read_bytes() != b"the user's mine.npz" and f"wrote {mine}" in out


def test_a_run_goes_into_a_new_folder_an_empty_one_or_its_own(places, capsys):
    empty = places["tmp"] / "empty"
    empty.mkdir()
    for out in (places["tmp"] / "new" / "run", empty):
        code, _, err = run_cli(["train", *TINY, "--data", places["data"], "--out", out], capsys)
        assert code == 0, err
        assert (out / "checkpoint_last.npz").is_file()
    code, _, err = run_cli(["train", "--resume", empty, "--max-steps", "2"], capsys)
    assert code == 0, err


def test_check_output_makes_nothing(tmp_path):
    with pytest.raises(Exception, match="File name too long"):
        check_output(tmp_path / "a" / "b" / LONG_NAME)
    assert list(tmp_path.iterdir()) == []


def test_a_trainer_built_in_python_refuses_the_users_folder_before_it_writes(places):
    """The refusal belongs to the run directory, so the Python API (``Trainer.run``) gets it too."""
    from moco_ref.errors import RunDirectoryError
    from moco_ref.run.config import TrainConfig
    from moco_ref.run.trainer import Trainer

    config = TrainConfig(
        data=str(places["data"]),
        image_size=16,
        width=2,
        batch_size=8,
        K=20,
        dim=8,
        bn_splits=2,
        epochs=1,
        knn_every=0,
        max_steps=1,
    )
    before = tree(places["tmp"])
    with pytest.raises(RunDirectoryError, match="config.json"):
        Trainer(config, places["user"], log=lambda line: None).run()
    assert tree(places["tmp"]) == before
