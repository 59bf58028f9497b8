"""Whose fault a failure is: a limit is the grader's only on the harness's own evidence.

A signal the student's code can send itself, waiting for the sandbox's own
processes, sleeping, or a call that spins whenever it runs are the student's
outcome, with a plain message; only the harness's accounting (the clock, the
sandbox tree's schedstat, the host's OOM counters, the CPU time the grader gave)
makes one the grader's (``GraderLimit``: an error that asks for a regrade).

The first tests decide on synthetic readings (fast, no sandbox); the ``slow``
ones grade hostile submissions, built from the reference the way a student
would write them, in real sandboxes, some on a machine the test itself loads
with busy processes outside any sandbox.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from grader.harness import client
from grader.harness.client import _Watch
from grader.harness.engine import run_checks
from grader.harness.outcome import GraderLimit, WorkerFailure
from grader.sandbox import resources
from grader.sandbox.resources import CpuUsage
from tests.hostile import Hostile

# Alone: it scans the whole machine, or times itself, so it runs after the corpus's pool.
pytestmark = pytest.mark.alone

ATTACKED = "rnn_step_forward_public"
HONEST = "word_embedding_public"
S = 1_000_000_000  # ns


def usage(running: float, waiting: float, cpus: float = 2.0, busiest: float = 0.0) -> CpuUsage:
    return CpuUsage(int(running * S), int(waiting * S), int(busiest * S), cpus)


def plain(running: float, waiting: float) -> CpuUsage:
    """A reading with only what schedstat gives (the CPUs: this machine's)."""
    return CpuUsage(running=int(running * S), waiting=int(waiting * S))


class FakeTree:
    """Readings of a sandbox tree, in turn, for ``resources.tree_usage``; and a clock."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *readings: CpuUsage):
        self.readings = list(readings)
        monkeypatch.setattr(resources, "tree_usage", lambda pid: self.readings.pop(0))


class Proc:
    """A worker process as the watch sees it (hashable, like ``subprocess.Popen``)."""

    def __init__(self, pid: int):
        self.pid = pid


def started(watch: _Watch, seconds_ago: float) -> _Watch:
    watch.started = time.monotonic() - seconds_ago
    return watch


def a_watch(monkeypatch, *readings: CpuUsage) -> _Watch:
    FakeTree(monkeypatch, usage(0, 0), *readings)
    monkeypatch.setattr(resources, "oom_kills", lambda: {"vmstat": 0})
    return _Watch(Proc(12345))


# -- timeouts, on synthetic readings -----------------------------------------------------------


def test_a_sleeping_or_blocked_call_is_not_starved():
    """Sleeping is not runnable: schedstat's wait counts none of it (the import that slept
    and read as 'out of CPU time' waited a few ms more than it ran)."""
    slept = plain(running=0.01, waiting=0.03)
    assert not resources.starved(slept, calibrated=120.0)
    assert resources.timeout_verdict(slept, budget=120.0) == "idle"


def test_the_sandboxs_own_processes_waiting_for_each_other_are_not_starvation():
    """Four busy children pinned to one CPU: the tree used that CPU all the time."""
    assert not resources.starved(plain(running=2.95, waiting=8.85), calibrated=3.0)
    pinned = usage(running=2.95, waiting=8.85, cpus=1.0)
    assert resources.timeout_verdict(pinned, budget=3.0) == "spent"
    # Of 10.5 s of waiting, only what other processes held of its one CPU counts.
    shared = usage(running=1.5, waiting=10.5, cpus=1.0)
    assert resources.waited_for_others(shared, wall=3.0) == pytest.approx(1.5)


def test_a_starved_spin_loop_gets_its_cpu_budget_and_then_is_the_students_timeout(monkeypatch):
    """The measured case: 1.5 s of CPU in 5 s, 3.6 s waiting. Not the grader's yet: the
    call gets more time until it has had 5 s of CPU; it spins on, so it timed out."""
    watch = a_watch(monkeypatch, usage(1.5, 3.6), usage(5.02, 10.0))
    more = started(watch, 5.0).timed_out(5.0, 1.0, "running rnn_forward")
    assert isinstance(more, float) and 5.0 < more <= 15.0, more
    verdict = started(watch, 5.0 + more).timed_out(more, 1.0, "running rnn_forward")
    assert isinstance(verdict, WorkerFailure) and not isinstance(verdict, GraderLimit)
    assert "timed out after 5 s while running rnn_forward" in str(verdict)
    assert "its whole 5 s of CPU" in str(verdict)


def test_a_call_still_short_of_its_budget_at_the_cap_is_the_graders(monkeypatch):
    watch = a_watch(monkeypatch, usage(1.0, 4.0), usage(3.0, 17.0))
    more = started(watch, 5.0).timed_out(5.0, 1.0, "running rnn_forward")
    assert isinstance(more, float)
    cap = resources.OVERTIME_CAP * 5.0
    limit = started(watch, cap).timed_out(more, 1.0, "running rnn_forward")
    assert isinstance(limit, GraderLimit) and limit.resource == "time", limit
    assert "3.0 s of the 5 s of CPU" in limit.detail


def test_a_call_that_stops_running_during_its_extra_time_is_the_students(monkeypatch):
    """Starved at first, then asleep: the waiting no longer explains the missing CPU."""
    watch = a_watch(monkeypatch, usage(2.0, 3.0), usage(2.1, 3.1))
    more = started(watch, 5.0).timed_out(5.0, 1.0, "importing the submission")
    assert isinstance(more, float)
    verdict = started(watch, 5.0 + more).timed_out(more, 1.0, "importing the submission")
    assert type(verdict) is WorkerFailure and "sleeping, blocked" in str(verdict)


def test_an_import_that_slept_is_a_plain_timeout_at_once(monkeypatch):
    watch = a_watch(monkeypatch, usage(0.01, 0.03))
    verdict = started(watch, 120.0).timed_out(120.0, 1.0, "importing the submission")
    assert type(verdict) is WorkerFailure, verdict
    assert "timed out after 120 s while importing the submission" in str(verdict)


# -- deaths, on synthetic readings -------------------------------------------------------------


def test_a_self_sent_sigxcpu_is_the_students(monkeypatch):
    watch = a_watch(monkeypatch)  # the busiest process had used 0 s of CPU
    failure = started(watch, 0.2).died(resources.SIGXCPU, "running rnn_forward", 1800)
    assert type(failure) is WorkerFailure, failure
    assert "SIGXCPU" in str(failure) and "sent it" in str(failure)


def test_the_sandboxs_cpu_limit_is_the_graders_only_when_the_grader_gave_that_much(
        monkeypatch):
    FakeTree(monkeypatch, usage(1799.0, 0.0, busiest=1799.5))
    monkeypatch.setattr(resources, "oom_kills", lambda: {"vmstat": 0})
    proc, ledger = Proc(4242), [0.0]  # the worker's record of what its calls were promised
    watch = _Watch(proc, granted=ledger)
    watch.promise(15.0)  # all the grader gave this worker: its code ran beside its calls
    failure = started(watch, 2.0).died(resources.SIGXCPU, "running rnn_forward", 1800)
    assert type(failure) is WorkerFailure and "beside them" in str(failure), failure
    FakeTree(monkeypatch, usage(1799.0, 0.0, busiest=1799.5))
    again = _Watch(proc, granted=ledger)  # the same worker: the grader's promises add up
    again.promise(1800.0)
    limit = started(again, 2.0).died(resources.SIGXCPU, "running rnn_forward", 1800)
    assert isinstance(limit, GraderLimit) and limit.resource == "cpu", limit


def test_a_kill_by_the_sandboxs_own_memory_limit_is_the_students(monkeypatch):
    """The host's counters see that kill too; the sandbox's own group says whose it was."""
    host = {"vmstat": 3}
    monkeypatch.setattr(resources, "oom_kills", lambda: dict(host))
    FakeTree(monkeypatch, usage(0, 0), usage(0, 0))
    own = iter([{"oom": 0, "oom_kill": 0}, {"oom": 1, "oom_kill": 1}])
    watch = _Watch(Proc(1), memory_events=lambda: next(own))
    unlimited = _Watch(Proc(1))  # no group of its own: any kill is the host's killer's
    host["vmstat"] += 1  # one OOM kill, which the host's counter shows
    failure = watch.died(resources.SIGKILL, "running rnn_forward")
    assert type(failure) is WorkerFailure and "more memory than the sandbox" in str(failure)
    limit = unlimited.died(resources.SIGKILL, "running rnn_forward")
    assert isinstance(limit, GraderLimit) and limit.resource == "memory"


def test_a_kill_while_the_worker_sat_idle_is_the_hosts(monkeypatch):
    """A worker killed for memory between two calls (another worker started beside it) is
    found dead by the next call: the host's counter went up since its last answer."""
    host = {"vmstat": 3}
    monkeypatch.setattr(resources, "oom_kills", lambda: dict(host))
    FakeTree(monkeypatch, usage(0, 0))
    last_answer = dict(host)
    host["vmstat"] += 1  # the kill, before the next request
    watch = _Watch(Proc(1), oom_since=last_answer)
    limit = watch.died(resources.SIGKILL, "running overfit")
    assert isinstance(limit, GraderLimit) and limit.resource == "memory", limit


