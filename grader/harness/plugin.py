"""The pytest plugin that turns the check catalogue into graded results.

Loaded with ``-p grader.harness.plugin``. It reads the rubric (points, visibility,
timeout of every check) and attaches them to the tests as markers, deselects
hidden checks unless asked, provides the ``submission`` and ``expect``
fixtures, and turns each test's outcome into a ``CheckResult``. In record mode
(``capgrade build``) the submission is the reference and ``expect`` stores what
it produced instead of comparing.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from grader.harness import expected as ex
from grader.harness.client import Submission, WorkerFailure
from grader.harness.judging import CheckFailure, close, equal
from grader.results import CheckResult

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RUBRIC_PATH = Path(__file__).resolve().parent.parent / "checks" / "rubric.toml"
RESULTS = pytest.StashKey[list]()
RECORDED = pytest.StashKey[dict]()
OUTPUT_CAP = 4_000


def load_rubric(path: Path = RUBRIC_PATH, include_slow: bool = True
                ) -> dict[str, dict[str, Any]]:
    """The rubric's checks; without the slow / hand-in ones when ``include_slow`` is False."""
    with open(path, "rb") as f:
        checks = tomllib.load(f)["checks"]
    for name, entry in checks.items():
        if entry.get("advisory", False) and entry.get("points", 0) != 0:
            raise ValueError(f"{path}: {name} is an advisory (worth nothing) but has "
                             f"{entry['points']} points; set advisory = false to grade it")
    return {k: v for k, v in checks.items() if include_slow or not v.get("slow", False)}


def load_rubric_table(path: Path, table: str) -> dict[str, Any]:
    """Another table of the rubric (e.g. ``submission_file``); empty when absent."""
    with open(path, "rb") as f:
        return dict(tomllib.load(f).get(table, {}))


def check_id(item: pytest.Item) -> str:
    return item.name.removeprefix("test_")


