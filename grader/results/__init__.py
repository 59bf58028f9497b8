"""TRUSTED side: the one result schema; every output format is a rendering of it.

Plain dataclasses that round-trip through JSON (``to_dict`` / ``from_dict``), so
batch grading can store them and every renderer reads the same fields.
"""

from __future__ import annotations

import enum
import platform
import sys
from dataclasses import asdict, dataclass, field, fields
from typing import Any

SCHEMA_VERSION = 2

class Status(enum.StrEnum):
    """A check's outcome; every renderer and exit code reads these.

    A ``StrEnum``: a member equals, prints, formats and serialises (JSON, CSV, SQLite) as
    its string, so every output is the string it always was.
    """

    PASSED = "passed"
    FAILED = "failed"  # a wrong answer
    ERROR = "error"  # the check could not judge: crash, timeout, the grader's limits
    SKIPPED = "skipped"  # not run in this mode
    ADVISORY = "advisory"  # an advisory check found something worth saying: worth nothing


class RunStatus(enum.StrEnum):
    """How grading a whole submission went; the last four are a batch row's own (its
    ``status`` column in the store and ``gradebook.csv``, never a ``SubmissionResult``'s)."""

    GRADED = "graded"
    IMPORT_ERROR = "import-error"  # graded: every check says the import failed
    MISSING_FILE = "missing-file"  # the caller's mistake: nothing to grade
    NO_HIDDEN_VALUES = "no-hidden-values"  # the caller's mistake: hidden checks without values
    NO_CHECKS = "no-checks"  # the caller's mistake: the selection matched nothing
    GRADER_ERROR = "grader-error"  # the catalogue itself failed
    #: the student's install cannot run checks (a broken torch/torchvision pair, native
    #: Windows): no check ran; the environment's problem, not the submission's (exit code 2)
    ENVIRONMENT_ERROR = "environment-error"
    #: batch: the grading machine could not judge it (its limits): retried by the next run
    NEEDS_REGRADE = "needs-regrade"
    #: batch: needed a regrade twice in a row for the same cause: an instructor looks at it
    NEEDS_ATTENTION = "needs-attention"
    #: batch: the grader itself failed on this submission (or its identical original did)
    COULD_NOT_GRADE = "could-not-grade"
    #: batch: the student's folder lacks the files to grade (beside the single-file
    #: ``missing-file`` of one grading)
    MISSING_FILES = "missing-files"

    @property
    def usage_error(self) -> bool:
        """The request was wrong (exit code 2), rather than the submission or the grader."""
        return self in (RunStatus.MISSING_FILE, RunStatus.NO_HIDDEN_VALUES, RunStatus.NO_CHECKS,
                        RunStatus.ENVIRONMENT_ERROR)

    @property
    def graded(self) -> bool:
        """The submission got verdicts (an import error is one, for every check)."""
        return self in (RunStatus.GRADED, RunStatus.IMPORT_ERROR)


STATUSES = tuple(s.value for s in Status)
VISIBILITIES = ("public", "hidden", "after_due_date")


@dataclass
class CheckResult:
    id: str
    status: Status
    score: float
    max_score: float
    visibility: str = "public"
    message: str = ""
    #: What was measured (e.g. the worst relative error) and the bar it was held to.
    error: float | None = None
    tolerance: str | None = None
    duration: float = 0.0
    #: The student function the check exercises and its group (rnn, lstm, ...).
    target: str = ""
    group: str = ""
    #: Captured stdout/stderr of the student's code during the check (capped).
    output: str = ""
    #: The handout requirement the check enforces (rubric ``requires``).
    requires: str = ""
    #: An advisory check: reported, worth 0 points, never a failure (rubric ``advisory``).
    advisory: bool = False
    #: Where the check is defined, for CI annotations: its test file relative to the project
    #: (``grader/checks/test_rnn.py``) and the line of its ``def``; "" / 0 when not known.
    file: str = ""
    line: int = 0
    #: Not a verdict: the grading machine ran out of this ("memory", "time", "cpu",
    #: "deadline"), so the check is an error and the submission must be regraded.
    regrade: str = ""
    #: Known mistakes whose values this check saw (``grader.diagnosis``): each a dict with
    #: ``id`` (the misconception), ``confidence`` (0 to 1) and ``text`` (for the student).
    diagnoses: list[dict[str, Any]] = field(default_factory=list)
    #: Not a verdict yet: why an instructor must look at the submission before this check's
    #: points are given (e.g. code that reaches around the grader); "" when none.
    review: str = ""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "status" and value in STATUSES:  # an unknown one: __post_init__ says so
            value = Status(value)
        object.__setattr__(self, name, value)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")
        if self.visibility not in VISIBILITIES:
            raise ValueError(f"unknown visibility {self.visibility!r}")

    @property
    def passed(self) -> bool:
        return self.status is Status.PASSED

    @property
    def feedback(self) -> str:
        """What a student reads: the named mistakes first, then the check's message."""
        return "\n".join([d["text"] for d in self.diagnoses] + ([self.message] if self.message
                                                                 else []))

    @property
    def counts_against(self) -> bool:
        """Whether this outcome is a failure of the submission (advisories never are)."""
        return self.status in (Status.FAILED, Status.ERROR) and not self.advisory


