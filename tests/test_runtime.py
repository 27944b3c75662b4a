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
