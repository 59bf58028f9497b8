"""The fork server: workers forked from one preloaded process, each as confined as a new one.

Two submissions graded one after the other: the first leaves every trace it
can (memory, modules, files, environment, RNG state, threads); the second,
forked from the same server, must find none of them and see exactly what a
worker started as a new Python sees. Plus: the same layers, the same verdicts,
the server's own channel out of reach, and a server that dies is the grader's
fault, never the student's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from grader import sandbox
from grader.harness.engine import run_checks
from grader.sandbox import forkserver
from tests.conftest import REFERENCE
from tests.test_hostile import wait_for_no_sandbox

pytestmark = [pytest.mark.slow, pytest.mark.alone]  # grades whole submissions in sandboxed workers;
# alone: it scans the whole machine, or times itself, so it runs after the corpus's pool

ONLY = "rnn_step_forward_public"

#: At import: everything a submission could leave behind for the next one.
LEAVES_TRACES = """
import os as _os, sys as _sys, random as _random, types as _types, torch as _torch
_torch._capgrade_left = True
_torch.tanh = lambda x: x  # a monkeypatch the next submission must not inherit
_sys.modules["capgrade_left_module"] = _types.ModuleType("capgrade_left_module")
_os.environ["CAPGRADE_LEFT"] = "1"
for _where in (".", "/tmp", "/dev/shm"):
    open(_os.path.join(_where, "capgrade_left.txt"), "w").write("left")
_torch.rand(1000)  # draws from the generator
_torch.manual_seed(123)
_random.seed(123)
_torch.set_num_threads(2)
_kept = _torch.ones(40_000_000, dtype=_torch.float64)  # 320 MB, held by the module
_torch.tanh = _torch.nn.functional.tanh
"""

#: At import: what this worker sees, printed when the check calls rnn_step_forward.
OBSERVES = """
import json as _json, os as _os, random as _random, resource as _resource, sys as _sys
import numpy as _np, torch as _torch

def _rss_mib():
    for _line in open("/proc/self/status"):
        if _line.startswith("VmRSS:"):
            return int(_line.split()[1]) / 1024

def _fd_kinds():
    kinds = []
    for _fd in sorted(_os.listdir("/proc/self/fd"), key=int):
        try:
            kinds.append(_os.readlink("/proc/self/fd/" + _fd).split(":")[0])
        except OSError:
            pass
    return kinds

_OBSERVED = {
    "env": dict(_os.environ),
    "environ_block": open("/proc/self/environ", "rb").read().decode(errors="replace"),
    "torch_left": hasattr(_torch, "_capgrade_left"),
    "tanh_patched": _torch.tanh(_torch.tensor([2.0])).item() == 2.0,
    "module_left": "capgrade_left_module" in _sys.modules,
    "files": sorted(_p for _p in ("capgrade_left.txt", "/tmp/capgrade_left.txt",
                                  "/dev/shm/capgrade_left.txt") if _os.path.exists(_p)),
    "initial_seed": _torch.initial_seed(),
    "torch_draws": _torch.rand(3, generator=None).tolist(),
    "python_draw": _random.random(),
    "numpy_draw": float(_np.random.rand()),
    "threads": _torch.get_num_threads(),
    "rss_mib": _rss_mib(),
    "address_space": _resource.getrlimit(_resource.RLIMIT_AS)[0],
    "fd_kinds": _fd_kinds(),
    "pid": _os.getpid(),
    "cwd": _os.getcwd(),
    "sys_path": _sys.path,
    "tempdir": __import__("tempfile").gettempdir(),
    "visible_pids": sorted(int(_p) for _p in _os.listdir("/proc") if _p.isdigit()),
}
_torch.set_num_threads(2)  # a parallel op in a fork of a process that has a thread running
_OBSERVED["parallel_sum"] = float(_torch.ones(2000, 2000).matmul(_torch.ones(2000, 1)).sum())
_torch.set_num_threads(_OBSERVED["threads"])

_real_step = rnn_step_forward
def rnn_step_forward(*args, **kwargs):
    print("OBSERVED " + _json.dumps(_OBSERVED))
    return _real_step(*args, **kwargs)
