"""One submission as a gradebook row, Markdown summary: the tabular renderings."""

from __future__ import annotations

from grader.results import RunStatus, Status, SubmissionResult
from grader.results.text import REVIEW_HEADLINE, _num, _ran, _total, clean, first_line


def render_csv_row(result: SubmissionResult) -> dict[str, str | float]:
    """One gradebook row: submission, status, totals, then each check id -> its score.

    A skipped check's cell is empty (not 0) so "not run" stays distinguishable from "wrong".
    Submissions that failed to import have no check columns; the batch writer takes the
    union of keys across rows.
    """
    row: dict[str, str | float] = {"submission": result.submission, "status": result.status,
                                   "score": _total(result), "max_score": result.max_score}
    for c in result.checks:
        row[c.id] = gradebook_cell(c.status, c.score, c.advisory)
    if result.review:  # last, so a spreadsheet's check columns keep their places
        row["review"] = "; ".join(clean(r) for r in result.review)
    return row


def gradebook_cell(status: str, score: float, advisory: bool = False) -> str | float:
    """A check's gradebook cell: its score; empty when skipped; advisories say so in words."""
    if status == Status.SKIPPED:
        return ""
    if advisory:
        return "advisory" if status == Status.ADVISORY else "ok"
    return round(score, 6)


def total_cell(score: float | None) -> str:
    """A total as an LMS import reads it ("7.5", "10"); blank when there is no grade, never 0.

    A blank cell is the one way an import can say "no grade here" instead of "scored nothing".
    """
    if score is None:
        return ""
    return f"{round(score, 4):.4f}".rstrip("0").rstrip(".")


# --------------------------------------------------------------------------- Markdown


_MARKS = {Status.PASSED: "✅ passed", Status.FAILED: "❌ failed", Status.ERROR: "⚠️ error",
          Status.SKIPPED: "skipped", Status.ADVISORY: "💡 advisory"}


def _md_cell(text: str) -> str:
    """Student-controlled text as one GitHub Markdown table cell (no HTML, no new cells)."""
    text = first_line(clean(text))
    for char, escaped in (("\\", "\\\\"), ("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"),
                          ("|", "&#124;"), ("`", "\\`"), ("*", "\\*"), ("_", "\\_"),
                          ("[", "\\["), ("]", "\\]")):
        text = text.replace(char, escaped)
    return text


def render_markdown(result: SubmissionResult) -> str:
    """A GitHub Markdown summary (for $GITHUB_STEP_SUMMARY): totals, then a row per check."""
    ran = _ran(result)
    lines = [f"## capgrade: {sum(c.passed for c in ran)} of {len(ran)} checks passed, "
             f"{_num(_total(result))} / {_num(result.max_score)} points", ""]
    if result.status is not RunStatus.GRADED:
        lines += [f"**{_md_cell(result.status)}**: {_md_cell(result.message)}", ""]
    if result.review:
        lines += [f"**{REVIEW_HEADLINE}** (points withheld until then): "
                  + "; ".join(_md_cell(r) for r in result.review), ""]
    if ran:
        lines += ["| check | status | points | message |", "|---|---|---|---|"]
        lines += [f"| `{c.id}` | {_MARKS.get(c.status, c.status)} | {_num(c.score)} / "
                  f"{_num(c.max_score)} | {_md_cell(c.feedback)} |" for c in ran]
    return "\n".join(lines)
