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
