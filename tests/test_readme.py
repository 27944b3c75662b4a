"""The README's Python API example runs as written, and its layout names what is there."""

import re
from pathlib import Path

import numpy as np


def test_readme_python_api_example_runs():
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = re.search(r"## The Python API\n\n```python\n(.*?)```", text, re.S).group(1)
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert np.isfinite(float(namespace["stats"]["loss"]))
    assert namespace["out"].shape == (8, 128)
    assert namespace["queue"].ptr == 8 and namespace["oldest_first"].shape == (4096, 128)
    assert np.isclose(namespace["p"].sum(), 1.0)


def layout_paths(section: str) -> list[tuple[str, str]]:
    """(as written, path from the repository root) for each path in the Layout list: a name with a slash is
    from the root (and, ending in '/', the folder for the bare names after it in its item); a bare file name
    (`ops.py`) lies in the folder last named before it."""
    found = []
    for item in re.split(r"\n(?=- )", section.strip()):
        folder = ""
        for name in re.findall(r"`([^`]+)`", item):
            if not re.fullmatch(r"[\w./-]+", name):
                continue
            if "/" in name:
                found.append((name, name))
                if name.endswith("/"):
                    folder = name
            elif re.search(r"\.(py|md|sh|json|toml|png)$", name):
                found.append((name, folder + name))
    return found


def test_every_path_in_the_readme_layout_exists():
    """The README's "Layout" list names real files and folders, and every folder of moco_ref/."""
    root = Path(__file__).resolve().parent.parent
    text = (root / "README.md").read_text()
    section = re.search(r"^## Layout\n(.*?)(?=^## )", text, re.S | re.M).group(1)
    paths = layout_paths(section)
    assert len(paths) >= 30, f"the README's layout names only {len(paths)} paths: {paths}"
    missing = [f"{written} (read as {path})" for written, path in paths if not (root / path).exists()]
    assert not missing, f"the README's layout names what is not there: {missing}"
    named = {path.rstrip("/") for _, path in paths}
    folders = sorted(
        f"moco_ref/{d.name}" for d in (root / "moco_ref").iterdir() if d.is_dir() and (d / "__init__.py").exists()
    )
    unnamed = [folder for folder in folders if folder not in named]
    assert not unnamed, f"the README's layout does not name these folders of moco_ref: {unnamed}"


def test_the_layout_reader_reads_bare_names_in_the_folder_named_before_them():
    section = "- `moco_ref/`: `moco.py`, `MoCo.step`; `moco_ref/run/`: `trainer.py`\n- `tests/` and `conftest.py`\n"
    assert layout_paths(section) == [
        ("moco_ref/", "moco_ref/"),
        ("moco.py", "moco_ref/moco.py"),
        ("moco_ref/run/", "moco_ref/run/"),
        ("trainer.py", "moco_ref/run/trainer.py"),
        ("tests/", "tests/"),
        ("conftest.py", "tests/conftest.py"),
    ]
