"""Gradescope's ``results.json`` from one ``SubmissionResult`` (the Autograder Specifications).

The rubric's choice of when hidden checks show comes from ``grader.rubric``
(``hidden_checks_visibility``); this module reads no file.
"""

from __future__ import annotations

import json
import math
from typing import Any

from grader.results import CheckResult, RunStatus, Status, SubmissionResult
from grader.results.text import (
    REVIEW_HEADLINE,
    _measured,
    _ran,
    _total,
    clean,
    first_line,
)
from grader.rubric import HIDDEN_CHOICES, hidden_checks_visibility  # noqa: F401 - re-exported

#: Our visibility -> Gradescope's (gradescope-autograders.readthedocs.io/en/latest/specs/).
#: Our "hidden" checks carry points, and Gradescope's own "hidden" is only for tests that
#: add nothing to the total (students could read a hidden score off the visible total):
#: they go as "after_due_date", or "after_published" where the rubric's [gradescope] table
#: says ``hidden_checks = "after_published"``. While any test is not "visible", Gradescope
#: shows students no total.
GRADESCOPE_VISIBILITY = {"public": "visible", "hidden": "after_due_date",
                         "after_due_date": "after_due_date"}
#: Name of the 0-point test only instructors see when the grading machine ran out.
LIMITS_TEST = "Grading machine limits (instructors only)"