"""


def _write(folder: Path, extra: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "rnn_lstm_captioning.py"
    path.write_text(REFERENCE.read_text() + extra)
    return path


def _observed(result) -> dict:
    assert result.status == "graded", result.message
    check = next(c for c in result.checks if c.id == ONLY)
    assert check.status == "passed", check.message
    line = next(s for s in check.output.splitlines() if s.startswith("OBSERVED "))
    return json.loads(line.removeprefix("OBSERVED "))


@pytest.fixture(scope="module")
def traced(tmp_path_factory) -> dict:
    """A dirty submission, then an observer, both forked from one server; and a cold observer."""
    forkserver.shutdown()
    root = tmp_path_factory.mktemp("fork")
    dirty = run_checks(_write(root / "dirty", LEAVES_TRACES + OBSERVES), only=ONLY)
    server = forkserver.holder().server
    clean = run_checks(_write(root / "clean", OBSERVES), only=ONLY)
    again = run_checks(_write(root / "again", OBSERVES), only=ONLY)
    assert forkserver.holder().server is server and server is not None and server.forks >= 3
    os.environ["CAPGRADE_FORKSERVER"] = "0"
    try:
        cold = run_checks(_write(root / "cold", OBSERVES), only=ONLY)
    finally:
        del os.environ["CAPGRADE_FORKSERVER"]
    return {"dirty": _observed(dirty), "clean": _observed(clean), "again": _observed(again),
            "cold": _observed(cold), "results": (dirty, clean, cold)}


def test_nothing_of_a_submission_reaches_the_next_one(traced):
    dirty, clean = traced["dirty"], traced["clean"]
    assert dirty["torch_left"] and dirty["module_left"] and len(dirty["files"]) == 3
    assert not clean["torch_left"] and not clean["tanh_patched"] and not clean["module_left"]
    assert clean["files"] == []
    assert "CAPGRADE_LEFT" not in clean["env"]


def test_a_fork_sees_the_environment_a_new_worker_sees(traced):
    clean, cold = traced["clean"], traced["cold"]
    def relative(seen: dict) -> dict:  # each sandbox has its own home, id and user id
        return {k: re.sub(r"uid_\d+", "uid_N", v.replace(seen["env"]["HOME"], "~"))
                for k, v in seen["env"].items() if k != sandbox.SANDBOX_ID_VAR}

    assert relative(clean) == relative(cold)
    assert set(clean["env"]) == set(cold["env"])
    for name in ("cwd", "sys_path", "tempdir"):  # all of them derived from its own home
        assert json.dumps(clean[name]).replace(clean["env"]["HOME"], "~") == \
            json.dumps(cold[name]).replace(cold["env"]["HOME"], "~")
    assert clean["env"]["TORCHINDUCTOR_CACHE_DIR"].startswith(clean["env"]["HOME"])
    assert Path(clean["env"]["HOME"]).name == "home" and clean["env"]["HOME"] != cold["env"]["HOME"]
    # The kernel's view of the environment carries this sandbox's id: stragglers are found.
    sandbox_id = clean["env"][sandbox.SANDBOX_ID_VAR]
    assert f"{sandbox.SANDBOX_ID_VAR}={sandbox_id}" in clean["environ_block"].split("\0")
    assert forkserver.PLACEHOLDER_ID not in clean["environ_block"]


def test_a_fork_starts_from_a_new_process_s_random_state(traced):
    clean, again, dirty = traced["clean"], traced["again"], traced["dirty"]
    # Seeded afresh from the OS, as a new process is: not the previous submission's seed,
    # not the server's (shared by every fork), so two forks differ as two processes do.
    assert dirty["initial_seed"] == 123 and clean["initial_seed"] != 123
    assert clean["initial_seed"] != again["initial_seed"]
    assert clean["torch_draws"] != again["torch_draws"]
    assert clean["python_draw"] != again["python_draw"]
    assert clean["numpy_draw"] != again["numpy_draw"]


def test_threads_as_configured_and_parallel_ops_work_in_a_fork(traced):
    for name in ("clean", "again", "cold"):
        assert traced[name]["threads"] == int(os.environ.get("CAPGRADE_WORKER_THREADS", "1"))
        assert traced[name]["parallel_sum"] == 2000.0 * 2000.0


def test_memory_a_submission_held_is_gone_and_the_limit_holds(traced):
    dirty, clean, cold = traced["dirty"], traced["clean"], traced["cold"]
    assert dirty["rss_mib"] > clean["rss_mib"] + 250  # the 320 MB tensor was there ...
    assert clean["rss_mib"] < cold["rss_mib"] + 100  # ... and is not in the next fork
    assert clean["address_space"] == cold["address_space"] == sandbox.Limits().memory


def test_the_fork_server_s_channel_is_out_of_reach(traced):
    for name in ("clean", "cold"):
        kinds = traced[name]["fd_kinds"]
        assert "socket" not in kinds, kinds
    # Same descriptors as a new worker: stdin/stdout/stderr and the student's pipes.
    def kinds(seen: dict) -> list[str]:
        return [Path(k).name for k in seen["fd_kinds"]]  # its own stderr.log, pipes

    assert kinds(traced["clean"]) == kinds(traced["cold"])


def test_same_layers_recorded_plus_the_fork(traced):
    _, clean, cold = traced["results"]
    forked = [layer for layer in clean.isolation if layer not in cold.isolation]
    assert len(forked) == 1 and "fork server" in forked[0]
    assert [layer for layer in clean.isolation if layer != forked[0]] == cold.isolation
    if os.geteuid() == 0 and sandbox.namespace_flags():
        # A PID namespace of its own: only the sandbox's init, broker and student process.
        for name in ("clean", "cold"):
            assert len(traced[name]["visible_pids"]) == 3 and traced[name]["visible_pids"][0] == 1


def test_a_fork_gives_a_new_worker_s_verdicts(tmp_path, monkeypatch):
    from tests.variants import by_name, write_variant

    write_variant(by_name()["rnn_step_no_tanh"], tmp_path)
    buggy = tmp_path / "rnn_lstm_captioning.py"
    mixed = "rnn_step_forward or word_embedding or temporal_softmax"
    forked = run_checks(buggy, hidden=True, only=mixed)
    monkeypatch.setenv("CAPGRADE_FORKSERVER", "0")
    cold = run_checks(buggy, hidden=True, only=mixed)
    statuses = {c.id: (c.status, c.score, c.message) for c in cold.checks}
    assert statuses == {c.id: (c.status, c.score, c.message) for c in forked.checks}
    assert {s for s, _, _ in statuses.values()} == {"passed", "failed"}


def test_a_dead_fork_server_is_replaced(tmp_path):
    first = run_checks(REFERENCE, only=ONLY)
    server = forkserver.holder().server
    assert first.checks[0].status == "passed" and server is not None
    sandbox.kill_group(server.proc.pid)
    server.proc.wait()
    again = run_checks(REFERENCE, only=ONLY)
    assert [c.status for c in again.checks] == ["passed"]
    assert forkserver.holder().server is not server and forkserver.holder().server.alive()


SLOW_STEP = """
import time as _time
_real_step = rnn_step_forward
def rnn_step_forward(*args, **kwargs):
    _time.sleep(8)
    return _real_step(*args, **kwargs)
