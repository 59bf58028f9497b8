"""Warm workers (batch grading): same verdicts as cold ones, one fresh sandbox per submission.

A spare worker started ahead is how workers start where there is no fork
server (``CAPGRADE_FORKSERVER=0``, or after it failed); the fork path has the
same tests in ``test_forkserver.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from grader import sandbox
from grader.batch.grading import DEFAULT_OPTIONS
from grader.harness import client as harness
from grader.harness.engine import run_checks
from grader.harness.workers import WorkerSupply
from tests.conftest import REFERENCE
from tests.test_hostile import leftover_dirs, wait_for_no_sandbox
from tests.variants import by_name, write_variant

pytestmark = [pytest.mark.slow, pytest.mark.alone]  # grades whole submissions in sandboxed workers;
# alone: it scans the whole machine, or times itself, so it runs after the corpus's pool

ONLY = "rnn_step or rnn_forward"

# At import: leave a file in HOME and a mark in the interpreter, for the next one to find.
LEAVES_TRACES = """
import builtins as _b, pathlib as _p
_b._capgrade_left_here = True
_p.Path("left_here.txt").write_text("from the previous submission")
"""

# At import: fail if anything of a previous submission is visible; name the sandbox.
LOOKS_FOR_TRACES = """
import builtins as _b, os as _os, pathlib as _p
if hasattr(_b, "_capgrade_left_here") or _p.Path("left_here.txt").exists():
    raise RuntimeError("a previous submission's traces are visible")
_real_step = rnn_step_forward
def rnn_step_forward(*args, **kwargs):
    print("sandbox", _os.environ.get("CAPGRADE_SANDBOX_ID"))
    return _real_step(*args, **kwargs)
"""


def _statuses(result) -> dict[str, str]:
    return {c.id: c.status for c in result.checks}


@pytest.fixture(autouse=True)
def without_fork_server(monkeypatch):
    monkeypatch.setenv("CAPGRADE_FORKSERVER", "0")


@pytest.fixture
def warm():
    supply = WorkerSupply(keep_warm=True)
    yield supply
    supply.close()


def harness_hidden() -> Path:
    from grader.batch.grading import hidden_path

    return hidden_path(DEFAULT_OPTIONS)


def test_a_warm_worker_gives_the_cold_verdicts(tmp_path):
    write_variant(by_name()["rnn_step_no_tanh"], tmp_path)
    buggy = tmp_path / "rnn_lstm_captioning.py"
    mixed = "rnn_step_forward or word_embedding"  # the bug fails some of these, not all
    cold = run_checks(buggy, hidden=True, only=mixed)
    supply = WorkerSupply(keep_warm=True)
    try:
        supply.prepare(False, harness.grading_secrets(harness_hidden()))
        warm = run_checks(buggy, supply, hidden=True, only=mixed)
    finally:
        supply.close()
    assert _statuses(cold) == _statuses(warm)
    assert "failed" in _statuses(cold).values() and "passed" in _statuses(cold).values()
    assert cold.isolation == warm.isolation


def test_each_submission_gets_the_warm_worker_in_a_fresh_sandbox(tmp_path, warm):
    started = len(sandbox.started())
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "rnn_lstm_captioning.py").write_text(REFERENCE.read_text() + LEAVES_TRACES)
    (second / "rnn_lstm_captioning.py").write_text(REFERENCE.read_text() + LOOKS_FOR_TRACES)
    one = run_checks(first / "rnn_lstm_captioning.py", warm, hidden=True, only=ONLY)
    assert one.status == "graded" and all(s == "passed" for s in _statuses(one).values())
    spare = warm.spare
    assert spare is not None and spare.alive()  # started while the first one was graded
    two = run_checks(second / "rnn_lstm_captioning.py", warm, hidden=True, only=ONLY)
    assert two.status == "graded", two.message  # no trace of the first submission
    assert all(s == "passed" for s in _statuses(two).values())
    step = next(c for c in two.checks if c.id == "rnn_step_forward_public")
    assert f"sandbox {spare.sandbox.id}" in step.output  # it ran in the warm worker
    assert warm.spare is not None and warm.spare is not spare
    warm.discard_spare()
    assert wait_for_no_sandbox(started) == []
    assert leftover_dirs(started) == []


def test_a_dead_warm_worker_is_replaced(tmp_path, warm):
    warm.prepare(False, harness.grading_secrets(harness_hidden()))
    spare = warm.spare
    assert spare is not None
    sandbox.kill_group(spare.proc.pid)
    spare.proc.wait()
    result = run_checks(REFERENCE, warm, hidden=True, only="rnn_step_forward_public")
    assert [c.status for c in result.checks] == ["passed"]
