"""Rows the grading machine could not judge: never a grade, retried, escalated when the
same cause strikes twice in a row (``needs-attention``, for an instructor)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeGuard

from grader.results import RunStatus

if TYPE_CHECKING:
    import sqlite3

NEEDS_REGRADE = RunStatus.NEEDS_REGRADE
NEEDS_ATTENTION = RunStatus.NEEDS_ATTENTION


def _reusable(row: sqlite3.Row | None) -> TypeGuard[sqlite3.Row]:
    """A stored grade another identical submission may take over (never a needs-regrade)."""
    return row is not None and row["status"] not in (NEEDS_REGRADE, NEEDS_ATTENTION)


def regrade_cause(result: dict[str, Any] | None) -> str:
    """What the grading machine ran out of for a needs-regrade row: "memory", "cpu+time", ...

    The resources its checks name (``CheckResult.regrade``); "grading process" when
    the whole grading failed without a result (out of memory, a pool process died).
    """
    found = sorted({c["regrade"] for c in (result or {}).get("checks", []) if c.get("regrade")})
    return "+".join(found) if found else "grading process"


def _evidence(result: dict[str, Any] | None, message: str, limit: int = 700) -> str:
    """The harness's own words for each check it could not judge (or the row's message)."""
    parts = []
    for c in (result or {}).get("checks", []):
        if c.get("regrade"):
            text = c.get("message", "").split(". This says nothing")[0]
            parts.append(f"{c['id']}: {text.splitlines()[0] if text else c['regrade']}")
    text = "; ".join(parts) or message
    return text if len(text) <= limit else text[:limit - 3] + "..."


def escalate(previous: Any, done: dict[str, Any], student: str) -> dict[str, Any]:
    """``done`` (a grading's outcome), as ``needs-attention`` when it is the second
    needs-regrade in a row of the same files for the same cause (``regrade_cause``).

    ``previous``: the stored row this grading replaces (same student, files and
    grading key), or None. A different cause is a new try: still ``needs-regrade``.
    """
    if done["status"] != NEEDS_REGRADE or previous is None or \
            previous["status"] not in (NEEDS_REGRADE, NEEDS_ATTENTION):
        return done
    cause = regrade_cause(done.get("result"))
    if cause != regrade_cause(_json(previous["result"])):
        return done
    before = previous["message"] if previous["status"] == NEEDS_REGRADE else cause
    message = (f"the grading machine could not judge this submission twice in a row, for the "
               f"same cause ({cause}); not retried again: look at the evidence, then grade "
               f"it on a machine with more memory or CPUs (capgrade grade ... --regrade "
               f"{student}) or by hand. This run: {_evidence(done.get('result'), done['message'])}"
               f" | The run before: {_evidence(_json(previous['result']), before)}")
    return {**done, "status": NEEDS_ATTENTION, "message": message}


def _json(text: str | None) -> dict | None:
    import json

    return json.loads(text) if text else None
