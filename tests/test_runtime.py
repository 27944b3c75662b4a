"""Process settings: the allocator setting of NumPy's path (safe, a no-op without glibc), the BLAS's idle
threads, and each process's share of the cores under a launcher."""

import ctypes.util
import os
import sys

import numpy as np
import pytest

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


def test_making_the_numpy_backend_applies_the_process_settings():
    """A user of the Python API gets the command's settings: making the NumPy backend (as the model and the trainer
    do) applies the allocator setting and Numba's thread count, and importing a fast path applies nothing."""
    import subprocess

    code = (
        "import backends.cpu as c, backends.numpy_fast, backends.ops as ops; calls = []; "
        "c.reuse_freed_memory = lambda: calls.append('allocator') or True; "
        "import numba, backends.numba_fast as nf; set_threads = nf.set_threads; "
        "nf.set_threads = lambda: calls.append('threads') or set_threads(); "
        "print(calls); import backends; backends.get_backend('numpy'); backends.get_backend('numpy'); print(calls)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["[]", "['allocator', 'threads']"]
    off = subprocess.run(
        [sys.executable, "-c", code], env=dict(os.environ, MOCO_REF_NUMBA="0"), capture_output=True, text=True
    )
    assert off.returncode == 0, off.stderr
    assert off.stdout.splitlines() == ["[]", "['allocator']"]  # Numba's kernels do not run: their threads are not set


def test_importing_moco_ref_lets_openmps_idle_threads_spin_a_moment_unless_the_user_chose():
    """import moco_ref sets GOMP_SPINCOUNT before libgomp loads; a user's spin count or wait policy is kept."""
    import subprocess

    code = (
        "import moco_ref, os; "
        "print(os.environ.get('GOMP_SPINCOUNT'), any('libgomp' in l for l in open('/proc/self/maps')))"
    )
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}

    def run(**extra):
        done = subprocess.run([sys.executable, "-c", code], env=dict(base, **extra), capture_output=True, text=True)
        return done.stdout.split()

    assert run() == ["10000", "False"]  # set, and libgomp not loaded yet: it will read it
    assert run(GOMP_SPINCOUNT="500")[0] == "500"
    assert run(OMP_WAIT_POLICY="passive")[0] == "None"


def test_brief_openmp_waits_says_whether_it_can_still_take_effect():
    from moco_ref.run.runtime import brief_openmp_waits

    env = {}
    loaded = any("libgomp" in line for line in open("/proc/self/maps"))
    assert brief_openmp_waits(env) is (not loaded)
    assert env == {"GOMP_SPINCOUNT": "10000"}
    env = {"OMP_WAIT_POLICY": "active"}
    brief_openmp_waits(env)
    assert env == {"OMP_WAIT_POLICY": "active"}


def test_numbas_kernels_run_on_openmp_where_it_loads_and_on_workqueue_when_asked():
    """Without NUMBA_THREADING_LAYER the kernels run on the layer backends/numba_fast.py picks (OpenMP where
    Numba's OpenMP pool loads); a layer the user names is kept."""
    import subprocess

    pytest.importorskip("numba")
    code = (
        "import moco_ref, numba, numpy as np; from backends import get_backend, numba_fast as nf; "
        "get_backend('numpy'); nf.channel_moments(np.ones((2, 1, 4, 3), np.float32)); "
        "print(numba.threading_layer(), nf.threading_layer())"
    )
    base = {k: v for k, v in os.environ.items() if k not in ("NUMBA_THREADING_LAYER", "MOCO_REF_NUMBA")}

    def run(**extra):
        env = dict(base, **extra)
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)

    used, picked = run().stdout.split()
    assert used == picked
    try:
        from numba.np.ufunc import omppool  # noqa: F401
    except (ImportError, OSError):
        assert picked == "workqueue"
    else:
        assert picked == "omp"
    assert run(NUMBA_THREADING_LAYER="workqueue").stdout.split()[0] == "workqueue"
