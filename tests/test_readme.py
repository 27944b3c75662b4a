"""The README's Python API example runs as written."""

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


def test_every_path_in_the_readme_layout_table_exists():
    """The "What is where" table names real files and folders (a later name without a slash sits beside the first)."""
    root = Path(__file__).resolve().parent.parent
    text = (root / "README.md").read_text()
    table = re.search(r"## What is where\n\n(.*?)\n\n", text, re.S).group(1)
    missing = []
    for row in table.splitlines()[2:]:
        names = re.findall(r"`([^`]+)`", row.split("|")[1])
        assert names, f"a layout row without a path: {row}"
        first = names[0].rstrip("/")
        for name in names:
            path = root / name if "/" in name.rstrip("/") or name == names[0] else root / Path(first).parent / name
            if not path.exists():
                missing.append(name)
    assert not missing, f"the README's layout table names what is not there: {missing}"
