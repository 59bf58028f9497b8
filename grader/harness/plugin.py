"""TRUSTED side: the pytest plugin that turns the check catalogue into graded results.

``GradingPlugin`` is an object the engine registers with ``pytest.main(...,
plugins=[...])``, holding the ``GradingRequest`` and collecting the results
(no command-line options, no state on private attributes: the plugin is kept
in ``config.stash``). It reads the rubric (points, visibility of every check),
attaches them as markers, selects the checks the request asks for, and turns
each test's outcome into a ``CheckResult``. The fixtures below (``submission``,
``expect``, ...) read the request from it. In record mode (``capgrade build``)
the submission is the reference and ``expect`` keeps what it produced instead
of comparing; the engine writes those values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from grader.diagnosis import catalogue as misconceptions
from grader.diagnosis import evidence
from grader.harness import expected as ex
from grader.harness.client import Submission
from grader.harness.judging import CheckFailure, Same, close, equal, identical, within
from grader.harness.outcome import GraderLimit, WorkerFailure
from grader.harness.request import GradingRequest
from grader.harness.workers import WorkerSupply, phase
from grader.results import CheckResult, Status
from grader.results.sanitize import MESSAGE_CAP, student_text
from grader.rubric import RUBRIC_PATH, load_rubric, load_rubric_table  # noqa: F401 - re-exported

PLUGIN = pytest.StashKey["GradingPlugin"]()
#: What an unscored self_reported check says first.
SELF_REPORTED = ("self-reported, not scored: what this check reads comes from your own code "
                 "(the notebook's kernel runs it), so it is shown to you but worth no points")
OUTPUT_CAP = 4_000


def check_id(item: pytest.Item) -> str:
    return item.name.removeprefix("test_")


def check_group(item: pytest.Item) -> str:
    """The part of the assignment a check belongs to: its module's name without test_."""
    module = cast(pytest.Function, item).module  # every check is a test function
    return module.__name__.rsplit(".", 1)[-1].removeprefix("test_")


def check_location(item: pytest.Item) -> tuple[str, int]:
    """The check's file relative to the project and the line of its ``def``, for CI annotations.

    pytest's ``item.location`` is 0-based and, for a decorated function, the decorator's line.
    """
    import inspect

    root = Path(__file__).resolve().parents[2]  # the folder holding the grader package
    path = Path(item.path).resolve()
    try:
        lines, start = inspect.getsourcelines(inspect.unwrap(cast(pytest.Function, item).function))
    except (AttributeError, OSError, TypeError):
        lines, start = [], (item.location[1] or 0) + 1
    line = start + next((i for i, text in enumerate(lines)
                         if text.lstrip().startswith(("def ", "async def "))), 0)
    return (path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name), line


