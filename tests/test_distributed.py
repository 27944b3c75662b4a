"""The communicator seam (moco_ref/parallel/communicator.py): one process in this process, two processes under mpiexec.

The two-process tests launch the scripts of tests/mpi/ with ``mpiexec -n 2`` (each script checks its own
results and prints "ok"); they are skipped when mpi4py or mpiexec is missing. Every launch runs in its
own process group, which is killed if it outlives its timeout, so a hung job never outlives the test.
The failure tests measure how long the job takes to end after the failing rank fails, and print it
(``pytest -s`` shows it); their 20 s limit is the hang detector of the brief, not a speed assertion.
The NCCL communicator needs GPUs and is not tested here.
"""

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import MPIEXEC, mpi_env, needs_mpi

from moco_ref.errors import UserError
from moco_ref.parallel.communicator import Communicator, SingleProcess
from moco_ref.parallel.environment import launcher_world_size
from moco_ref.parallel.launch import get_communicator, run_or_abort
from moco_ref.parallel.mpi import MPICommunicator
from moco_ref.parallel.nccl import NCCLCommunicator

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "tests" / "mpi"


def _clean_env(**extra):
    return mpi_env(ROOT, **extra)


def launch(script, *args, ranks=2, timeout=60, env=None):
    """Runs ``[mpiexec -n ranks] python tests/mpi/<script> args``; returns (returncode, stdout, stderr, seconds).

    ``ranks=None`` runs the script as a plain process, without a launcher.
    """
    command = [sys.executable, str(SCRIPTS / script), *args]
    if ranks is not None:
        command = [MPIEXEC, "-n", str(ranks), *command]
    start = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env or _clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the launcher and every rank: they share its new session
        out, err = process.communicate()
        pytest.fail(f"{' '.join(command)} still ran after {timeout} s\nstdout:\n{out}\nstderr:\n{err}")
    return process.returncode, out, err, time.monotonic() - start


def _time_printed(out, label):
    """The time.time() a script printed as '<label> <t>'."""
    lines = [line for line in out.splitlines() if line.startswith(label)]
    assert lines, f"no line starting with {label!r} in:\n{out}"
    return float(lines[0].split()[-1])


# ----------------------------------------------------------------- one process, in this process
def test_single_process_collectives_are_the_identity():
    comm = SingleProcess()
    assert (comm.rank, comm.size, comm.local_rank) == (0, 1, 0)
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(4, np.float32)
    before = [a.copy(), b.copy()]
    comm.allreduce_sum_([a, b])
    assert np.array_equal(a, before[0]) and np.array_equal(b, before[1])
    x = np.zeros((3, 2))
    assert comm.allgather(x) is x
    assert comm.bcast_host(x) is x
    means = comm.allreduce_host_mean([1, 2.5])
    assert means == [1.0, 2.5] and all(isinstance(v, float) for v in means)
    comm.barrier()


def test_single_process_abort_exits_with_the_code():
    with pytest.raises(SystemExit) as exit_info:
        SingleProcess().abort(3)
    assert exit_info.value.code == 3


@pytest.mark.parametrize(
    "arrays, what",
    [
        ([np.arange(4)], "int64"),
        ([np.zeros(2, np.int32)], "int32"),
        ([np.zeros(2, np.float16)], "float16"),
        ([np.zeros(2, np.float32), np.zeros(2, np.float64)], "float64"),
        ([np.zeros(2, np.float32), [1.0, 2.0]], "list"),
    ],
)
def test_allreduce_refuses_anything_but_one_float_dtype(arrays, what):
    with pytest.raises(ValueError, match=what):
        SingleProcess().allreduce_sum_(arrays)


def test_allgather_refuses_a_scalar():
    with pytest.raises(ValueError, match="shape"):
        SingleProcess().allgather(np.float32(1.0))


def test_launcher_world_size_reads_each_launchers_variable():
    assert launcher_world_size({}) == 1
    assert launcher_world_size({"PMI_SIZE": "4"}) == 4  # MPICH hydra, Intel MPI
    assert launcher_world_size({"OMPI_COMM_WORLD_SIZE": "3"}) == 3  # Open MPI
    assert launcher_world_size({"PMIX_SIZE": "2"}) == 2
    assert launcher_world_size({"PMIX_RANK": "0"}) == 1  # a rank alone says nothing
    assert launcher_world_size({"PMI_SIZE": "x"}) == 1