@dataclass
class SubmissionResult:
    submission: str
    checks: list[CheckResult] = field(default_factory=list)
    #: "graded", or why grading could not happen ("import-error", "missing-file", ...).
    status: RunStatus = RunStatus.GRADED
    message: str = ""
    environment: dict[str, Any] = field(default_factory=dict)
    #: Isolation layers actually applied to the worker on this host.
    isolation: list[str] = field(default_factory=list)
    duration: float = 0.0
    schema_version: int = SCHEMA_VERSION

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "status":  # the engine sets it after construction too: always the enum
            value = RunStatus(value)
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:  # a notebook cell ending in check(...) shows this under the table
        counts = ", ".join(f"{n} {s}" for s, n in self.counts().items() if n)
        return (f"SubmissionResult({self.submission!r}, {self.status}: {counts or 'no checks'}; "
                f"{self.score:g} / {self.max_score:g} points)")

    @property
    def score(self) -> float:
        return round(sum(c.score for c in self.checks), 6)

    @property
    def max_score(self) -> float:
        return round(sum(c.max_score for c in self.checks if c.status is not Status.SKIPPED),
                     6)

    @property
    def all_passed(self) -> bool:
        ran = [c for c in self.checks if c.status is not Status.SKIPPED]
        return bool(ran) and not any(c.counts_against for c in ran)

    @property
    def needs_regrade(self) -> list[str]:
        """Checks the grading machine could not judge (out of memory or time): regrade them."""
        return [c.id for c in self.checks if c.regrade]

    @property
    def review(self) -> list[str]:
        """Why an instructor must review the submission (points withheld until then)."""
        return [f"{c.id}: {c.review}" for c in self.checks if c.review]

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in STATUSES}

    def visible_to_student(self) -> SubmissionResult:
        """The same result with hidden checks' messages reduced to pass/fail."""
        checks = [c if c.visibility == "public" else
                  CheckResult(**{**asdict(c), "message": _hidden_message(c), "output": ""})
                  for c in self.checks]
        return SubmissionResult(**{**asdict(self), "checks": checks})

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(score=self.score, max_score=self.max_score, counts=self.counts(),
                    review=self.review)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SubmissionResult:
        """The result ``to_dict`` wrote (or a stored one): derived totals and any key that is
        not a field of the schema (a flag a tool added beside it) are left out."""
        data = {k: v for k, v in data.items() if k in _FIELDS[cls]}
        data["checks"] = [CheckResult(**{k: v for k, v in c.items() if k in _FIELDS[CheckResult]})
                          for c in data.get("checks", [])]
        return cls(**data)


_FIELDS = {cls: {f.name for f in fields(cls)} for cls in (CheckResult, SubmissionResult)}


def _hidden_message(check: CheckResult) -> str:
    if check.passed:
        return "passed"
    return f"{check.status} (hidden check: details withheld)"


def environment_fingerprint() -> dict[str, Any]:
    """Versions that can change a verdict, recorded with every result (torch not imported)."""
    import importlib.metadata

    from grader import __version__

    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = "not installed"

    return {
        "capgrade": __version__,
        "python": sys.version.split()[0],
        "torch": torch_version,
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