def test_a_call_reads_its_sandboxs_own_memory_counters(monkeypatch):
    """Every call's watch is given the counters of the sandbox's own memory cgroup."""
    from types import SimpleNamespace

    from grader.harness import client

    monkeypatch.setattr(resources, "oom_kills", lambda: {"vmstat": 0})
    monkeypatch.setattr(resources, "tree_usage", lambda pid: usage(0, 0))
    monkeypatch.setattr(client.cgroup, "counters",
                        lambda sandbox_id: {"oom": 1, "oom_kill": 2, "id": sandbox_id})
    sub = client.Submission(Path(__file__))
    sub.proc = Proc(1)
    sub.sandbox = SimpleNamespace(id="s1", cgroup=Path("/sys/fs/cgroup/memory/capgrade-s1"))
    assert sub._watch().own_memory == {"oom": 1, "oom_kill": 2, "id": "s1"}
    sub.sandbox = SimpleNamespace(id="s2", cgroup=None)  # no group of its own
    assert sub._watch().own_memory is None


# -- the loss file: a reader that fails on the student's file --------------------------------


def _repeating_view(path: Path, values: int) -> Path:
    """23 KB of storage seen as ``values`` values (stride 0): tiny on disk, huge once read."""
    base = torch.linspace(3.0, 0.1, 2900, dtype=torch.float64)
    good = base[:2340].clone()
    torch.save({"rnn_losses": base.as_strided((values,), (0,)), "lstm_losses": good,
                "attn_losses": good}, path)
    return path