def test_run_or_abort_single_process_reraises_and_returns():
    comm = SingleProcess()
    assert run_or_abort(comm, lambda a, b=0: a + b, 2, b=3) == 5
    with pytest.raises(UserError, match="no such folder"):
        run_or_abort(comm, _raise, UserError("no such folder"))


def _raise(error):
    raise error


class _Recorder(Communicator):
    """Rank 1 of 2 whose abort records the code instead of ending the job."""

    rank, size = 1, 2

    def abort(self, code=1):
        self.code = code
        raise SystemExit(code)


@pytest.mark.parametrize(
    "error, code, first_line",
    [
        (
            UserError("the data folder /nowhere does not exist"),
            2,
            "[rank 1] moco-ref: error: the data folder /nowhere does not exist",
        ),
        (RuntimeError("a bug"), 1, "[rank 1] Traceback (most recent call last):"),
        (KeyboardInterrupt(), 130, "[rank 1] interrupted"),
        (SystemExit(4), 4, "[rank 1] exit 4"),
    ],
)
def test_run_or_abort_reports_with_the_rank_and_aborts_with_the_code(capsys, error, code, first_line):
    comm = _Recorder()
    with pytest.raises(SystemExit):
        run_or_abort(comm, _raise, error)
    assert comm.code == code
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == first_line
    assert all(line.startswith("[rank 1] ") for line in lines)
    if code == 1:
        assert lines[-1] == "[rank 1] RuntimeError: a bug"
    else:
        assert len(lines) == 1


def test_run_or_abort_lets_a_clean_exit_through():
    comm = _Recorder()
    with pytest.raises(SystemExit) as exit_info:
        run_or_abort(comm, _raise, SystemExit(0))
    assert exit_info.value.code == 0 and not hasattr(comm, "code")


