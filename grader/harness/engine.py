"""Run the check catalogue on one submission and return the one result schema.

The catalogue is a pytest suite (``grader/checks``) driven by ``grader.harness.plugin``;
this module is the single entry point the CLI, the notebook helper and batch
grading share, so every mode gives the same verdicts.
"""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path

import pytest

from grader.harness import expected as ex
from grader.harness.plugin import RESULTS
from grader.protocol import ErrorInfo
from grader.results import SubmissionResult, environment_fingerprint

CHECKS_DIR = Path(__file__).resolve().parent.parent / "checks"


class _Collector:
    """Receives the plugin's results when the pytest session ends."""

    def __init__(self) -> None:
        self.results: list = []
        self.isolation: list[str] = []
        self.import_error: ErrorInfo | None = None

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.results = list(session.config.stash.get(RESULTS, []))
        sub = getattr(session.config, "_capgrade_submission", None)
        if sub is not None:
            self.isolation = list(sub.isolation)
            if sub.import_outcome is not None and not sub.import_outcome.ok:
                self.import_error = sub.import_outcome.error


def pytest_args(submission: Path, include_hidden: bool = False, only: str | None = None,
                device: str = "cpu", timeout: float | None = None, record: bool = False,
                hidden_expected: Path | None = None, verbose: bool = False,
                include_slow: bool = False, loss_file: Path | None = None,
                notebook: Path | None = None, notebook_out: Path | None = None,
                groups: tuple[str, ...] = ()) -> list[str]:
    args = [str(CHECKS_DIR), "-c", str(CHECKS_DIR / "pytest.ini"), "--rootdir", str(CHECKS_DIR),
            "--submission", str(submission), "--device", device,
            "--visibility", "all" if include_hidden or record else "public",
            "--capture=no", "-q" if verbose else "-qq"]
    if not verbose:  # results come from the plugin: pytest's tracebacks would go unread
        args.append("--tb=no")
    if only:
        args += ["-k", only]
    for group in groups:
        args += ["--group", group]
    if timeout:
        args += ["--check-timeout", str(timeout)]
    if record:
        args.append("--record")
    if include_slow:
        args.append("--slow")
    if loss_file is not None:
        args += ["--loss-file", str(loss_file)]
    if notebook is not None:
        args += ["--notebook", str(notebook)]
    if notebook_out is not None:
        args += ["--notebook-out", str(notebook_out)]
    if hidden_expected is not None:
        args += ["--hidden-expected", str(hidden_expected)]
    return args


def run_checks(submission: str | Path, include_hidden: bool = False, only: str | None = None,
               device: str = "cpu", timeout: float | None = None, record: bool = False,
               hidden_expected: Path | None = None, verbose: bool = False,
               include_slow: bool = False, loss_file: Path | None = None,
               notebook: Path | None = None, notebook_out: Path | None = None,
               groups: tuple[str, ...] = ()) -> SubmissionResult:
    """Grade one file; never raises for a broken submission (the result says why).

    ``include_slow`` adds the end-to-end checks (overfitting, the submitted loss
    file); ``only`` also selects them when its expression matches their ids.
    ``loss_file`` defaults to rnn_lstm_attention_submission.pt next to the module,
    ``notebook`` to rnn_lstm_captioning.ipynb; the notebook checks leave the
    executed copy, its HTML and a report in ``notebook_out`` (default: a temp dir).
    ``groups`` keeps the checks of these parts only (``catalogue()`` names them).
    """
    start = time.monotonic()
    path = Path(submission)
    result = SubmissionResult(submission=str(path), environment=environment_fingerprint())
    if not path.is_file():
        result.status, result.message = "missing-file", f"no such file: {path}"
        return result
    if include_hidden and not record:
        hidden = Path(hidden_expected or ex.default_hidden_path())
        if not hidden.is_file():
            result.status = "no-hidden-values"
            result.message = (f"hidden expected values not found at {hidden}: pass "
                              "--hidden-expected PATH (the instructors' "
                              "reference/expected/hidden.safetensors, written by "
                              "`capgrade build` in "
                              "the checkout); students run the public checks only (omit --all)")
            return result
        hidden_expected = hidden
    collector = _Collector()
    args = pytest_args(path, include_hidden, only, device, timeout, record, hidden_expected,
                       verbose, include_slow, loss_file, notebook, notebook_out, groups)
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        code = pytest.main(args, plugins=[collector])
    result.checks = collector.results
    result.isolation = collector.isolation
    result.duration = round(time.monotonic() - start, 3)
    if collector.import_error is not None:
        err = collector.import_error
        result.status = "import-error"
        where = f" (line {err.frames[-1]['line']})" if err.frames else ""
        result.message = f"importing the submission failed: {err.type}: {err.message}{where}"
    elif code == pytest.ExitCode.NO_TESTS_COLLECTED:
        result.status, result.message = "no-checks", f"no check matches {only or groups!r}"
    elif code in (pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.INTERNAL_ERROR):
        result.status, result.message = "grader-error", f"the check catalogue failed ({code})"
    return result


class _Catalogue:
    def __init__(self) -> None:
        self.items: list[pytest.Item] = []

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.items = list(session.items)


def catalogue() -> list[dict]:
    """Every check (collected, not run): id, group, points, visibility, slow."""
    from grader.harness.plugin import check_group, check_id, load_rubric

    found = _Catalogue()
    args = pytest_args(Path("unused.py"), include_hidden=True, include_slow=True)
    with contextlib.redirect_stdout(io.StringIO()):
        pytest.main([*args, "--collect-only"], plugins=[found])
    rubric = load_rubric()
    return [{"id": check_id(i), "group": check_group(i), "points": rubric[check_id(i)]["points"],
             "visibility": rubric[check_id(i)].get("visibility", "public"),
             "slow": bool(rubric[check_id(i)].get("slow", False))} for i in found.items]