def test_a_loss_tensor_that_repeats_its_storage_is_refused_before_it_is_read(tmp_path):
    from grader.course.lossfile import LossFileError
    from grader.worker.lossfile_reader import load_loss_file

    path = _repeating_view(tmp_path / "losses.pt", 4_000_000)
    start = time.monotonic()
    with pytest.raises(LossFileError, match="viewing only 23,200 bytes of storage"):
        load_loss_file(path)
    assert time.monotonic() - start < 5


@pytest.mark.slow
def test_a_loss_file_the_reader_cannot_use_is_the_students_fast(tmp_path):
    from grader.course.lossfile import LossFileError

    path = _repeating_view(tmp_path / "rnn_lstm_attention_submission.pt", 40_000_000)
    start = time.monotonic()
    with pytest.raises(LossFileError) as caught:
        client.read_loss_file(path, 20_000_000)
    took = time.monotonic() - start
    assert "viewing only" in str(caught.value) and took < 40, (took, str(caught.value))


# -- batch grading: the same cause twice is shown, not retried ------------------------------


def _needs_regrade_result(module: Path) -> dict:
    from grader.results import CheckResult, SubmissionResult

    limit = GraderLimit("time", "while running rnn_forward, the worker got 1.0 s of the 5 s "
                        "of CPU its timeout promises in 20.0 s")
    return SubmissionResult(submission=str(module), checks=[
        CheckResult(id="rnn_forward_public", status="error", score=0.0, max_score=2.0,
                    message=limit.student_message(), regrade="time"),
        CheckResult(id="word_embedding_public", status="passed", score=1.0, max_score=1.0),
    ]).to_dict()