class Expect:
    """Compares with, or in record mode records, the expected values of one check.

    Every value a check compares passes through ``value`` (or ``observe``) with the
    check's own comparison (``same``), so the same rule also holds it against each
    known misconception's fingerprint (``grader.diagnosis``). When ``capgrade build``
    fingerprints a misconception (``request.fingerprint``), the submission is the
    mutated reference and what it computes is kept wherever it differs.
    """

    def __init__(self, plugin: GradingPlugin, cid: str, visibility: str):
        self.cid, self.hidden = cid, visibility != "public"
        self.record = plugin.request.record
        self.fingerprint = plugin.request.fingerprint
        self.plugin = plugin

    @property
    def kind(self) -> str:
        return "hidden" if self.hidden else "public"

    def _values(self) -> dict[str, Any]:
        cache = self.plugin.expected
        kind = self.kind
        where = self.plugin.request.hidden_values() if self.hidden else ex.PUBLIC_PATH
        if kind not in cache:
            try:
                cache[kind] = ex.load(where)
            except ex.ExpectedMissing:
                cache[kind] = None
        if cache[kind] is None:
            raise ex.ExpectedMissing(f"expected values not found at {where}; hidden ones come "
                                     "from the instructors' reference/ (run `capgrade build`)")
        return cache[kind]

    def value(self, key: str, actual: Any = None, same: Same | None = None) -> Any:
        """The expected value for ``key`` (recording ``actual`` as it in record mode).

        ``same(actual, expected)`` is the check's own comparison; with it, the value is
        also held against the misconceptions' fingerprints (or, when fingerprinting, kept).
        """
        full = f"{self.cid}/{key}"
        if self.record:
            if isinstance(actual, np.ndarray):
                actual = actual.copy()
            if self.fingerprint:
                self.observe(key, actual, same or identical)
            else:
                self.plugin.recorded[self.kind][full] = actual
            return actual
        values = self._values()
        if full not in values:
            raise ex.ExpectedMissing(f"no expected value {full!r}: the expected values are "
                                     "stale, run `capgrade build`")
        if same is not None:
            self.observe(key, actual, same)
        return values[full]

    def observe(self, key: str, actual: Any, same: Same) -> None:
        """Hold ``actual`` against the fingerprints of ``key`` without judging it."""
        full = f"{self.cid}/{key}"
        if self.record:
            if self.fingerprint:  # keep what the mutated reference computes where it differs
                reference = self._values().get(full)
                if full in self._values() and not evidence.safe_same(same, actual, reference):
                    self.plugin.recorded[self.kind][
                        evidence.fingerprint_key(self.fingerprint, full)] = actual
            return
        values = self._values()
        if full not in values:
            return
        fingerprints = self.plugin.fingerprints(self.kind, values).get(self.cid, {})
        notes = self.plugin.notes.setdefault(self.cid, {})
        evidence.observe(notes, key, actual, values[full], same, fingerprints,
                         self.plugin.catalogue)

    def close(self, key: str, actual: Any, what: str, rtol: float, atol: float,
              check_dtype: bool = True) -> float:
        from grader.harness.judging import as_tensor

        if self.record:
            actual = as_tensor(actual, what)
        same = within(rtol, atol, check_dtype)
        # A float32 value inside float64 is named by the diagnosis (grader.diagnosis), not here.
        return close(actual, self.value(key, actual, same), what, rtol, atol, self.hidden,
                     check_dtype=check_dtype, hint=False)

    def equal(self, key: str, actual: Any, what: str) -> None:
        from grader.harness.judging import as_tensor

        if self.record:
            actual = as_tensor(actual, what)
        equal(actual, self.value(key, actual, identical), what, self.hidden)


