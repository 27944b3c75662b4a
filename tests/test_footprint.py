"""Memory known in advance: the estimate a run makes before its first step, and what it refuses.

The estimate is checked against the arrays a real step holds at its peak (Python's tracemalloc, which
NumPy reports its buffers to: exact and independent of the allocator); ``moco-ref bench memory`` sets
it against the process's resident memory.
"""

import tracemalloc

import numpy as np
import pytest
from helpers import error_line, run_cli

from backends import ops
from moco_ref.moco import MoCo
from moco_ref.run import footprint

TINY_TRAIN = ["--width", "2", "--moco-dim", "8", "--image-size", "16", "--knn-every", "0", "--max-steps", "1"]


@pytest.mark.parametrize(
    "arch,width,batch,size,symmetric,mlp",
    [("resnet10", 8, 32, 32, False, False), ("resnet18", 8, 16, 32, False, True), ("resnet10", 8, 32, 32, True, False)],
)
def test_the_estimate_is_the_memory_a_step_holds(monkeypatch, arch, width, batch, size, symmetric, mlp):
    """The parts' sum (before the allocator's slack) within 15 % of the peak of the arrays alive in a step: as the
    step runs here (with the ``fast`` extra, the thin convolutions keep their input instead of an im2col matrix),
    and with every convolution's im2col matrix kept (the plain formula), the estimate made without a backend."""
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)

    def traced_peak():
        model = MoCo(arch=arch, width=width, dim=32, K=512, bn_splits=1, symmetric=symmetric, mlp=mlp, dtype="float32")
        model.step(x, x)  # compiled kernels loaded and caches warmed outside the trace
        del model
        tracemalloc.start()
        try:
            model = MoCo(
                arch=arch, width=width, dim=32, K=512, bn_splits=1, symmetric=symmetric, mlp=mlp, dtype="float32"
            )
            model.step(x, x + 0.1)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    def estimate(xp):
        return sum(footprint.step_bytes(arch, width, 32, mlp, 512, batch, size, "float32", symmetric, xp).values())

    as_run = (estimate(np), traced_peak())
    table = ops._fast_table(np)
    for name in ("conv2d_forward", "conv2d_backward"):
        monkeypatch.delitem(table, name, raising=False)
    with_im2col = (estimate(None), traced_peak())
    assert estimate(np) == with_im2col[0]
    for (value, peak), what in ((as_run, "as run"), (with_im2col, "im2col everywhere")):
        assert 0.85 <= value / peak <= 1.15, (
            f"estimate {value / 1e6:.1f} MB vs traced peak {peak / 1e6:.1f} MB ({what})"
        )


def test_the_estimate_grows_as_the_run_does():
    base = sum(footprint.step_bytes("resnet10", 8, 128, False, 4096, 64, 32, "float32").values())
    for change in ({"K": 8192}, {"batch": 128}, {"width": 16}, {"image_size": 64}, {"dtype": "float64"}):
        args = {
            "arch": "resnet10",
            "width": 8,
            "dim": 128,
            "mlp": False,
            "K": 4096,
            "batch": 64,
            "image_size": 32,
            "dtype": "float32",
            **change,
        }
        assert sum(footprint.step_bytes(**args).values()) > base, change


def test_size_text_reads_as_a_person_would_write_it():
    assert footprint.size_text(512) == "512 B"
    assert footprint.size_text(1.5 * 2**30) == "1.5 GiB"
    assert footprint.size_text(931 * 2**40) == "931 TiB"


def test_check_fits_says_what_it_needs_what_there_is_and_what_to_reduce():
    from moco_ref.errors import UserError

    footprint.check_fits({"queue": 10}, None, "host", "--moco-k")  # nothing known: nothing refused
    footprint.check_fits({"queue": 10}, 100, "host", "--moco-k")
    with pytest.raises(UserError) as refused:
        footprint.check_fits({"queue": 3 * 2**40, "activations": 2**30}, 2**30, "host", "--moco-k")
    message = str(refused.value)
    assert "needs about 3.8 TiB of host memory" in message and "queue 3.8 TiB" in message
    assert "1.0 GiB is available" in message and message.endswith("reduce --moco-k")


@pytest.mark.parametrize(
    "flag,value,part", [("--moco-k", "1000000000000", "queue"), ("--image-size", "1000000", "activations")]
)
def test_a_run_that_cannot_fit_is_refused_in_one_line_before_anything_is_written(capsys, tmp_path, flag, value, part):
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "--out", out, flag, value], capsys)
    line = error_line(code, err, "needs about", "PiB of host memory", part, "is available", "reduce --moco-k")
    assert "Traceback" not in line
    assert not out.exists()


def test_data_that_cannot_fit_is_refused_in_one_line(capsys, tmp_path, monkeypatch):
    import moco_ref.run.footprint as module

    monkeypatch.setattr(
        module, "host_available_bytes", lambda: 1 << 20
    )  # 1 MiB: the step fits (no check), the data not
    monkeypatch.setattr(module, "check_step_fits", lambda *args, **kwargs: {})
    monkeypatch.setattr("moco_ref.run.trainer.check_step_fits", lambda *args, **kwargs: {})
    code, _, err = run_cli(["train", "--out", tmp_path / "run", *TINY_TRAIN], capsys)
    error_line(code, err, "needs about", "of host memory", "data", "the number of images")


def test_running_out_of_memory_during_training_is_one_line(capsys, tmp_path, monkeypatch):
    def no_memory(self, x_q, x_k, **schedule):
        raise MemoryError("Unable to allocate 37.7 MiB for an array")

    monkeypatch.setattr(MoCo, "step", no_memory)
    code, _, err = run_cli(["train", "--out", tmp_path / "run", *TINY_TRAIN], capsys)
    assert code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]  # after the line that announces the run
    for phrase in (
        "moco-ref: error: out of host memory at step 0",
        "batch 64",
        "Unable to allocate",
        "reduce --batch-size",
    ):
        assert phrase in last, last
