"""TRUSTED side: run the check catalogue on one submission and return the one result schema.

The catalogue is a pytest suite (``grader/checks``) driven by a
``grader.harness.plugin.GradingPlugin`` object that holds the ``GradingRequest``;
``grade`` is the single entry point the CLI, the notebook helper, batch grading
and Gradescope share, so every mode gives the same verdicts. The sandboxed
worker is started before pytest collects the catalogue, so its start (Python,
torch, the grader's worker modules) overlaps the harness's own
(``grader.harness.workers.launch_ahead``). Workers come from a
``WorkerSupply`` the caller may pass (a batch process keeps one warm); else one
is made for the grading.
"""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from grader import sandbox
from grader.diagnosis.diagnose import diagnose
from grader.harness import plugin as plugin_module
from grader.harness.client import Submission, grading_secrets
from grader.harness.plugin import GradingPlugin, check_group, check_id, load_rubric
from grader.harness.request import GradingRequest
from grader.harness.workers import WorkerSupply, launch_ahead
from grader.protocol import BROKEN_ENVIRONMENT
from grader.results import RunStatus, SubmissionResult, environment_fingerprint
from grader.results.sanitize import MESSAGE_CAP, student_text

CHECKS_DIR = Path(__file__).resolve().parent.parent / "checks"


#: pytest plugins the checks never use; each costs time in every run (in a notebook's
#: ``check()``, most of it: the unraisable-exception plugin alone runs gc.collect 4 times).
_UNUSED_PLUGINS = [f"-pno:{name}" for name in (
    "cacheprovider", "unraisableexception", "threadexception", "doctest", "pastebin",
    "junitxml", "stepwise", "lsof", "nose")]


def _pytest_args(request: GradingRequest) -> list[str]:
    args = [str(CHECKS_DIR), "-c", str(CHECKS_DIR / "pytest.ini"), "--rootdir", str(CHECKS_DIR),
            "--capture=no", "-q" if request.verbose else "-qq", *_UNUSED_PLUGINS]
    if not request.verbose:  # results come from the plugin: pytest's tracebacks would go unread
        args.append("--tb=no")
    if request.only:
        args += ["-k", request.only]
    return args


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a grading, raised once its workers are stopped.

    pytest turns a KeyboardInterrupt into an exit code; returned as a result it
    would read as a graded submission with no checks. ``result`` holds the
    checks judged before the interrupt (only those).
    """

    def __init__(self, result: SubmissionResult) -> None:
        super().__init__("interrupted")
        self.result = result


def grade(request: GradingRequest, supply: WorkerSupply | None = None,
          progress: InProgress | None = None) -> SubmissionResult:
    """Grade one file; never raises for a broken submission (the result says why).

    ``supply``: where its workers come from (None: a supply of its own). ``progress``:
    where a deadline watchdog finds what it has judged so far (``InProgress``).
    Raises ``Interrupted`` (a KeyboardInterrupt) on Ctrl-C, the workers stopped.
    """
    return _run(request, supply, progress)[0]


def record(request: GradingRequest) -> tuple[SubmissionResult, dict[str, dict[str, Any]]]:
    """`capgrade build`: the reference's results and what it produced (public, hidden, seeds)."""
    result, plugin = _run(replace(request, record=True))
    return result, plugin.recorded


def run_checks(submission: str | Path, supply: WorkerSupply | None = None,
               **options: Any) -> SubmissionResult:
    """``grade`` for one file, the options as ``GradingRequest`` fields (keywords only)."""
    return grade(GradingRequest(submission=Path(submission), **options), supply)


def _run(request: GradingRequest, supply: WorkerSupply | None = None,
         progress: InProgress | None = None) -> tuple[SubmissionResult, GradingPlugin]:
    start = time.monotonic()
    if request.submission is None:
        raise ValueError("a GradingRequest without a submission is a batch template")
    path = request.submission
    supply = supply if supply is not None else WorkerSupply()
    plugin = GradingPlugin(request, supply=supply)
    result = SubmissionResult(submission=str(path), environment=environment_fingerprint())
    if not path.is_file():
        result.status, result.message = RunStatus.MISSING_FILE, f"no such file: {path}"
        return result, plugin
    problem = request.selection_problem()
    if problem is not None:  # before a worker starts: the caller's mistake, said as one
        result.status, result.message = RunStatus.NO_CHECKS, problem
        return result, plugin
    unsupported = sandbox.unsupported_reason()
    if unsupported is not None:  # native Windows: no worker can start, no check runs
        result.status, result.message = RunStatus.ENVIRONMENT_ERROR, unsupported
        return result, plugin
    hidden = request.hidden_values()
    if request.hidden and not request.record and not hidden.is_file():
        result.status = RunStatus.NO_HIDDEN_VALUES
        result.message = (f"hidden expected values not found at {hidden}: pass "
                          "--hidden-expected PATH (the instructors' "
                          "reference/expected/hidden.safetensors, written by `capgrade build` in "
                          "the checkout); students run the public checks only (omit --all)")
        return result, plugin
    # Start the worker now: it imports torch while pytest collects the catalogue.
    plugin.submission = Submission(path, device=request.device, secrets=grading_secrets(hidden),
                                   supply=supply)
    if request.timeout:
        plugin.submission.timeout = request.timeout
    launched = launch_ahead(request)
    if launched:
        plugin.submission.launch()
    sink = contextlib.nullcontext() if request.verbose else \
        contextlib.redirect_stdout(io.StringIO())
    progress = progress if progress is not None else InProgress()
    progress.running.append((plugin, result, start))
    try:
        with sink:  # the plugin object, and its module's fixtures (registered here only)
            code = pytest.main(_pytest_args(request), plugins=[
                plugin, plugin_module, _EnvironmentGate(plugin.submission, launched)])
    finally:
        progress.running.remove((plugin, result, start))
        plugin.submission.close()
        plugin.submission.discard_launched()
    result.checks = sorted((c for c in plugin.results if c.id not in plugin.evidence_only),
                           key=lambda c: plugin.order.get(c.id, 0))
    if code == pytest.ExitCode.INTERRUPTED:
        result.duration = round(time.monotonic() - start, 3)
        raise Interrupted(result)
    if not request.record:
        diagnose(result.checks, plugin.notes, plugin.catalogue)
    result.isolation = list(plugin.submission.isolation)
    result.duration = round(time.monotonic() - start, 3)
    imported = plugin.submission.import_outcome
    broken = imported is not None and _broken_environment(plugin.submission)
    if broken:  # the installation's fault: no verdict on the submission at all
        result.checks = []
        result.status, result.message = RunStatus.ENVIRONMENT_ERROR, broken
    elif imported is not None and not imported.ok and imported.failure is None:
        err = imported.error
        result.status = RunStatus.IMPORT_ERROR
        where = f" (line {err.frames[-1]['line']})" if err.frames else ""
        result.message = student_text(
            f"importing the submission failed: {err.type}: {err.message}{where}", MESSAGE_CAP)
    elif code == pytest.ExitCode.NO_TESTS_COLLECTED:
        result.status = RunStatus.NO_CHECKS
        result.message = _nothing_selected(request)
    elif code in (pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.INTERNAL_ERROR):
        result.status = RunStatus.GRADER_ERROR
        result.message = f"the check catalogue failed ({code})"
    return result, plugin


