"""Text every rendering shares: student text cleaned, numbers printed, the totals.

Text that came from student code (messages, captured output) is cleaned of terminal escapes
and control characters before it reaches any format (``clean``), so a submission cannot
garble a terminal or produce an XML file that does not parse.
"""

from __future__ import annotations

import math
import re

from grader.results import CheckResult, Status, SubmissionResult
from grader.results.sanitize import sanitize

# ANSI/VT escape sequences: CSI (colours, cursor moves), OSC (titles, links), two-byte ESC x.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?")
# C0/C1 controls except tab and newline, surrogates and the two non-characters XML 1.0
# forbids. What is left is valid XML 1.0 character data and harmless in a terminal.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def clean(text: str) -> str:
    """Student-controlled text made safe for terminals, JSON consumers and XML.

    Escape sequences are dropped; what is left of controls, bidi overrides and the like
    is written out visibly (``grader.results.sanitize``), in every format, whatever field
    it came in (a student-chosen folder name too).
    """
    text = _ANSI.sub("", str(text)).replace("\r\n", "\n")
    return sanitize(_UNSAFE.sub("", text))


def first_line(text: str) -> str:
    """The first non-empty line of a cleaned message: the part one-line views show."""
    for line in clean(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


def _num(x: float) -> str:
    """Scores printed without float noise: 2 -> '2', 1.5 -> '1.5'."""
    return f"{round(x, 4):g}"


def _ran(result: SubmissionResult) -> list[CheckResult]:
    return [c for c in result.checks if c.status is not Status.SKIPPED]


def _total(result: SubmissionResult) -> float:
    """Points earned by checks that ran; skipped checks never count (matches max_score)."""
    return round(sum(c.score for c in _ran(result)), 6)


def _measured(check: CheckResult) -> str:
    """'measured 3.1e-03, tolerance rtol=1e-05, atol=1e-08', or '' when nothing was measured."""
    parts = []
    if check.error is not None:
        err = check.error
        parts.append(f"measured {err:.2e}" if math.isfinite(err) else f"measured {err}")
    if check.tolerance:
        parts.append(f"tolerance {clean(check.tolerance)}")
    return ", ".join(parts)


REVIEW_HEADLINE = "NEEDS AN INSTRUCTOR'S REVIEW"


def review_note(result: SubmissionResult) -> str:
    """One line for every rendering: which checks wait for a person, and why."""
    return (f"{REVIEW_HEADLINE} (points withheld until then): "
            + "; ".join(clean(r) for r in result.review))
