"""The CPU-side pieces of scripts/gpu_check.sh: it runs end to end without a GPU, fails honestly, and
writes its three sections to one results file."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import helpers
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_script_reports_each_part_and_fails_without_a_gpu(tmp_path):
    pytest.importorskip("torch")
    helpers.skip_if_cupy_installed()
    env = dict(os.environ, PYTHON=sys.executable)
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    results = (tmp_path / "gpu_results.txt").read_text()
    assert done.returncode == 1, results
    for header in (
        "## 1. GPU tests",
        "## 2. One short epoch on CuPy",
        "## 3. GPU benchmark",
        "## 4. Where",
        "## 5. Data parallel",
    ):
        assert header in results
    assert "no GPU backend here" in results or "skipped" in results  # the GPU tests skip cleanly
    assert "pip install 'moco-ref[gpu]'" in results  # train --backend cupy: one clear line
    assert "Traceback" not in results.split("## 3.")[0]  # no traceback from tests or train
    assert "gpu_check status: 1" in results


def test_gpu_benchmark_module_imports_without_cupy():
    import moco_ref.bench.gpu_compare as gpu

    assert gpu.CONFIG == dict(arch="resnet18", width=64, batch=512, K=4096, dim=128, image=32, bn_splits=1)