"""


def test_a_worker_lost_with_its_fork_server_is_a_regrade_never_a_failure(tmp_path):
    started = len(sandbox.started())
    path = _write(tmp_path / "slow", SLOW_STEP)
    forkserver.get().wait_ready()

    def kill_server_soon() -> None:
        time.sleep(4)  # the check is running: its call sleeps 8 s
        server = forkserver.holder().server
        if server is not None:
            sandbox.kill_group(server.proc.pid)

    killer = threading.Thread(target=kill_server_soon)
    killer.start()
    result = run_checks(path, only=ONLY)
    killer.join()
    check = result.checks[0]
    assert check.status == "error" and check.score == 0.0, check.message
    assert check.regrade == "grader" and "This says nothing about your code" in check.message
    assert wait_for_no_sandbox(started) == []


def test_the_fork_server_goes_when_its_grading_process_does():
    script = ("import os, sys; from grader.sandbox import forkserver; s = forkserver.get(); "
              "s._expect('ready', 180); print(s.proc.pid, flush=True); os._exit(0)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=240, cwd=Path(__file__).resolve().parent.parent)
    pid = int(done.stdout.split()[0])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}").exists() \
        else "gone"
    assert state in ("gone", "Z")


def test_a_notebook_session_s_checks_reuse_its_fork_server(capsys):
    """``check()`` in a kernel: the first call starts the server, the later ones fork."""
    import grader

    forkserver.shutdown()
    first = grader.check("rnn_step_forward", path=str(REFERENCE))
    server = forkserver.holder().server
    assert server is not None and server.alive() and server.forks == 1
    second = grader.check("rnn_step_forward or word_embedding", path=str(REFERENCE))
    assert forkserver.holder().server is server and server.forks == 2
    assert first.score == first.max_score and second.score == second.max_score
    assert any("fork server" in layer for layer in second.isolation)
    assert "rnn_step_forward_public" in capsys.readouterr().out  # the compact table


HOLDS_THE_PROCESS_LIMIT = """
import ctypes as _ctypes, os as _os, time as _time
_real_step = rnn_step_forward
def rnn_step_forward(*args, **kwargs):
    libc = _ctypes.CDLL(None)
    for _ in range(9):  # up to 512 processes: the process limit (256) stops it first
        libc.fork()
    _time.sleep(25)
    return _real_step(*args, **kwargs)
"""


def _sandbox_processes() -> int:
    """Processes of the sandboxes' own user ids (``OWN_UIDS``) and of nobody, now."""
    count = 0
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            uid = os.stat(f"/proc/{entry}").st_uid
        except OSError:
            continue
        count += uid in sandbox.OWN_UIDS or uid == 65534
    return count


@pytest.mark.skipif(os.geteuid() != 0, reason="user switch only as root")
def test_a_fork_bomb_beside_does_not_stop_another_submission(tmp_path):
    """Side by side (batch grading): a sandbox that holds its whole process limit."""
    bomb = _write(tmp_path / "bomb", HOLDS_THE_PROCESS_LIMIT)
    other = subprocess.Popen([sys.executable, "-m", "grader.cli", "check", str(bomb), "--only",
                              ONLY, "--format", "json"], cwd=Path(__file__).parent.parent,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while _sandbox_processes() < 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _sandbox_processes() >= 200, "the bomb never went off"
        result = run_checks(REFERENCE, only="rnn_step_forward or word_embedding")
    finally:
        other.communicate(timeout=120)
    assert result.status == "graded", result.message
    assert {c.status for c in result.checks} == {"passed"}, [c.message for c in result.checks]
