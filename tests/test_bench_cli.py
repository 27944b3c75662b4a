"""`moco-ref bench` is wired to the benchmark suites (figures only; nothing here looks at speed)."""

import json

import helpers
import pytest
from helpers import run_cli


def test_bench_help_lists_the_suites(capsys):
    code, out, _ = run_cli(["bench", "--help"], capsys)
    assert code == 0
    for suite in ("step", "parts", "scaling", "memory", "augment", "all", "gpu", "dp"):
        assert suite in out


@pytest.mark.parametrize("args", [["step", "--backend", "cupy"], ["gpu"]])
def test_bench_on_a_missing_backend_is_one_line(args, capsys):
    helpers.skip_if_cupy_installed()
    code, out, err = run_cli(["bench", *args], capsys)
    assert code == 2
    err = err.strip().splitlines()
    assert len(err) == 1 and "pip install 'moco-ref[gpu]'" in err[0]
    assert "Traceback" not in out


def test_bench_augment_quick_writes_its_figures(tmp_path, capsys):
    out = tmp_path / "figures.json"
    assert run_cli(["bench", "augment", "--quick", "--out", str(out)], capsys)[0] == 0
    figures = json.loads(out.read_text())
    assert "augment" in figures and "header" in figures