class InProgress:
    """The gradings running in a process, for a deadline that stops them from outside
    (Gradescope's watchdog): pass the same object to ``grade`` and to the watchdog."""

    def __init__(self) -> None:
        self.running: list[tuple[GradingPlugin, SubmissionResult, float]] = []

    def interrupted(self, reason: str) -> SubmissionResult | None:
        """What the grading in progress has judged so far; every check not yet judged is an
        error.

        The checks that finished keep their verdicts, the others say the grading machine
        ran out of time, never that the code failed. None when nothing is running.
        """
        from grader.harness.outcome import GraderLimit
        from grader.results import CheckResult, Status

        if not self.running:
            return None
        plugin, started, start = self.running[-1]
        done = list(plugin.results)
        judged = {c.id for c in done}
        message = GraderLimit("deadline", reason).student_message()
        for cid in plugin.order:
            if cid in judged:
                continue
            entry = plugin.rubric[cid]
            done.append(CheckResult(id=cid, status=Status.ERROR, score=0.0,
                                    max_score=float(entry["points"]),
                                    visibility=entry.get("visibility", "public"),
                                    message=message, target=entry.get("target", ""),
                                    requires=str(entry.get("requires", "")),
                                    advisory=bool(entry.get("advisory", False)),
                                    regrade="deadline"))
        result = replace(started, checks=sorted(done, key=lambda c: plugin.order.get(c.id, 0)))
        if plugin.submission is not None:
            result.isolation = list(plugin.submission.isolation)
        result.duration = round(time.monotonic() - start, 3)
        return result


def _nothing_selected(request: GradingRequest) -> str:
    """The selection matched no check: which one, and how to find the checks' ids."""
    asked = [f"--only {request.only!r}"] if request.only else []
    asked += [f"--group {g}" for g in request.groups]
    hint = "" if request.hidden else " (hidden checks, ids ending in _hidden, need --all)"
    return (f"no check matches {' '.join(asked) or 'this selection'}{hint}: --only takes part "
            "of a check id as the results table shows it (e.g. --only rnn_step_forward); "
            "leave it out to run every check")


class _EnvironmentGate:
    """Stops the run before any check when the worker's torch/torchvision do not import.

    Only when the worker was launched ahead: the first check would import the
    submission anyway, so asking first costs nothing.
    """

    def __init__(self, submission: Submission, launched: bool) -> None:
        self.submission, self.launched = submission, launched

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool | None:
        if self.launched and session.items and _broken_environment(self.submission):
            return True  # the loop is done: no check runs
        return None


def _broken_environment(submission: Submission | None) -> str | None:
    """The worker's message when its torch/torchvision cannot be imported, else None."""
    if submission is None:
        return None
    outcome = submission.import_outcome or submission.imported()
    if not outcome.ok and outcome.error.type == BROKEN_ENVIRONMENT:
        try:
            from grader.integrations.pins import pins

            wanted = " ".join(pins())
        except Exception:  # no readable expected values: still say what to do
            wanted = "torch torchvision"
        return (f"{outcome.error.message}. Install the pair the grader was built with, in "
                f"this environment: python -m pip install --force-reinstall {wanted}")
    return None


class _Catalogue:
    def __init__(self) -> None:
        self.items: list[pytest.Item] = []

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.items = list(session.items)


def catalogue() -> list[dict]:
    """Every check (collected, not run): id, group, points, visibility, slow."""
    found = _Catalogue()
    request = GradingRequest(Path("unused.py"), hidden=True, slow=True, notebook=True)
    with contextlib.redirect_stdout(io.StringIO()):
        pytest.main([*_pytest_args(request), "--collect-only"],
                    plugins=[GradingPlugin(request), plugin_module, found])
    rubric = load_rubric()
    return [{"id": check_id(i), "group": check_group(i), "points": rubric[check_id(i)]["points"],
             "visibility": rubric[check_id(i)].get("visibility", "public"),
             "slow": bool(rubric[check_id(i)].get("slow", False))} for i in found.items]