def _json_safe(value: Any) -> Any:
    """Non-finite floats as strings: Gradescope needs strict JSON (no NaN/Infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, str):
        return clean(value)
    return value


def _finite(x: float) -> float:
    return round(x, 6) if math.isfinite(x) else 0.0


def _test_output(c: CheckResult) -> str:
    lines = []
    if c.status is Status.ERROR:
        lines.append("error: the check could not judge this function")
    if c.advisory:
        lines.append("advisory check: worth no points, never a failure")
    msg = clean(c.feedback).strip()  # a named mistake first, then the check's message
    if msg:
        lines.append(msg)
    measured = _measured(c)
    if measured:
        lines.append(measured)
    out = clean(c.output).rstrip()
    if out:
        lines.append("--- output of your code ---\n" + out)
    return "\n".join(lines)


def gradescope_dict(result: SubmissionResult, hidden_as: str | None = None) -> dict[str, Any]:
    """Gradescope's results.json as a dict (fields per the Autograder Specifications page).

    Skipped checks are left out and do not count. Our "error" becomes Gradescope's "failed"
    (it only knows passed/failed) with the reason in the output. Advisory checks (0 points)
    carry no status, so Gradescope shows them as neither passed nor failed. Output fields
    are plain text ("text" formats), so messages containing '<' are never interpreted as HTML.
    ``hidden_as``: Gradescope's visibility for our hidden checks (default: the rubric's).
    Checks the grading machine could not judge (out of memory or time) are named in the
    top-level output, and a 0-point test only instructors see says which setting to raise.
    """
    shown = {**GRADESCOPE_VISIBILITY, "hidden": hidden_as or hidden_checks_visibility()}
    tests = []
    for c in _ran(result):
        test = {
            "name": clean(c.id),
            "score": _finite(c.score),
            "max_score": _finite(c.max_score),
            "status": Status.PASSED if c.passed else Status.FAILED,
            "output": _test_output(c),
            "visibility": shown[c.visibility],
            "tags": ([clean(c.group)] if c.group else []) + (["advisory"] if c.advisory else [])
            + (["regrade"] if c.regrade else []) + (["review"] if c.review else []),
            "extra_data": _json_safe({"status": c.status, "target": c.target, "error": c.error,
                                      "tolerance": c.tolerance, "duration": c.duration,
                                      "requires": c.requires, "advisory": c.advisory,
                                      "regrade": c.regrade, "review": c.review}),
        }
        if c.advisory:
            del test["status"]
        tests.append(test)
    if result.needs_regrade:
        tests.append({"name": LIMITS_TEST, "score": 0.0, "max_score": 0.0, "status": Status.FAILED,
                      "output": limits_note(result), "visibility": "hidden",
                      "tags": ["regrade"]})
    return {
        "score": _finite(_total(result)),
        "execution_time": round(result.duration, 3),
        "output": _gradescope_summary(result),
        "output_format": "text",
        "test_output_format": "text",
        "test_name_format": "text",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "extra_data": _json_safe({"submission": result.submission, "status": result.status,
                                  "isolation": list(result.isolation),
                                  "environment": result.environment,
                                  "counts": result.counts(),
                                  "regrade": result.needs_regrade,
                                  "review": result.review,
                                  "schema_version": result.schema_version}),
        "tests": tests,
    }


#: What the grading machine ran out of, in words.
_RAN_OUT = {"memory": "memory", "time": "CPU time", "cpu": "CPU time", "deadline": "time",
            "grader": "a working grader process"}


def ran_out_words(result: SubmissionResult) -> str:
    """"memory and time": what the grading machine ran out of, for messages."""
    return " and ".join(sorted({_RAN_OUT.get(c.regrade, c.regrade) for c in result.checks
                                if c.regrade}))


#: What an instructor raises when the grading machine ran out of each resource.
_RAISE = {"memory": "the autograder's memory",
          "time": "the autograder's CPUs (or run fewer submissions at once)",
          "cpu": "the sandbox's CPU-time limit (CAPGRADE_SANDBOX_CPU)",
          "deadline": "the autograder's timeout and CPUs (and `capgrade gradescope --deadline`)",
          "grader": "nothing: a grader process (the fork server) stopped; regrade, and report "
                    "it if it happens again"}


def limits_note(result: SubmissionResult) -> str:
    """For instructors: which checks the grading machine could not judge, and what to raise."""
    ran_out = sorted({c.regrade for c in result.checks if c.regrade})
    lines = [f"The grading machine ran out of {ran_out_words(result)} on "
             f"{len(result.needs_regrade)} check(s): {', '.join(result.needs_regrade)}. "
             "They count as 0 until regraded; the student was told it is not their fault.",
             *(f"- {r}: raise {_RAISE.get(r, r)}." for r in ran_out),
             "Gradescope: Configure Autograder, then the container's memory / CPU settings. "
             "Measure what this assignment needs first: capgrade gradescope --trial "
             "SUBMISSION --memory 768M --cpus 0.5 (see the instructor guide), then regrade.",
             "Details:"]
    lines += [f"- {c.id}: {first_line(c.message)}" for c in result.checks if c.regrade]
    return "\n".join(lines)


def _gradescope_summary(result: SubmissionResult) -> str:
    """Top-level text every student sees: says nothing about hidden checks' outcomes."""
    lines = []
    if result.status is not RunStatus.GRADED:
        lines.append(f"Grading failed ({result.status}): {clean(result.message).strip()}")
    if result.needs_regrade:  # never a verdict: say so first, to the student too
        lines.append(f"GRADING INCOMPLETE: the grading machine ran out of {ran_out_words(result)}"
                     " before every check could judge your code. "
                     "This is not your code's fault: those checks count 0 until your "
                     "instructor regrades the submission on a bigger machine.")
    if result.review:
        lines.append(f"{REVIEW_HEADLINE}: your instructor will look at your code before "
                     f"{len(result.review)} check(s) are scored (their points are withheld "
                     "until then).")
    public = [c for c in _ran(result) if c.visibility == "public"]
    if public:
        lines.append(f"{sum(c.passed for c in public)} of {len(public)} visible checks passed.")
    notes = [c for c in public if c.status is Status.ADVISORY]
    if notes:
        lines.append(f"{len(notes)} advisories (worth no points): "
                     f"{', '.join(c.id for c in notes)}.")
    others = len(_ran(result)) - len(public)
    if others:
        lines.append(f"{others} more checks are hidden or shown after the due date.")
    return "\n".join(lines)


def render_gradescope(result: SubmissionResult) -> str:
    """Gradescope's results.json (strict JSON, sorted keys)."""
    return json.dumps(gradescope_dict(result), indent=2, sort_keys=True, allow_nan=False,
                      default=str)