def check_group(item: pytest.Item) -> str:
    """The part of the assignment a check belongs to: its module's name without test_."""
    return item.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("capgrade")
    group.addoption("--submission", help="the student's rnn_lstm_captioning.py to grade")
    group.addoption("--visibility", choices=["public", "all"], default="public",
                    help="public checks only (students) or public + hidden (instructors)")
    group.addoption("--hidden-expected", default=str(ex.default_hidden_path()),
                    help="hidden expected values (default: %(default)s)")
    group.addoption("--rubric", default=str(RUBRIC_PATH))
    group.addoption("--device", default="cpu", help="cpu or cuda")
    group.addoption("--check-timeout", type=float, default=None,
                    help="seconds a single call into student code may take")
    group.addoption("--record", action="store_true",
                    help="record the submission's outputs as the expected values")
    group.addoption("--loss-file", default=None,
                    help="the hand-in's loss file (default: rnn_lstm_attention_submission.pt "
                         "next to the submission)")
    group.addoption("--notebook", default=None,
                    help="the notebook to execute (default: rnn_lstm_captioning.ipynb next to "
                         "the submission)")
    group.addoption("--notebook-out", default=None,
                    help="where the executed notebook, its HTML and report go (default: a new "
                         "temp dir)")
    group.addoption("--group", action="append", default=[],
                    help="only the checks of this part (a module of grader/checks without "
                         "test_: rnn, lstm, attention, ...); repeatable; selects slow ones too")
    group.addoption("--slow", action="store_true",
                    help="include the slow end-to-end checks (rubric: slow = true); they also "
                         "run when -k selects them")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "points(n): points of a check (from the rubric)")
    config.addinivalue_line("markers", "visibility(v): public, hidden or after_due_date")
    config.stash[RESULTS] = []
    config.stash[RECORDED] = {"public": {}, "hidden": {}, "seeds": {}}
    config._capgrade_rubric = load_rubric(Path(config.getoption("rubric")))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rubric = config._capgrade_rubric
    missing = [check_id(i) for i in items if check_id(i) not in rubric]
    if missing:
        raise pytest.UsageError(f"checks missing from the rubric {config.getoption('rubric')}: "
                                f"{', '.join(missing)}")
    # Slow checks record no expected values; otherwise they run when asked for.
    groups = config.getoption("group")
    slow_wanted = not config.getoption("record") and (
        config.getoption("slow") or bool(config.getoption("keyword")) or bool(groups))
    known = {check_group(i) for i in items}
    if set(groups) - known:
        raise pytest.UsageError(f"no such group: {', '.join(sorted(set(groups) - known))} "
                                f"(groups: {', '.join(sorted(known))})")
    keep, drop = [], []
    for item in items:
        entry = rubric[check_id(item)]
        item.add_marker(pytest.mark.points(entry["points"]))
        item.add_marker(pytest.mark.visibility(entry.get("visibility", "public")))
        public = entry.get("visibility", "public") == "public"
        wanted = public or config.getoption("visibility") == "all"
        if entry.get("slow", False) and not slow_wanted:
            wanted = False
        if groups and check_group(item) not in groups:
            wanted = False
        (keep if wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def submission(request: pytest.FixtureRequest):
    path = request.config.getoption("submission")
    if not path:
        raise pytest.UsageError("pass --submission PATH (the file to grade)")
    from grader.harness.client import grading_secrets

    sub = Submission(path, timeout=request.config.getoption("check_timeout") or 15.0,
                     device=request.config.getoption("device"),
                     secrets=grading_secrets(request.config.getoption("hidden_expected")))
    request.config._capgrade_submission = sub
    yield sub
    sub.close()


@pytest.fixture(scope="session")
def secrets(request: pytest.FixtureRequest) -> tuple[Path, ...]:
    """What no sandboxed process may see: the checkout's secrets and the hidden values."""
    from grader.harness.client import grading_secrets

    return grading_secrets(request.config.getoption("hidden_expected"))


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> str:
    return request.config.getoption("device")


class Expect:
    """Compares with, or in record mode records, the expected values of one check."""

    def __init__(self, config: pytest.Config, cid: str, visibility: str):
        self.cid, self.hidden = cid, visibility != "public"
        self.record = config.getoption("record")
        self.config = config
        self._store: dict[str, Any] | None = None

    def _values(self) -> dict[str, Any]:
        cache = self.config.__dict__.setdefault("_capgrade_expected", {})
        kind = "hidden" if self.hidden else "public"
        if kind not in cache:
            path = Path(self.config.getoption("hidden_expected")) if self.hidden \
                else ex.PUBLIC_PATH
            try:
                cache[kind] = ex.load(path)
            except ex.ExpectedMissing:
                cache[kind] = None
        if cache[kind] is None:
            where = self.config.getoption("hidden_expected") if self.hidden else ex.PUBLIC_PATH
            raise ex.ExpectedMissing(f"expected values not found at {where}; hidden ones come "
                                     "from the instructors' reference/ (run `capgrade build`)")
        return cache[kind]

    def value(self, key: str, actual: Any = None) -> Any:
        """The expected value for ``key`` (recording ``actual`` as it in record mode)."""
        full = f"{self.cid}/{key}"
        if self.record:
            if isinstance(actual, np.ndarray):
                actual = actual.copy()
            self.config.stash[RECORDED]["hidden" if self.hidden else "public"][full] = actual
            return actual
        values = self._values()
        if full not in values:
            raise ex.ExpectedMissing(f"no expected value {full!r}: the expected values are "
                                     "stale, run `capgrade build`")
        return values[full]

    def close(self, key: str, actual: Any, what: str, rtol: float, atol: float,
              check_dtype: bool = True) -> float:
        from grader.harness.judging import as_tensor

        if self.record:
            actual = as_tensor(actual, what)
        return close(actual, self.value(key, actual), what, rtol, atol, self.hidden,
                     check_dtype=check_dtype)

    def equal(self, key: str, actual: Any, what: str) -> None:
        from grader.harness.judging import as_tensor

        if self.record:
            actual = as_tensor(actual, what)
        equal(actual, self.value(key, actual), what, self.hidden)


@pytest.fixture
def expect(request: pytest.FixtureRequest) -> Expect:
    marker = request.node.get_closest_marker("visibility")
    return Expect(request.config, check_id(request.node), marker.args[0] if marker else "public")


# -- results ------------------------------------------------------------------------------


def _status_and_message(report: pytest.TestReport, call: pytest.CallInfo) -> tuple[str, str, Any]:
    if report.passed:
        return "passed", "", None
    exc = call.excinfo.value if call.excinfo is not None else None
    if isinstance(exc, CheckFailure):
        return "failed", exc.message, exc
    if isinstance(exc, WorkerFailure):
        return "error", str(exc), None
    if isinstance(exc, ex.ExpectedMissing):
        return "error", str(exc), None
    if report.skipped:
        return "skipped", str(exc) if exc else "skipped", None
    name = type(exc).__name__ if exc else "error"
    return "error", f"the check itself failed ({name}: {exc}); please report this", None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.when == "setup" and report.passed:
        return
    if report.when == "teardown":
        return
    status, message, failure = _status_and_message(report, call)
    entry = item.config._capgrade_rubric[check_id(item)]
    points = float(entry["points"])
    advisory = bool(entry.get("advisory", False))
    requires = str(entry.get("requires", ""))
    if advisory and status == "failed":
        status = "advisory"
        message = f"advisory, worth no points: {message}" + (
            f"\nWhy no points: {requires}" if requires else "")
    elif status == "failed" and requires and "not implemented yet" not in message:
        message += f"\nRequirement: {requires}"
    sub: Submission | None = getattr(item.config, "_capgrade_submission", None)
    output = sub.take_output()[:OUTPUT_CAP] if sub is not None else ""
    item.config.stash[RESULTS].append(CheckResult(
        id=check_id(item),
        status=status,
        score=points if status == "passed" else
        round(points * getattr(failure, "credit", 0.0), 4) if status == "failed" else 0.0,
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
    ))


def pytest_runtest_setup(item: pytest.Item) -> None:
    from grader.checks import inputs

    inputs.SEEDS.clear()
    item._capgrade_start = time.monotonic()


def pytest_runtest_teardown(item: pytest.Item) -> None:
    from grader.checks import inputs

    if inputs.SEEDS:
        item.config.stash[RECORDED]["seeds"][check_id(item)] = sorted(inputs.SEEDS)


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if not config.getoption("record"):
        return
    results = config.stash[RESULTS]
    failed = [r for r in results if r.status != "passed"]
    if failed or not results:
        print(f"\ncapgrade build: NOT writing expected values: {len(failed)} checks failed on "
              "the reference:\n" + "\n".join(f"  {r.id}: {r.message}" for r in failed))
        session.exitstatus = 1
        return
    recorded = config.stash[RECORDED]
    reference = Path(config.getoption("submission"))
    meta = ex.metadata(reference, recorded["seeds"])
    ex.save(recorded["public"], {**meta, "visibility": "public"}, ex.PUBLIC_PATH)
    ex.save(recorded["hidden"], {**meta, "visibility": "hidden"},
            Path(config.getoption("hidden_expected")))
