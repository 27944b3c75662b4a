"""`moco-ref bench` is wired to the benchmark suites (figures only; nothing here looks at speed)."""

import json

import helpers
import pytest

from moco_ref.cli import main


def run_cli(args):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code


def test_bench_help_lists_the_suites(capsys):
    assert run_cli(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    for suite in ("step", "parts", "scaling", "memory", "augment", "all", "gpu"):
        assert suite in out


def test_bench_on_a_missing_backend_is_one_line(capsys):
    helpers.skip_if_cupy_installed()
    assert run_cli(["bench", "step", "--backend", "cupy"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'moco-ref[gpu]'" in err[0]


def test_bench_augment_quick_writes_its_figures(tmp_path, capsys):
    out = tmp_path / "figures.json"
    assert run_cli(["bench", "augment", "--quick", "--out", str(out)]) in (0, None)
    figures = json.loads(out.read_text())
    assert "augment" in figures and "header" in figures
