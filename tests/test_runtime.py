"""Process settings: the allocator setting of NumPy's path (safe, a no-op without glibc), the BLAS's idle
threads, and each process's share of the cores under a launcher."""

import ctypes.util
import sys

import numpy as np

from backends import cpu


def test_reuse_freed_memory_reports_whether_it_applied():
    applied = cpu.reuse_freed_memory()
    assert isinstance(applied, bool)
    if sys.platform.startswith("linux") and ctypes.util.find_library("c"):
        assert applied  # glibc accepts both thresholds
    a = np.ones((1 << 22,), dtype=np.float32)  # big arrays still allocate, compute and free normally
    assert float(a.sum()) == float(1 << 22)


def test_reuse_freed_memory_is_a_no_op_without_a_c_library(monkeypatch):
    monkeypatch.setattr(cpu.ctypes.util, "find_library", lambda name: None)
    assert cpu.reuse_freed_memory() is False


def test_processes_on_one_host_share_its_cores_between_their_blas():
    from moco_ref.run.runtime import share_cores_between_processes

    env = {"PMI_SIZE": "4", "MPI_LOCALNRANKS": "2"}
    assert share_cores_between_processes(env, cores=8) == 4
    assert env["OPENBLAS_NUM_THREADS"] == env["OMP_NUM_THREADS"] == "4"
    assert share_cores_between_processes({"PMI_SIZE": "2"}, cores=2) == 1  # no local size: the world's
    assert share_cores_between_processes({"PMI_SIZE": "3"}, cores=2) == 1  # never below one thread
    assert share_cores_between_processes({}, cores=8) is None  # one process: untouched
    chosen = {"PMI_SIZE": "2", "OMP_NUM_THREADS": "3"}
    assert share_cores_between_processes(chosen, cores=8) is None and "OPENBLAS_NUM_THREADS" not in chosen


def test_importing_moco_ref_first_lets_idle_blas_threads_sleep():
    """import moco_ref sets OPENBLAS_THREAD_TIMEOUT before NumPy loads OpenBLAS; a user's own value is kept."""
    import os
    import subprocess

    code = "import moco_ref, os, sys; print(os.environ['OPENBLAS_THREAD_TIMEOUT'], 'numpy' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["4", "False"]  # set, and NumPy not yet loaded: OpenBLAS will read it
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(env, OPENBLAS_THREAD_TIMEOUT="20"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.split()[0] == "20"


def test_quiet_idle_blas_threads_says_whether_it_can_still_take_effect():
    from moco_ref.run.runtime import quiet_idle_blas_threads

    env = {}
    assert quiet_idle_blas_threads(env) is False  # NumPy is loaded in this process: too late for OpenBLAS
    assert env == {"OPENBLAS_THREAD_TIMEOUT": "4"}


def test_numpy_fast_path_applies_the_allocator_setting_for_api_users():
    """A user of the Python API gets the command's allocator setting: NumPy's fast path applies it on import."""
    import subprocess

    code = (
        "import ctypes, backends.cpu as c; calls = []; c.reuse_freed_memory = lambda: calls.append(1) or True; "
        "import backends.numpy_fast; print(len(calls))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"
