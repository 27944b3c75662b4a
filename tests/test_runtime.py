"""The allocator setting of the command line: safe to call, and a no-op where glibc is absent."""

import ctypes.util
import sys

import numpy as np

from moco_ref import runtime


def test_reuse_freed_memory_reports_whether_it_applied():
    applied = runtime.reuse_freed_memory()
    assert isinstance(applied, bool)
    if sys.platform.startswith("linux") and ctypes.util.find_library("c"):
        assert applied  # glibc accepts both thresholds
    a = np.ones((1 << 22,), dtype=np.float32)   # big arrays still allocate, compute and free normally
    assert float(a.sum()) == float(1 << 22)


def test_reuse_freed_memory_is_a_no_op_without_a_c_library(monkeypatch):
    monkeypatch.setattr(runtime.ctypes.util, "find_library", lambda name: None)
    assert runtime.reuse_freed_memory() is False


def test_processes_on_one_host_share_its_cores_between_their_blas():
    from moco_ref.runtime import share_cores_between_processes

    env = {"PMI_SIZE": "4", "MPI_LOCALNRANKS": "2"}
    assert share_cores_between_processes(env, cores=8) == 4
    assert env["OPENBLAS_NUM_THREADS"] == env["OMP_NUM_THREADS"] == "4"
    assert share_cores_between_processes({"PMI_SIZE": "2"}, cores=2) == 1       # no local size: the world's
    assert share_cores_between_processes({"PMI_SIZE": "3"}, cores=2) == 1       # never below one thread
    assert share_cores_between_processes({}, cores=8) is None                   # one process: untouched
    chosen = {"PMI_SIZE": "2", "OMP_NUM_THREADS": "3"}
    assert share_cores_between_processes(chosen, cores=8) is None and "OPENBLAS_NUM_THREADS" not in chosen