class GradingPlugin:
    """Selects the checks a request asks for and collects their results."""

    def __init__(self, request: GradingRequest, rubric_path: Path = RUBRIC_PATH,
                 supply: WorkerSupply | None = None):
        self.request = request
        #: Where the grading's workers come from (the check worker's, the loss-file reader's).
        self.supply = supply if supply is not None else WorkerSupply()
        self.rubric = load_rubric(rubric_path)
        self.rubric_path = rubric_path
        self.results: list[CheckResult] = []
        #: Checks run only so that the rules have verdicts to read (not reported).
        self.evidence_only: set[str] = set()
        #: Record mode: what the reference produced, and the seeds of each check.
        self.recorded: dict[str, dict[str, Any]] = {"public": {}, "hidden": {}, "seeds": {}}
        self.expected: dict[str, Any] = {}  # loaded once per session
        self.submission: Submission | None = None  # the worker proxy, once started
        #: Check id -> its place in the catalogue (results are reported in that order).
        self.order: dict[str, int] = {}
        #: What each check's values say about each misconception ({check: {mid: words}}).
        self.notes: dict[str, dict[str, list[str]]] = {}
        self.catalogue = misconceptions.load()
        self._fingerprints: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}

    def fingerprints(self, kind: str, values: dict[str, Any]
                     ) -> dict[str, dict[str, dict[str, Any]]]:
        """The misconceptions' fingerprints stored with the ``kind`` expected values."""
        if kind not in self._fingerprints:
            self._fingerprints[kind] = evidence.by_check(values)
        return self._fingerprints[kind]

    def pytest_configure(self, config: pytest.Config) -> None:
        config.addinivalue_line("markers", "points(n): points of a check (from the rubric)")
        config.addinivalue_line("markers", "visibility(v): public, hidden or after_due_date")
        config.stash[PLUGIN] = self

    def _wanted(self, item: pytest.Item, keyword_selected: bool) -> bool:
        request, entry = self.request, self.rubric[check_id(item)]
        if entry.get("visibility", "public") != "public" and not (request.hidden or
                                                                  request.record):
            return False
        if request.groups and check_group(item) not in request.groups:
            # The rules are judged from the function checks' verdicts: with the rules
            # selected alone, those run as evidence, and are left out of the result.
            if "rules" in request.groups and entry.get("visibility", "public") == "public" \
                    and not entry.get("slow", False) and not entry.get("advisory", False):
                self.evidence_only.add(check_id(item))
                return True
            return False
        if entry.get("slow", False):
            if request.record:
                return False  # slow checks record no expected values
            asked = request.notebook if check_group(item) == "notebook" else request.slow
            return asked or keyword_selected or bool(request.groups)
        return True

    def pytest_collection_modifyitems(self, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        missing = [check_id(i) for i in items if check_id(i) not in self.rubric]
        if missing:
            raise pytest.UsageError(f"checks missing from the rubric {self.rubric_path}: "
                                    f"{', '.join(missing)}")
        known = {check_group(i) for i in items}
        if set(self.request.groups) - known:
            raise pytest.UsageError(f"no such group: "
                                    f"{', '.join(sorted(set(self.request.groups) - known))} "
                                    f"(groups: {', '.join(sorted(known))})")
        keyword_selected = bool(self.request.only)
        keep: list[pytest.Function] = []  # every check is a test function
        drop: list[pytest.Item] = []
        for item in items:
            entry = self.rubric[check_id(item)]
            item.add_marker(pytest.mark.points(entry["points"]))
            item.add_marker(pytest.mark.visibility(entry.get("visibility", "public")))
            if self._wanted(item, keyword_selected):
                keep.append(cast(pytest.Function, item))
            else:
                drop.append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
        self.order = {check_id(item): index for index, item in enumerate(keep)}
        # The order they run in (``workers.phase``); results keep the order above.
        keep.sort(key=lambda item: phase(item.fixturenames, check_group(item)))
        items[:] = keep
        if self.submission is not None and not any("submission" in i.fixturenames
                                                   for i in keep):
            self.submission.discard_launched()  # no check calls student code

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        outcome = yield
        report: pytest.TestReport = outcome.get_result()
        if report.when == "setup" and report.passed:
            return
        if report.when == "teardown":
            return
        self.results.append(self._result(item, report, call))

    def _result(self, item: pytest.Item, report: pytest.TestReport,
                call: pytest.CallInfo) -> CheckResult:
        status, message, failure = _status_and_message(report, call)
        notes = [str(v) for k, v in report.user_properties if k == "note"]
        if status is Status.PASSED and notes:  # e.g. "unverified here": said, not scored
            message = "; ".join(notes)
        review = "; ".join(str(v) for k, v in report.user_properties if k == "review")
        entry = self.rubric[check_id(item)]
        points = float(entry["points"])
        advisory = bool(entry.get("advisory", False))
        requires = str(entry.get("requires", ""))
        if entry.get("unscored", False):  # points set to 0 by load_rubric
            message = f"{SELF_REPORTED}{': ' + message if message else ''}"
        if advisory and status is Status.FAILED:
            status = Status.ADVISORY
            message = f"advisory, worth no points: {message}" + (
                f"\nWhy no points: {requires}" if requires else "")
        elif status is Status.FAILED and requires and "not implemented yet" not in message:
            message += f"\nRequirement: {requires}"
        # Student-chosen text enters the result here: cleaned and capped once, for every format.
        message, review = student_text(message, MESSAGE_CAP), student_text(review, MESSAGE_CAP)
        sub = self.submission
        output = student_text(sub.take_output(), OUTPUT_CAP) if sub is not None else ""
        credit = getattr(failure, "credit", 0.0)
        mistake = getattr(failure, "misconception", "")
        if mistake and status is Status.FAILED and mistake in self.catalogue:
            self.notes.setdefault(check_id(item), {})[mistake] = ["hit"]  # seen in the error
        file, line = check_location(item)
        return CheckResult(
            id=check_id(item),
            status=status,
            score=points if status is Status.PASSED else
            round(points * credit, 4) if status is Status.FAILED else 0.0,
            max_score=points,
            visibility=entry.get("visibility", "public"),
            message=message,
            error=getattr(failure, "error", None),
            tolerance=getattr(failure, "tolerance", None),
            duration=round(report.duration, 4),
            target=entry.get("target", ""),
            group=check_group(item),
            output=output,
            requires=requires,
            advisory=advisory,
            file=file,
            line=line,
            regrade=failure.resource if isinstance(failure, GraderLimit) else "",
            review=review,
        )

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if self.submission is not None:
            self.submission.seeds.clear()

    def pytest_runtest_teardown(self, item: pytest.Item) -> None:
        """Record mode: the seeds of the inputs the check sent (``Submission.seeds``)."""
        if self.submission is not None and self.submission.seeds:
            self.recorded["seeds"][check_id(item)] = sorted(self.submission.seeds)


# -- fixtures: what the checks receive ----------------------------------------------------


def _plugin(request: pytest.FixtureRequest) -> GradingPlugin:
    return request.config.stash[PLUGIN]


@pytest.fixture(scope="session")
def grading(request: pytest.FixtureRequest) -> GradingRequest:
    """The request being graded (paths, options)."""
    return _plugin(request).request


@pytest.fixture(scope="session")
def secrets(grading: GradingRequest) -> tuple[Path, ...]:
    """What no sandboxed process may see: the checkout's secrets and the hidden values."""
    from grader.harness.client import grading_secrets

    return grading_secrets(grading.hidden_values())


@pytest.fixture(scope="session")
def read_losses(request: pytest.FixtureRequest, secrets: tuple[Path, ...]):
    """``read_loss_file(path, max_bytes)`` in the grading's reader (parsed once per grading)."""
    import functools

    from grader.harness.client import read_loss_file

    return functools.partial(read_loss_file, secrets=secrets, supply=_plugin(request).supply)


@pytest.fixture(scope="session")
def submission(request: pytest.FixtureRequest) -> Submission | None:
    """The worker proxy the engine launched for this request (the engine closes it)."""
    return _plugin(request).submission


@pytest.fixture(scope="session")
def device(grading: GradingRequest) -> str:
    return grading.device


@pytest.fixture
def verdicts(request: pytest.FixtureRequest) -> list[CheckResult]:
    """The results of the checks that ran before this one: the harness's own verdicts."""
    return list(_plugin(request).results)


@pytest.fixture
def expect(request: pytest.FixtureRequest) -> Expect:
    marker = request.node.get_closest_marker("visibility")
    return Expect(_plugin(request), check_id(request.node),
                  marker.args[0] if marker else "public")


# -- results ---------------------------------------------------------------------------


def _status_and_message(report: pytest.TestReport, call: pytest.CallInfo
                        ) -> tuple[Status, str, Any]:
    if report.passed:
        return Status.PASSED, "", None
    exc = call.excinfo.value if call.excinfo is not None else None
    if isinstance(exc, MemoryError):  # the grader's own code ran out: never the student's
        exc = GraderLimit("memory", "MemoryError in the grader's own code")
    if isinstance(exc, GraderLimit):
        return Status.ERROR, exc.student_message(), exc
    if isinstance(exc, CheckFailure):
        return Status.FAILED, exc.message, exc
    if isinstance(exc, WorkerFailure):
        return Status.ERROR, str(exc), None
    if isinstance(exc, ex.ExpectedMissing):
        return Status.ERROR, str(exc), None
    if report.skipped:
        return Status.SKIPPED, str(exc) if exc else "skipped", None
    name = type(exc).__name__ if exc else "error"
    return Status.ERROR, f"the check itself failed ({name}: {exc}); please report this", None