def test_missing_mpi4py_is_one_user_error(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # `import mpi4py` now raises ImportError
    with pytest.raises(UserError) as error_info:
        get_communicator("numpy")
    assert str(error_info.value) == (
        "launched with 2 processes but mpi4py is not installed; pip install 'moco-ref[mpi]'"
    )


def test_bad_moco_ref_comm_is_a_user_error(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setenv("MOCO_REF_COMM", "gloo")
    with pytest.raises(UserError, match="MOCO_REF_COMM"):
        get_communicator("numpy")


@pytest.mark.parametrize("size", [None, "1"])
def test_one_process_gets_single_process_without_importing_mpi4py(size):
    env = _clean_env(**({"PMI_SIZE": size} if size else {}))
    code, out, err, _ = launch("choose.py", ranks=None, env=env)
    assert code == 0, err
    assert out.strip() == "rank 0 size 1 SingleProcess mpi4py=False"


def test_module_import_does_not_import_mpi4py_or_cupy():
    code = "import sys, moco_ref.parallel.launch; print('mpi4py' in sys.modules, 'cupy' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=60
    ).stdout
    assert out.strip() == "False False"


# ----------------------------------------------------------------- two processes, under mpiexec
@needs_mpi
def test_mpi_collectives_sum_gather_broadcast_and_mean():
    code, out, err, _ = launch("collectives.py")
    assert code == 0, f"stdout:\n{out}\nstderr:\n{err}"
    assert "ok rank 0" in out and "ok rank 1" in out


@needs_mpi
def test_get_communicator_under_mpiexec_is_mpi():
    code, out, err, _ = launch("choose.py", "numpy")
    assert code == 0, err
    # The ranks' lines reach mpiexec's stdout in any order (and hydra may join them without the newline).
    found = sorted(re.findall(r"rank (\d) size (\d) (\w+) mpi4py=(True|False)", out))
    assert found == [("0", "2", "MPICommunicator", "True"), ("1", "2", "MPICommunicator", "True")], out


@needs_mpi
def test_moco_ref_comm_mpi_gives_host_staged_mpi_for_cupy():
    code, out, err, _ = launch("choose.py", "cupy", env=_clean_env(MOCO_REF_COMM="mpi"))
    assert code == 0, err
    assert out.count("MPICommunicator") == 2


@needs_mpi
@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed here")
def test_nccl_without_cupy_aborts_the_job_with_one_line_per_rank():
    code, out, err, _ = launch("choose.py", "cupy")
    assert code == 2, f"stdout:\n{out}\nstderr:\n{err}"
    assert "moco-ref: error: the NCCL communicator needs CuPy" in err
    assert "Traceback" not in err


@needs_mpi
def test_world_size_mismatch_is_a_user_error():
    # PMI_SIZE=2 without a launcher: MPI starts as a singleton, of size 1.
    code, out, err, _ = launch("choose.py", ranks=None, env=_clean_env(PMI_SIZE="2"))
    assert code == 2, f"stdout:\n{out}\nstderr:\n{err}"
    assert "PMI_SIZE=2 says 2 processes but MPI sees 1" in err


@needs_mpi
@pytest.mark.parametrize(
    "kind, code, message",
    [
        ("user", 2, "[rank 1] moco-ref: error: the data folder /nowhere does not exist"),
        ("bug", 1, "[rank 1] RuntimeError: a bug on rank 1"),
    ],
)
def test_an_error_on_one_rank_ends_the_job(kind, code, message):
    returncode, out, err, seconds = launch("abort_on_error.py", kind, timeout=20)
    after = time.time() - _time_printed(out, "failing at")
    print(f"\nabort ({kind}): mpiexec ended {after:.2f} s after rank 1 raised ({seconds:.2f} s in all)")
    assert returncode == code, f"stdout:\n{out}\nstderr:\n{err}"  # hydra's mpiexec passes the abort code on
    assert message in err.splitlines()
    assert "passed the collective" not in out


@needs_mpi
def test_a_killed_rank_ends_the_job():
    returncode, out, err, seconds = launch("killed_rank.py", timeout=20)
    after = time.time() - _time_printed(out, "killing at")
    print(f"\nSIGKILL: mpiexec ended {after:.2f} s after rank 1 was killed ({seconds:.2f} s in all)")
    assert returncode != 0, f"stdout:\n{out}\nstderr:\n{err}"
    assert "passed the second collective" not in out


def test_the_interface_is_complete_on_every_implementation():
    members = ("allreduce_sum_", "allgather", "bcast_host", "allreduce_host_mean", "barrier", "abort")
    for cls in (SingleProcess, MPICommunicator, NCCLCommunicator):
        for name in members:
            assert getattr(cls, name) is not getattr(Communicator, name), f"{cls.__name__}.{name} is not implemented"


@pytest.mark.parametrize("rank", [0, 1])
def test_the_roles_of_a_process_are_chosen_from_its_rank_alone(rank, tmp_path, capsys):
    """Rank 0 writes, prints with the function given, shows and measures; rank 1 gets objects that do nothing."""
    from moco_ref.progress import NoProgress, Progress
    from moco_ref.run.directory import ReadOnlyRunDirectory, RunDirectory, RunLock
    from moco_ref.run.monitor import Monitor, NoMonitor
    from moco_ref.run.roles import roles
    from moco_ref.run.tensorboard import NoTensorBoard, TensorBoard

    class Rank(Communicator):
        size = 2

    comm = Rank()
    comm.rank = rank
    role = roles(comm, say=print, tensorboard=True)
    role.say("spoken")
    assert capsys.readouterr().out == ("spoken\n" if rank == 0 else "")
    writer = rank == 0
    assert (role.directory, role.progress, role.monitor, role.tensorboard) == (
        (RunDirectory, Progress, Monitor, TensorBoard)
        if writer
        else (ReadOnlyRunDirectory, NoProgress, NoMonitor, NoTensorBoard)
    )
    lock = RunLock.acquire(tmp_path)  # the run directory is in use: rank 0 refuses it, rank 1 leaves that to rank 0
    try:
        if writer:
            with pytest.raises(UserError, match="in use|another process|is training"):
                role.directory(tmp_path).refuse_if_in_use()
        else:
            role.directory(tmp_path).refuse_if_in_use()
    finally:
        lock.release()
