"""The benchmark suites run end to end at test size and return well-formed figures.

Nothing here is about speed: no assertion reads a clock.  The settings are tiny
(resnet10 of width 2, batch 8, K 64, 8×8 images, one repetition) so that the whole
module checks the plumbing — every suite runs, every figure exists and is a finite
positive number, the JSON file matches the returned dict, the parts wrappers are
removed afterwards, and the analytic FLOP count matches the convolutions a forward
actually runs.  The PyTorch figures are checked only where torch is installed, in
tests marked slow (each imports torch, which takes seconds).  The ``dp`` suite runs
its two-process step under mpiexec and is skipped without mpi4py and mpiexec.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import needs_mpi, run_cli

from moco_ref.bench import data_parallel, memory, parts, step
from moco_ref.bench.flops import conv_layers, step_flops
from moco_ref.bench.machine import blas_info
from moco_ref.bench.suites import IN_ALL, run
from moco_ref.bench.workload import TINY

HAVE_TORCH = importlib.util.find_spec("torch") is not None


def finite_positive(value, what):
    assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, f"{what} = {value!r}"


@pytest.fixture(scope="module")
def run_all(tmp_path_factory):
    """One tiny run of every suite: (returned figures, printed lines, path of the JSON written)."""
    out = tmp_path_factory.mktemp("bench") / "figures.json"
    lines = []
    figures = run(
        "all",
        "numpy",
        quick=True,
        out=str(out),
        echo=lambda *a: lines.append(" ".join(map(str, a))),
        tiny=True,
        command="pytest",
    )
    return figures, lines, out


def test_every_suite_reports_and_the_json_file_holds_the_same_figures(run_all):
    figures, lines, out = run_all
    assert set(IN_ALL) <= set(figures), f"missing suites: {set(IN_ALL) - set(figures)}"
    assert json.loads(out.read_text()) == json.loads(json.dumps(figures, default=str))
    assert any(line.startswith("machine :") for line in lines) and any("command : pytest" in l for l in lines)


def test_header_names_machine_versions_blas_and_threads(run_all):
    header = run_all[0]["header"]
    for key in ("cpu", "cores", "numpy", "blas", "backend", "command", "load_average_start"):
        assert key in header, key
    finite_positive(header["blas"]["threads"], "BLAS threads")


def test_header_names_the_threads_numbas_kernels_ran_on(run_all):
    """Where Numba's kernels ran, the header says on which threading layer and how many threads, and the
    OpenMP waiting settings in force; the first lines printed say the same."""
    header, lines = run_all[0]["header"], run_all[1]
    if "backends.numba_fast" not in (header.get("fast_paths") or []):
        pytest.skip("Numba's kernels are not in use here")
    import numba

    threads = header["kernel_threads"]
    assert threads["layer"] == numba.threading_layer() and threads["threads"] == numba.get_num_threads()
    assert threads.get("GOMP_SPINCOUNT") == os.environ.get("GOMP_SPINCOUNT")
    (fast,) = [line for line in lines if line.startswith("fast    :")]
    assert f"on {threads['threads']} {threads['layer']} threads" in fast


def test_step_figures_are_finite_and_positive(run_all):
    step = run_all[0]["step"]
    finite_positive(step["gemm_peak"]["gflops"], "GEMM peak")
    (record,) = step["configs"]
    assert record["config"] == TINY.as_dict() and "torch" not in record
    finite_positive(record["flops"]["total"], "FLOPs")
    for key in ("median_s", "images_per_s", "gflops", "fraction_of_gemm_peak"):
        finite_positive(record["ours"][key], f"ours {key}")


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
def test_step_compares_with_torch_at_equal_threads():
    """Slow only because it imports torch (seconds); the tiny run above leaves PyTorch out."""
    figures = step.run_step("numpy", lambda *a: None, configs=(TINY,), reps=1, warmup=0, gemm_n=64, gemm_reps=1)
    (record,) = figures["configs"]
    for key in ("median_s", "images_per_s", "gflops", "fraction_of_gemm_peak"):
        finite_positive(record["torch"][key], f"torch {key}")
    finite_positive(record["ratio_time_ours_over_torch"], "time ratio")
    assert figures["torch_threads"] == blas_info()["threads"]


def test_parts_cover_the_step_and_every_wrapper_is_removed(run_all):
    from backends import ops
    from moco_ref.layers import conv
    from moco_ref.models import resnet
    from moco_ref.optim import SGD
    from moco_ref.queue import KeyQueue

    figures = run_all[0]["parts"]
    assert list(figures["parts"]) == list(parts.PART_ORDER)
    for part in (
        "conv forward GEMM",
        "conv backward GEMMs",
        "im2col",
        "BatchNorm moments",
        "BatchNorm output (+ add, ReLU)",
        "BatchNorm backward sums",
        "BatchNorm input gradient",
        "other",
    ):
        finite_positive(figures["parts"][part]["median_s"], part)
    for part in ("im2col", "BatchNorm moments", "BatchNorm output (+ add, ReLU)"):
        finite_positive(figures["parts"][part]["gb_s"], f"{part} GB/s")
    for part in parts.GEMM_PARTS:
        finite_positive(figures["parts"][part]["gflops"], f"{part} GFLOP/s")
    machine = figures["machine"]
    for key in ("bandwidth_one_thread_gb_s", "bandwidth_all_threads_gb_s"):
        finite_positive(machine[key], key)
    finite_positive(figures["augmentation"]["median_s"], "augmentation")
    finite_positive(figures["instrumented_step_s"], "instrumented step")
    # The originals are back: the names in the using modules are the defining modules' functions again.
    assert resnet.conv2d_forward is conv.conv2d_forward and resnet.batchnorm_backward.__module__.endswith("batchnorm")
    assert not hasattr(SGD.step_, "__wrapped__") and not hasattr(KeyQueue.enqueue, "__wrapped__")
    assert ops.im2col.__wrapped__ is ops.im2col.plain  # the dispatcher itself, not a timer around it


def test_parts_count_the_flops_of_every_convolution(run_all):
    """The GEMM table covers every convolution shape of the step, and its forward FLOPs add up to the analytic count
    for the two encoders' forwards."""
    from moco_ref.models import build_encoder

    figures = run_all[0]["parts"]
    encoder = build_encoder(TINY.arch, dim=TINY.dim, width=TINY.width)
    layers = conv_layers(encoder, TINY.size)
    shapes = {(TINY.batch * l["out"] ** 2, l["C"] * l["k"][0] * l["k"][1], l["O"]) for l in layers}
    assert {(r["M"], r["K"], r["O"]) for r in figures["gemm_shapes"]} >= shapes
    assert (
        figures["parts"]["conv forward GEMM"]["flops"]
        >= 2 * step_flops(encoder, TINY.batch, TINY.K, TINY.size)["conv_forward"]
    )
    for record in figures["gemm_shapes"]:
        for product in ("forward", "dW", "dX"):
            finite_positive(record["isolated_gflops"][product], f"{record['M']}x{record['K']}x{record['O']} {product}")


