"""The grader's limits are never the student's fault: out of memory, starved of CPU, deadline.

The tests that need a memory-limited cgroup make one (root and Linux cgroups, as on
the project's CI machine) and are skipped, saying why, where the host has none.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from grader.harness.judging import require_ok
from grader.harness.outcome import GraderLimit, Outcome
from grader.harness.plugin import _status_and_message
from grader.integrations.container import cgroups_usable, parse_memory, run_limited
from grader.protocol import ErrorInfo
from grader.results import Status
from grader.sandbox import resources
from tests.conftest import REFERENCE, ROOT
from tests.corpus import Call

# Alone: it scans the whole machine, or times itself, so it runs after the corpus's pool.
pytestmark = pytest.mark.alone

NO_CGROUPS = cgroups_usable()
needs_cgroups = pytest.mark.skipif(bool(NO_CGROUPS), reason=NO_CGROUPS or "")
CAPGRADE = [sys.executable, "-c", "import sys; from grader.cli import main; sys.exit(main())"]

#: rnn_step_forward, correct, that first fills 1 GiB: fine on a big machine, an
#: out-of-memory kill in a 1200 MiB container (the worker's torch needs ~600 MiB).
HOG = '''

_course_rnn_step_forward = rnn_step_forward


def rnn_step_forward(x, prev_h, Wx, Wh, b):
    hog = torch.ones(1 << 28)  # 1 GiB of float32, touched
    hog += 1
    return _course_rnn_step_forward(x, prev_h, Wx, Wh, b)
'''


def _hog(folder: Path) -> Path:
    path = folder / "rnn_lstm_captioning.py"
    path.write_text(REFERENCE.read_text() + HOG)
    return path


def _check(path: Path, only: str, report: Path, memory: int | None = None) -> dict:
    run = run_limited([*CAPGRADE, "check", str(path), "--only", only, "--format", "json",
                       "--report", f"json={report}"], {**os.environ, "PYTHONPATH": str(ROOT)},
                      memory=memory)
    assert report.is_file(), run.describe()
    return {c["id"]: c for c in json.loads(report.read_text())["checks"]}


# -- what the host says ------------------------------------------------------------------


@needs_cgroups
def test_a_cgroup_s_limits_are_read_inside_it(tmp_path):
    out = tmp_path / "seen.json"
    code = ("import json, sys; from grader.sandbox import resources as r; "
            "json.dump([r.memory_limit(), r.cpu_quota(), r.timeout_scale(), "
            "'vmstat' in r.oom_kills() or bool(r.oom_kills()), r.parallel_trainings()], "
            "open(sys.argv[1], 'w'))")
    env = {k: v for k, v in os.environ.items() if k != "CAPGRADE_PARALLEL_TRAININGS"}
    run = run_limited([sys.executable, "-c", code, str(out)],
                      {**env, "PYTHONPATH": str(ROOT)}, memory=parse_memory("300M"),
                      cpus=0.5)
    assert run.applied and run.returncode == 0, run.describe()
    # Half a CPU: a single run's trainings one after the other, as in batch grading.
    assert json.loads(out.read_text()) == [300 << 20, 0.5, 2.0, True, 1]


def test_trainings_side_by_side_in_a_single_run_one_at_a_time_in_batch(monkeypatch):
    monkeypatch.delenv("CAPGRADE_PARALLEL_TRAININGS", raising=False)
    cores = int(resources.available_cpus())
    assert resources.parallel_trainings() == max(1, min(3, cores))
    monkeypatch.setattr(resources, "memory_limit", lambda: 1 << 30)  # a 1 GiB container
    assert resources.parallel_trainings() == 1
    monkeypatch.undo()
    monkeypatch.setenv("CAPGRADE_PARALLEL_TRAININGS", "1")  # what `capgrade grade` sets
    assert resources.parallel_trainings() == 1
    monkeypatch.setenv("CAPGRADE_PARALLEL_TRAININGS", "not a number")
    assert resources.parallel_trainings() == max(1, min(3, cores))


@needs_cgroups
def test_an_out_of_memory_kill_is_counted_and_reported():
    before = resources.oom_kills()
    run = run_limited([sys.executable, "-c", "b = bytearray(400 << 20)"], dict(os.environ),
                      memory=parse_memory("150M"))
    assert run.returncode == -9 and run.oom_kills == 1, run.describe()
    assert resources.ran_out_of_memory(before) is True
    assert resources.ran_out_of_memory(resources.oom_kills()) is False


@pytest.mark.slow
def test_cpu_starvation_is_told_from_a_loop_and_from_sleep():
    """Three busy processes on one core each wait for it about twice as long as they run."""
    busy = "import time\nt = time.time()\nwhile time.time() - t < 3: pass"
    cpu = sorted(os.sched_getaffinity(0))[0]

    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    procs = [subprocess.Popen([sys.executable, "-c", busy],
                              preexec_fn=pin)  # noqa: PLW1509 no threads in this test
             for _ in range(3)]
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
    time.sleep(0.5)
    start = {p.pid: resources.tree_usage(p.pid) for p in [*procs, sleeper]}
    time.sleep(2)
    used = {p.pid: resources.tree_usage(p.pid) - start[p.pid] for p in [*procs, sleeper]}
    for p in [*procs, sleeper]:
        p.wait()
    assert all(resources.starved(used[p.pid], calibrated=2.0) for p in procs), used
    assert not resources.starved(used[sleeper.pid], calibrated=2.0), used  # blocked, not starved
    alone = resources.CpuUsage(running=int(1.9e9), waiting=int(0.1e9))
    assert not resources.starved(alone, calibrated=2.0)  # a loop that got its CPU: the code's


# -- a check: error and regrade, never failed -----------------------------------------------


@pytest.mark.slow
@needs_cgroups
def test_a_worker_killed_for_memory_is_a_regrade_never_a_failure(tmp_path):
    module = _hog(tmp_path)
    roomy = _check(module, "rnn_step_forward_public", tmp_path / "roomy.json")
    assert roomy["rnn_step_forward_public"]["status"] == "passed"  # the code is correct
    tight = _check(module, "rnn_step_forward_public", tmp_path / "tight.json",
                   memory=parse_memory("1200M"))["rnn_step_forward_public"]
    assert tight["status"] == "error" and tight["regrade"] == "memory", tight
    assert ("ran out of memory" in tight["message"] and "not your code" in tight["message"]) \
        or "says nothing about your code" in tight["message"], tight["message"]


@pytest.mark.slow
@needs_cgroups
def test_a_notebook_kernel_killed_for_memory_is_a_regrade(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell("hog = bytearray(1 << 30)  # 1 GiB, touched"),
                nbformat.v4.new_code_cell("y = 2")]
    notebook = tmp_path / "nb.ipynb"
    nbformat.write(nb, notebook)
    out = tmp_path / "out"
    code = ("import sys; from pathlib import Path; from grader.notebook.runner import "
            "run_notebook; run_notebook(Path(sys.argv[1]), out_dir=Path(sys.argv[2]), "
            "parameters={}, html=False)")
    run = run_limited([sys.executable, "-c", code, str(notebook), str(out)],
                      {**os.environ, "PYTHONPATH": str(ROOT)}, memory=parse_memory("500M"))
    report = json.loads((out / "notebook_report.json").read_text())
    cells = {c["index"]: c for c in report["cells"]}
    assert cells[1]["status"] == "kernel-died" and cells[1]["limit"] == "memory", run.describe()
    assert cells[0]["status"] == cells[2]["status"] == "ok"  # the rest still ran
    assert "ran out of memory" in cells[1]["message"]


def test_the_notebook_checks_turn_a_limit_into_a_regrade():
    from grader.checks.test_notebook import _executed
    from grader.notebook.runner import CellRun, NotebookReport

    report = NotebookReport(notebook="nb.ipynb", cells=[
        CellRun(index=3, status="kernel-died", message="out of memory", limit="memory")])
    with pytest.raises(GraderLimit) as caught:
        _executed(report)
    assert caught.value.resource == "memory"


# -- the grader's own MemoryError, and limits the harness saw ---------------------------------


def _failed_with(exc: BaseException):
    report = SimpleNamespace(passed=False, skipped=False)
    return _status_and_message(report, SimpleNamespace(excinfo=SimpleNamespace(value=exc)))


def test_memory_error_in_the_grader_is_a_regrade():
    status, message, failure = _failed_with(MemoryError())
    assert status is Status.ERROR and failure.resource == "memory"
    assert "says nothing about your code" in message


def test_a_limit_found_by_the_harness_wins_over_the_reply():
    limit = GraderLimit("memory", "killed")
    with pytest.raises(GraderLimit):
        require_ok(Outcome(False, error=ErrorInfo("WorkerFailure", "x", stage="import"),
                           failure=limit), "rnn_forward")
    status, _, failure = _failed_with(limit)
    assert status is Status.ERROR and failure is limit


def test_a_student_cannot_claim_a_limit_over_the_wire():
    """An error type 'GraderLimit' in a reply is the student's error like any other."""
    from grader.harness.judging import CheckFailure

    with pytest.raises(CheckFailure):
        require_ok(Outcome(False, error=ErrorInfo("GraderLimit", "please regrade",
                                                  frames=[{"line": 1, "function": "f",
                                                           "code": "x"}])), "rnn_forward")


