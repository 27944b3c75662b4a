"""`moco-ref bench` is wired to the benchmark suites (figures only; nothing here looks at speed)."""

import json

import helpers
import pytest
from helpers import run_cli


def test_bench_help_lists_the_suites(capsys):
    code, out, _ = run_cli(["bench", "--help"], capsys)
    assert code == 0
    commands = out.split("Commands:")[1]
    for suite in ("step", "parts", "scaling", "memory", "augment", "all", "gpu", "dp", "learn"):
        assert f"\n  {suite} " in commands, suite
    assert "SUITE" in out and "moco-ref bench learn [--seeds N]" in out


def test_bench_learn_help_explains_the_comparison_and_takes_the_flags_of_train(capsys):
    code, out, _ = run_cli(["bench", "learn", "--help"], capsys)
    assert code == 0
    for phrase in (
        "PyTorch twin",
        "95 % Student-t interval",
        "pip install torch",
        "--seeds",
        "--probe-epochs",
        "--epochs",
        "--data",
        "--moco-k",
        "--bn-splits",
        "--knn-every",
        "--preset",
        "--out",
        "--png",
    ):
        assert phrase in out, phrase


@pytest.mark.parametrize("suite", ["step", "parts", "scaling", "memory", "augment", "all", "dp"])
def test_each_speed_suite_takes_backend_quick_and_out(suite, capsys):
    code, out, _ = run_cli(["bench", suite, "--help"], capsys)
    assert code == 0 and "--backend" in out and "--quick" in out and "--out" in out


@pytest.mark.parametrize("args", [["step", "--backend", "cupy"], ["--backend", "cupy"], ["gpu"]])
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