def test_header_names_the_vector_extensions_and_fast_paths(run_all):
    header = run_all[0]["header"]
    assert isinstance(header["vector_extensions"], list)
    assert header["fast_paths"][0] == "backends.numpy_fast"


def test_scaling_reports_every_axis(run_all):
    axes = run_all[0]["scaling"]["axes"]
    assert set(axes) == {"batch", "K", "width"}
    for axis, result in axes.items():
        assert math.isfinite(result["exponent"]) and result["verdict"], axis
        for point in result["points"]:
            finite_positive(point["median_s"], f"{axis}={point[axis]}")
            finite_positive(point["images_per_s"], f"{axis}={point[axis]}")


def test_memory_reports_what_our_step_adds(run_all):
    memory = run_all[0]["memory"]
    for key in ("baseline_rss_bytes", "peak_rss_bytes", "added_bytes"):
        finite_positive(memory["ours"][key], f"ours {key}")
    assert memory["ours"]["config"] == TINY.as_dict()


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
def test_memory_probe_measures_torch_in_a_fresh_process():
    """Slow only because a fresh process imports torch (seconds); the tiny run above probes ours alone."""
    record = memory.probe("torch", TINY, 1, "numpy", threads=1)
    assert record["which"] == "torch" and record["config"] == TINY.as_dict()
    for key in ("baseline_rss_bytes", "peak_rss_bytes", "added_bytes"):
        finite_positive(record[key], f"torch {key}")


def test_augment_compares_both_pipelines_with_training(run_all):
    augment = run_all[0]["augment"]
    assert set(augment["pipelines"]) == {"cifar", "v2"}
    assert augment["training_source"] == "step suite"  # reused from the step suite of the same run
    for name, figures in augment["pipelines"].items():
        finite_positive(figures["images_per_s"], name)
        finite_positive(figures["ratio_augment_over_training"], name)


def test_flop_count_matches_the_convolutions_a_forward_runs(monkeypatch):
    """The analytic conv MACs equal those of the conv2d calls of a real forward (counted from their shapes)."""
    from moco_ref.models import build_encoder, resnet

    encoder = build_encoder("resnet18", dim=16, width=4, seed=0, dtype="float32")
    macs = []
    original = resnet.conv2d_forward

    def counting(x, w, stride=1, padding=0):
        y, cache = original(x, w, stride, padding)
        N, Ho, Wo, O = y.shape
        macs.append(N * Ho * Wo * O * w.shape[1] * w.shape[2] * w.shape[3])
        return y, cache

    monkeypatch.setattr(resnet, "conv2d_forward", counting)
    N, size = 3, 16
    encoder.forward(np.zeros((N, 3, size, size), dtype=np.float32), training=True)
    assert len(macs) == len(conv_layers(encoder, size))
    assert 2 * sum(macs) == step_flops(encoder, N, 32, size)["conv_forward"]