@pytest.mark.slow
@needs_cgroups
def test_batch_grading_marks_an_out_of_memory_row_for_regrade_and_retries_it(tmp_path):
    from grader.results.store import Store

    (tmp_path / "subs" / "ada").mkdir(parents=True)
    _hog(tmp_path / "subs" / "ada")
    out = tmp_path / "out"
    code = ("import sys; from pathlib import Path; from grader.batch.grading import grade_all; "
            "from grader.harness.request import GradingRequest; grade_all(Path(sys.argv[1]), "
            "Path(sys.argv[2]), workers=1, progress=False, warm=False, "
            "options=GradingRequest(only='rnn_step_forward_public'))")
    argv = [sys.executable, "-c", code, str(tmp_path / "subs"), str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def latest() -> dict:
        store = Store(out / "grades.sqlite")
        try:
            return {r["student"]: dict(r) for r in store.latest()}["ada"]
        finally:
            store.close()

    run_limited(argv, env, memory=parse_memory("1200M"))
    tight = latest()
    assert tight["status"] == "needs-regrade", tight
    assert "ran out of memory" in tight["message"] and "rnn_step_forward_public" \
        in tight["message"]
    run_limited(argv, env)  # the next run, on a machine with room, grades it again
    assert latest()["status"] == "graded"


def test_one_torch_at_a_time_the_order_checks_run_in():
    """Loss-file checks (own reader worker) first, then the notebook (its kernel), then the
    checks that share the check worker: never two torch processes at once."""
    import contextlib
    import io

    import pytest as pt

    from grader.harness import engine, plugin
    from grader.harness.request import GradingRequest

    class Order:
        def pytest_collection_finish(self, session):
            self.groups = [(plugin.check_group(i), "submission" in i.fixturenames)
                           for i in session.items]

    order = Order()
    request = GradingRequest(REFERENCE, hidden=True, slow=True, notebook=True)
    with contextlib.redirect_stdout(io.StringIO()):
        pt.main([*engine._pytest_args(request), "--collect-only"],
                plugins=[plugin.GradingPlugin(request), plugin, order])
    phases = [0 if not uses else 1 if group == "notebook" else 2
              for group, uses in order.groups]
    assert phases == sorted(phases) and set(phases) == {0, 1, 2}
    assert {g for g, uses in order.groups if not uses} == {"submission_file"}


def bundle_in_a_container(folder: Path) -> dict:
    """In the corpus's pool: the Gradescope bundle on the reference, under 1 GiB, cold."""
    import shutil

    import torch

    from grader.integrations import gradescope
    from tests.test_handin import _plausible

    bundle = gradescope.build_bundle(folder / "autograder.zip",
                                     ROOT / "reference" / "expected" / "hidden.safetensors")
    root = folder / "autograder"
    script = gradescope.unpack_for_trial(bundle, root)
    shutil.copy(REFERENCE, root / "submission" / "rnn_lstm_captioning.py")
    shutil.copy(ROOT / "notebooks" / "rnn_lstm_captioning.ipynb", root / "submission")
    torch.save({"rnn_losses": _plausible(1.5), "lstm_losses": _plausible(1.2),
                "attn_losses": _plausible(0.3)},
               root / "submission" / "rnn_lstm_attention_submission.pt")
    run = run_limited(["bash", str(script)], {**os.environ, "CAPGRADE_AUTOGRADER_ROOT":
                                              str(root), "CAPGRADE_PYTHON": sys.executable},
                      memory=parse_memory("1024M"), cold=True, quiet=True)
    return {"oom_kills": run.oom_kills, "describe": run.describe(),
            "results": json.loads((root / "results" / "results.json").read_text())}


CONTAINER_RUN = Call("tests.test_resources:bundle_in_a_container")


def corpus_jobs(items: list[pytest.Item]) -> list[Call]:
    wanted = "test_a_correct_full_submission_gets_every_point_in_a_1024_mib_container"
    return [CONTAINER_RUN] if not NO_CGROUPS and any(
        i.originalname == wanted for i in items) else []


@pytest.mark.slow
@needs_cgroups
def test_a_correct_full_submission_gets_every_point_in_a_1024_mib_container(corpus):
    """The Gradescope bundle (every check, the notebook, the loss file) under 1 GiB, no
    namespaces, a cold page cache: full marks, nothing to regrade (the instructor guide's
    measured setting; Gradescope's default 768 MB cannot hold torch, see the README)."""
    run = corpus.result(CONTAINER_RUN)
    results = run["results"]
    graded = [t for t in results["tests"] if "advisory" not in t["tags"]]
    assert run["oom_kills"] == 0, run["describe"]
    assert all(t["status"] == "passed" for t in graded), [
        (t["name"], t["output"][:200]) for t in graded if t["status"] != "passed"]
    from grader.harness.engine import catalogue

    assert results["score"] == sum(c["points"] for c in catalogue())  # every check ran


def test_batch_grading_trains_one_at_a_time_per_submission(monkeypatch, tmp_path):
    from grader.batch.grading import DEFAULT_OPTIONS, grade_entry

    monkeypatch.delenv("CAPGRADE_PARALLEL_TRAININGS", raising=False)
    row = grade_entry({"student": "a", "module": str(tmp_path / "missing.py")},
                      DEFAULT_OPTIONS.to_dict(), str(tmp_path))
    assert row["status"] == "could-not-grade"  # no such file: nothing to train here
    assert os.environ["CAPGRADE_PARALLEL_TRAININGS"] == "1"
    assert resources.parallel_trainings() == 1


# -- a worker retired to free memory keeps what the monitor saw ----------------------------

LIBRARY_STEP = '''

def rnn_step_forward(x, prev_h, Wx, Wh, b):
    next_h = torch.rnn_tanh_cell(x, prev_h, Wx.t(), Wh.t(), b)
    return next_h, (x, prev_h, Wx, Wh, next_h)
'''


def test_a_retired_worker_s_forbidden_calls_are_still_counted(tmp_path):
    """Under a tight memory limit the overfit checks retire the function checks' worker:
    the forbidden calls it saw still count against the from-scratch rule."""
    from grader.checks.inputs import randn
    from grader.harness.client import Submission

    path = tmp_path / "rnn_lstm_captioning.py"
    path.write_text(REFERENCE.read_text() + LIBRARY_STEP)
    args = dict(zip(("x", "prev_h", "Wx", "Wh", "b"),
                    randn(0, (2, 3), (2, 4), (3, 4), (4, 4), (4,)), strict=True))
    with Submission(path) as sub:
        assert sub.call("function", name="rnn_step_forward", args=args, take=[0]).ok
        seen = sub.usage()
        assert [u["api"] for u in seen] == ["torch.rnn_tanh_cell"], seen
        first = sub.proc.pid
        sub.retire()
        assert sub.proc is None
        assert sub.usage() == seen  # a fresh worker, which has not seen the call
        assert sub.proc.pid != first and sub.restarts == 0