@pytest.mark.slow
def test_a_row_that_needs_a_regrade_twice_for_the_same_cause_is_shown_not_retried(
        tmp_path, monkeypatch):
    from concurrent.futures import Future

    from grader.batch import grading
    from grader.harness.request import GradingRequest

    subs = tmp_path / "subs"
    (subs / "ann").mkdir(parents=True)
    module = subs / "ann" / "rnn_lstm_captioning.py"
    module.write_text("def rnn_step_forward(*a):\n    return None\n")
    graded = []

    class Pool:  # the grading of each submission: the machine was too busy, every time
        def __init__(self, *args):
            pass

        def submit(self, entry, *args):
            graded.append(entry["student"])
            future: Future = Future()
            future.set_result({"status": "needs-regrade", "seconds": 1.0,
                               "result": _needs_regrade_result(module),
                               "message": "the grading machine ran out of CPU time"})
            return future

        def completed(self, futures):
            return futures

        def close(self):
            pass

    monkeypatch.setattr(grading, "_LocalPool", Pool)
    options = GradingRequest(hidden=False)
    out = tmp_path / "out"
    first = grading.grade_all(subs, out, workers=1, options=options, progress=False)
    assert first.statuses == {"needs-regrade": 1} and graded == ["ann"]
    second = grading.grade_all(subs, out, workers=1, options=options, progress=False)
    assert second.statuses == {"needs-attention": 1}, second.statuses
    assert "twice in a row" in second.attention["ann"]
    assert "1.0 s of the 5 s of CPU" in second.attention["ann"]  # the harness's evidence
    third = grading.grade_all(subs, out, workers=1, options=options, progress=False)
    assert graded == ["ann", "ann"] and third.skipped == 1  # not retried on every run
    assert third.statuses == {"needs-attention": 1} and "ann" in third.attention
    fourth = grading.grade_all(subs, out, workers=1, options=options, progress=False,
                               regrade=("ann",))  # unless the instructor asks
    assert graded == ["ann"] * 3 and fourth.statuses == {"needs-attention": 1}


def test_a_different_cause_the_second_time_is_tried_again():
    from grader.batch import grading

    def row(status, resource):
        checks = [{"id": "c", "regrade": resource, "message": "m"}] if resource else []
        return {"status": status, "message": "m", "result":
                __import__("json").dumps({"checks": checks})}

    done = {"status": "needs-regrade", "message": "m", "result": {"checks": [
        {"id": "c", "regrade": "memory", "message": "m"}]}}
    assert grading.escalate(row("needs-regrade", "time"), done, "s")["status"] == \
        "needs-regrade"
    assert grading.escalate(row("needs-regrade", "memory"), done, "s")["status"] == \
        "needs-attention"
    assert grading.escalate(row("graded", ""), done, "s")["status"] == "needs-regrade"


# -- hostile submissions in real sandboxes -----------------------------------------------------


#: The tests below load the machine themselves, and it may be busy besides (other work on a
#: shared test machine): a wider cap than the default keeps the verdict the one under test.
ROOMY_CAP = 8.0


@contextlib.contextmanager
def busy_machine(extra: int = 1):
    """Busy loops outside any sandbox, one more than the CPUs: other processes' load."""
    count = len(os.sched_getaffinity(0)) + extra
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(0.3)
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def _grade(tmp_path: Path, case: Hostile, only: str = f"{ATTACKED} or {HONEST}",
           **options) -> dict:
    return {c.id: c for c in run_checks(case.write(tmp_path), only=only, **options).checks}


SELF_SENT = {
    "os_kill": "import os, signal\nos.kill(os.getpid(), signal.SIGXCPU)",
    "libc_kill": "import ctypes, os\nctypes.CDLL(None).kill(os.getpid(), 24)",
}


@pytest.mark.slow
@pytest.mark.parametrize("how", sorted(SELF_SENT))
def test_sigxcpu_the_code_sent_itself_is_its_own_failure(tmp_path, how):
    case = Hostile(f"self_sigxcpu_{how}", "claim the grader's CPU limit", "reference",
                   "the harness's CPU accounting", in_function=SELF_SENT[how])
    checks = _grade(tmp_path, case, timeout=5)
    attacked = checks[ATTACKED]
    assert attacked.status == "error" and attacked.regrade == "", attacked
    assert attacked.score == 0 and "SIGXCPU" in attacked.message, attacked.message
    assert "not your code" not in attacked.message and "Not graded" not in attacked.message
    assert checks[HONEST].passed


@pytest.mark.slow
def test_a_spin_loop_on_a_busy_machine_is_a_timeout_not_a_regrade(tmp_path, monkeypatch):
    monkeypatch.setattr(resources, "OVERTIME_CAP", ROOMY_CAP)
    case = Hostile("spin", "loop forever on a busy machine", "reference", "",
                   in_function="while True:\n    pass")
    with busy_machine():
        start = time.monotonic()
        checks = _grade(tmp_path, case, only=ATTACKED, timeout=3)
        took = time.monotonic() - start
    attacked = checks[ATTACKED]
    assert attacked.status == "error" and attacked.regrade == "", attacked.message
    assert "timed out after 3 s" in attacked.message and "whole 3 s of CPU" in attacked.message
    assert took < 3 * resources.OVERTIME_CAP + 30, took