def test_unknown_suite_is_one_clear_error(capsys):
    with pytest.raises(ValueError, match="unknown suite"):
        run("speed", "numpy", True, None, print)
    code, out, err = run_cli(["bench", "speed"], capsys)
    assert code == 2 and "No such command 'speed'" in err, err


def test_python_m_moco_ref_bench_is_moco_ref_bench():
    """``python -m moco_ref.bench ARGS`` runs ``moco-ref bench ARGS``: the same group, the same errors."""
    done = subprocess.run(
        [sys.executable, "-m", "moco_ref.bench", "speed"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and "No such command 'speed'" in done.stderr, done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "moco_ref.bench", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "moco-ref bench learn [--seeds N]" in done.stdout, done.stdout


# ------------------------------------------------------------------ dp: one process against mpiexec -n 2
@needs_mpi
def test_dp_measures_one_process_and_two_under_mpiexec(tmp_path):
    from moco_ref.bench.data_parallel_worker import KINDS
    from moco_ref.moco import MoCo

    out = tmp_path / "dp.json"
    lines = []
    figures = run(
        "dp",
        "numpy",
        quick=True,
        out=str(out),
        echo=lambda *a: lines.append(" ".join(map(str, a))),
        tiny=True,
        command="pytest",
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(figures, default=str))
    dp = figures["dp"]
    config = data_parallel.TINY_DP
    assert dp["config"] == config.as_dict() and dp["torch"] is None and dp["ratio_time_ours_over_torch"] is None
    for key in ("median_s", "images_per_s"):
        finite_positive(dp["one_process"][key], f"one process {key}")
    parallel = dp["data_parallel"]
    assert parallel["processes"] == 2 and parallel["batch_per_rank"] == config.batch // 2
    assert parallel["blas_threads_per_rank"] == [1, 1], "each rank must run one BLAS thread"
    for key in (
        "median_s",
        "images_per_s",
        "comm_median_s",
        "comm_last_rank_median_s",
        "wire_median_s",
        "compute_median_s",
    ):
        finite_positive(parallel[key], f"two processes {key}")
    finite_positive(dp["speedup_over_one_process"], "speed-up")
    # The traffic of one step, from the shapes: the key images and keys of this rank's share, and one
    # vector of every gradient and both encoders' float BatchNorm buffers.
    n, item = config.batch // 2, 4  # float32
    model = MoCo(arch=config.arch, width=config.width, dim=config.dim, K=config.K, bn_splits=1)
    reduced = sum(a.nbytes for a in model.encoder_q.params.values()) + sum(
        b.nbytes for e in (model.encoder_q, model.encoder_k) for b in e.buffers.values() if b.dtype.kind == "f"
    )
    expected = {
        "gradients + BN buffers": (reduced, reduced),
        "key images": (n * 3 * config.size**2 * item, 2 * n * 3 * config.size**2 * item),
        "keys": (n * config.dim * item, 2 * n * config.dim * item),
        "permutation": (config.batch * 8, config.batch * 8),
    }  # int64 indices
    for kind in KINDS:
        traffic = parallel["comm"][kind]
        assert traffic["calls"] == 1, kind
        assert (traffic["bytes_sent"], traffic["bytes_received"]) == expected[kind], kind
        assert traffic["median_s"] > 0 and traffic["wire_median_s"] > 0, kind
    assert any(line.startswith("target 2 processes") for line in lines)


@pytest.mark.slow
@needs_mpi
@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
def test_dp_compares_with_torch():
    """Slow only because it imports torch (seconds); the tiny run above leaves PyTorch out."""
    figures = data_parallel.run_dp("numpy", lambda *a: None, data_parallel.TINY_DP, reps=1, warmup=0)
    finite_positive(figures["torch"]["images_per_s"], "torch images/s")
    for setting in ("one_process", "data_parallel"):
        finite_positive(figures["ratio_time_ours_over_torch"][setting], f"{setting} time ratio")
    assert figures["torch"]["threads"] == blas_info()["threads"]


def test_dp_without_mpi_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setattr(data_parallel, "find_mpiexec", lambda: None)
    code, out, err = run_cli(["bench", "dp"], capsys)
    assert code == 2 and out == "", out
    (line,) = err.strip().splitlines()
    assert "mpiexec" in line and "pip install 'moco-ref[mpi]'" in line