@pytest.mark.slow
def test_busy_children_of_the_sandbox_do_not_make_it_starved(tmp_path, monkeypatch):
    """Four children pinned to one CPU, the call hanging: the tree used its CPU itself."""
    monkeypatch.setattr(resources, "OVERTIME_CAP", ROOMY_CAP)
    case = Hostile("pinned_children", "starve itself to look starved", "reference", "",
                   in_function=(
                       "import ctypes, os, time\n"
                       "libc = ctypes.CDLL(None)\n"
                       "cpu = min(os.sched_getaffinity(0))\n"
                       "for _ in range(4):\n"
                       "    if libc.fork() == 0:\n"
                       "        os.sched_setaffinity(0, {cpu})\n"
                       "        while True:\n"
                       "            pass\n"
                       "os.sched_setaffinity(0, {cpu})\n"
                       "while True:\n"
                       "    time.sleep(0.05)"))
    checks = _grade(tmp_path, case, only=ATTACKED, timeout=3)
    attacked = checks[ATTACKED]
    assert attacked.status == "error" and attacked.regrade == "", attacked.message
    assert "timed out after 3 s" in attacked.message


@pytest.mark.slow
def test_a_sleep_at_import_is_the_students_import_timeout_once(tmp_path, monkeypatch):
    """Every check (the overfit trainings' side-by-side workers too) says the import timed
    out, after one wait of the import timeout, never a regrade."""
    monkeypatch.setattr(client, "IMPORT_TIMEOUT", 4.0)
    imports = []
    real_start = client.Submission.start

    def start(self):
        imports.append(self.path.name)
        return real_start(self)

    monkeypatch.setattr(client.Submission, "start", start)
    case = Hostile("sleep_at_import", "sleep forever at import", "reference", "",
                   at_import="import time as _t\n_t.sleep(100000)\n")
    path = case.write(tmp_path)
    with busy_machine():
        begun = time.monotonic()
        result = run_checks(path, only=f"{ATTACKED} or {HONEST} or overfit")
        took = time.monotonic() - begun
    assert imports == [path.name], imports  # one import, whichever proxy asked first
    assert result.status == "import-error" and "timed out after 4 s" in result.message
    assert len(result.checks) >= 4 and not result.needs_regrade
    for check in result.checks:
        assert check.status == "failed" and "timed out after 4 s" in check.message, check
    assert took < 60, took


@pytest.mark.slow
def test_an_honest_slow_call_starved_by_the_machine_gets_its_cpu_time_and_passes(
        tmp_path, monkeypatch):
    """About 1 s of CPU under a 1.5 s timeout, with other processes holding half the CPUs:
    the verdict is the idle machine's."""
    monkeypatch.setattr(resources, "OVERTIME_CAP", ROOMY_CAP)
    case = Hostile("slow_but_correct", "", "reference", "",
                   in_function=("import time\n"
                                "t = time.process_time()\n"
                                "while time.process_time() - t < 1.0:\n"
                                "    pass"))
    with busy_machine():
        checks = _grade(tmp_path, case, only=ATTACKED, timeout=1.5)
    assert checks[ATTACKED].passed, checks[ATTACKED].message


def test_signal_names_in_messages():
    from grader.harness import channel

    assert channel.signal_name(int(signal.SIGXCPU)) == "SIGXCPU"
    assert channel.death(128 + 11) == "killed by signal SIGSEGV"


def test_a_tree_queued_on_an_idle_machine_is_not_starved():
    """A fork bomb's tasks queue for the CPUs while the rest of the machine is idle: the
    waiting was for its own processes, whatever schedstat sums (the student's timeout)."""
    queued = CpuUsage(running=int(2.5 * S), waiting=int(30 * S), cpus=2.0,
                      machine=int(4.0 * S))
    assert resources.timeout_verdict(queued, budget=4.0, wall=16.0) == "idle"
    busy = CpuUsage(running=int(2.5 * S), waiting=int(30 * S), cpus=2.0, machine=int(31 * S))
    assert resources.timeout_verdict(busy, budget=4.0, wall=16.0) == "starved"
