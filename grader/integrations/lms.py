"""TRUSTED side: a batch's grades as files Canvas and Moodle import (``capgrade grade --export``).

``gradebook.csv`` has a column per check; an LMS would import each as an assignment.
These exports carry one column, the total, with the identity columns the LMS
matches its students by, taken from the instructor's roster (the LMS's own
gradebook export). capgrade knows a student only by the id batch grading gave
them (their folder or file name), so that id is matched to a roster row, in a
fixed order of id kinds, case-insensitively.

Nothing is exported as 0 that capgrade did not grade: a student whose grading was
not clean (any row status but "graded", or a ``regrade`` flag on the row, its
result or a check), a roster row with no submission and a roster row two
submissions claim are left blank. They, and the submissions that match no
roster row, are listed in ``<lms>-unmatched.txt`` beside ``<lms>-import.csv``.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.integrations.roster import (  # noqa: F401 - the roster's names, as before
    _CANVAS_HOWTO,
    _ID_COLUMNS,
    _MOODLE_HOWTO,
    CANVAS_KINDS,
    MOODLE_KINDS,
    IdKind,
    Matching,
    Roster,
    RosterError,
    _need_columns,
    match,
    read_roster,
)
from grader.results import RunStatus, SubmissionResult
from grader.results.render import first_line, total_cell
from grader.results.store import Store

EXPORTS = ("canvas", "moodle")
DEFAULT_ASSIGNMENT = "RNN captioning"
#: The columns a Canvas gradebook import starts with, in this order.
CANVAS_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
#: The label of the row under the header giving each assignment's points (Canvas's own export
#: indents it; the importer recognises the words).
POINTS_POSSIBLE = "    Points Possible"
#: Columns of a Moodle grade export copied into the Moodle file, when the roster has them.
MOODLE_COLUMNS = ("First name", "Last name", "Username", "ID number", "Email address")
#: Without a roster, the Moodle file's identifier column: capgrade's student id.
MOODLE_IDENTIFIER = "Identifier"

_ASSIGNMENT_ID = re.compile(r"\s*\(\d+\)\s*$")  # Canvas's " (12345)" after an assignment name


# --------------------------------------------------------------------------- grades


@dataclass(frozen=True)
class Grade:
    """One student's outcome as an LMS sees it: a total, or no grade and why."""

    student: str
    score: float | None  # None: nothing to export (see reason)
    max_score: float = 0.0
    reason: str = ""


def _field(row: Mapping[str, Any] | Any, key: str) -> Any:
    """``row[key]`` for a dict or an sqlite3.Row, None when the row has no such column."""
    return row[key] if key in row.keys() else None  # noqa: SIM118 - a Row's `in` reads values


def no_grade_reason(row: Mapping[str, Any] | Any) -> str:
    """Why a store row must not be exported as a grade ("" when it may).

    Any status but a clean "graded" (could-not-grade, missing-files, timeouts, ...), or a
    ``regrade`` flag on the row, its result or one of its checks (the grader's own limits, such
    as running out of memory), means the total does not measure the student's work.
    """
    status = str(_field(row, "status") or "")
    message = first_line(str(_field(row, "message") or ""))
    if status != RunStatus.GRADED:
        return f"{status or 'no status'}: {message}" if message else status or "no status"
    if _field(row, "regrade"):
        return f"marked for regrade: {message}" if message else "marked for regrade"
    data = _field(row, "result")
    if isinstance(data, str | bytes):
        data = json.loads(data) if data else None
    if not data:
        return "graded, but no result was stored"
    if data.get("regrade"):  # a flag beside the schema's fields (set by hand or a tool)
        return "marked for regrade"
    flagged = SubmissionResult.from_dict(data).needs_regrade
    if flagged:
        more = f" and {len(flagged) - 3} more" if len(flagged) > 3 else ""
        return f"checks marked for regrade: {', '.join(flagged[:3])}{more}"
    return ""


def grades_from_rows(rows: Iterable[Mapping[str, Any] | Any]) -> list[Grade]:
    """The store's current rows (``Store.latest()``) as grades, cleanly graded or not."""
    grades = []
    for row in rows:
        reason = no_grade_reason(row)
        grades.append(Grade(student=str(row["student"]),
                            score=None if reason else float(row["score"]),
                            max_score=float(row["max_score"] or 0.0), reason=reason))
    return grades


# --------------------------------------------------------------------------- exports


@dataclass
class Export:
    """What one LMS export wrote and what it could not place (also in ``listing``)."""

    lms: str
    csv_path: Path
    listing: Path
    column: str
    graded: int = 0
    #: Section title -> lines; every student the CSV gives no grade, and every lost submission.
    problems: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: Students placed only by the part of an id before "@": worth a look, listed in the file.
    loose: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the terminal: where, how many graded, how many need attention."""
        counts = "; ".join(f"{len(lines)} {title.split(' (')[0]}"
                           for title, lines in self.problems.items() if lines)
        return (f"{self.lms}: {self.csv_path} (column {self.column!r}): {self.graded} "
                f"graded" + (f"; {counts} (see {self.listing})" if counts else ""))


_NOT_CLEAN = "not graded cleanly (left blank: fix or --regrade, then run again)"
_UNMATCHED = "submissions matching no roster row (not in the file)"
_NO_SUBMISSION = "roster rows with no submission (left blank)"
_TWICE = "roster rows several submissions match (left blank)"


def _assignment_column(roster: Roster | None, assignment: str) -> tuple[str, bool]:
    """The roster's own header for ``assignment`` (reused, so Canvas updates it), else the name.

    Matches the exact header, or the name before Canvas's " (id)" suffix; several columns
    with that name cannot be told apart, so that is an error.
    """
    name = assignment.strip()
    if not name:
        raise RosterError("--assignment is empty: give the name of the gradebook column")
    if roster is None:
        return name, False
    identity = {c.lower() for c in (*CANVAS_COLUMNS, *MOODLE_COLUMNS, *_ID_COLUMNS)}
    if name.lower() in identity:
        raise RosterError(f"--assignment {name!r} is a column naming students, not a grade: "
                          "give the assignment's name")
    exact = roster.column(name)
    if exact:
        return exact, True
    same = [h for h in roster.header if _ASSIGNMENT_ID.sub("", h).strip().lower() == name.lower()]
    if len(same) > 1:
        raise RosterError(f"roster {roster.path} has several columns named {name!r} "
                          f"({', '.join(same)}): pass the exact one, e.g. --assignment "
                          f"{same[0]!r}")
    return (same[0], True) if same else (name, False)


def _prepare(lms: str, roster_path: Path | None, assignment: str
             ) -> tuple[Roster | None, str, bool]:
    """Read and check the roster for ``lms``; RosterError before anything is written."""
    if lms not in EXPORTS:
        raise RosterError(f"unknown export {lms!r}: choose from {', '.join(EXPORTS)}")
    if lms == "canvas" and roster_path is None:
        raise RosterError("--export canvas needs --roster ROSTER.csv: Canvas matches grades "
                          f"by its own student ids, which only its export has; {_CANVAS_HOWTO}")
    howto = _CANVAS_HOWTO if lms == "canvas" else _MOODLE_HOWTO
    roster = read_roster(roster_path, howto) if roster_path is not None else None
    if roster is not None:
        if lms == "canvas":
            _need_columns(roster, CANVAS_COLUMNS, any_of=False, howto=_CANVAS_HOWTO)
        else:
            _need_columns(roster, ("Username", "ID number", "Email address"), any_of=True,
                          howto=_MOODLE_HOWTO)
    column, reused = _assignment_column(roster, assignment)
    return roster, column, reused


def check_request(exports: Sequence[str], roster_path: Path | None, assignment: str
                  ) -> list[str]:
    """What is wrong with these export options, found before grading starts (may be none)."""
    problems = []
    for lms in exports:
        try:
            _prepare(lms, roster_path, assignment)
        except RosterError as exc:
            problems.append(f"--export {lms}: {exc}")
    if roster_path is not None and not exports:
        problems.append("--roster is read only with --export canvas or --export moodle")
    return problems


def write(grades: Sequence[Grade], lms: str, out: Path, roster_path: Path | None = None,
          assignment: str = DEFAULT_ASSIGNMENT) -> Export:
    """Write ``<lms>-import.csv`` and ``<lms>-unmatched.txt`` in ``out`` from these grades.

    On RosterError nothing is written, and an earlier run's files are removed, so no stale
    import is left lying next to a newer gradebook.
    """
    csv_path, listing = out / f"{lms}-import.csv", out / f"{lms}-unmatched.txt"
    try:
        roster, column, reused = _prepare(lms, roster_path, assignment)
    except RosterError:
        csv_path.unlink(missing_ok=True)
        listing.unlink(missing_ok=True)
        raise
    export = Export(lms=lms, csv_path=csv_path, listing=listing, column=column)
    graded_max = [g.max_score for g in grades if g.score is not None]
    max_score = max(graded_max) if graded_max else None
    if roster is None:
        table = [[MOODLE_IDENTIFIER, column]]
        table += [[g.student, total_cell(g.score)] for g in grades]
        export.problems[_NOT_CLEAN] = [f"{g.student}: {g.reason}" for g in grades
                                       if g.score is None]
    else:
        matching = match(grades, roster, CANVAS_KINDS if lms == "canvas" else MOODLE_KINDS)
        if lms == "canvas":
            identity = list(CANVAS_COLUMNS)
            points = roster.points_possible.get(column, "").strip() if reused else \
                total_cell(max_score)
            table = [[*identity, column]]
            if points:
                table.append([POINTS_POSSIBLE] + [""] * (len(identity) - 1) + [points])
            if reused and points and max_score is not None and _differs(points, max_score):
                export.notes.append(
                    f"Canvas's {column!r} is worth {points} points; capgrade's total is out of "
                    f"{total_cell(max_score)}: the scores are capgrade's points, unscaled")
        else:
            identity = [c for c in MOODLE_COLUMNS if roster.column(c)]
            table = [[*identity, column]]
        for i in range(len(roster.students)):
            grade = matching.rows.get(i, (None, ""))[0]
            table.append([roster.value(i, c) for c in identity] +
                         [total_cell(grade.score if grade else None)])
        export.problems[_NOT_CLEAN] = [
            f"{g.student} -> {roster.describe(i)}: {g.reason}"
            for i, (g, _) in sorted(matching.rows.items()) if g.score is None]
        export.problems[_UNMATCHED] = [
            f"{g.student}: {why}" + (f" (capgrade: {total_cell(g.score)})" if g.score is not None
                                     else f" ({g.reason})")
            for g, why in matching.unmatched]
        claimed = {i for i in range(len(roster.students))
                   if i in matching.rows or i in matching.claimed_twice}
        export.problems[_NO_SUBMISSION] = [roster.describe(i) for i in
                                           range(len(roster.students)) if i not in claimed]
        export.loose = [f"{g.student} -> {roster.describe(i)}"
                        for i, (g, kind) in sorted(matching.rows.items()) if kind.local_part]
        export.problems[_TWICE] = [
            f"{roster.describe(i)}: {', '.join(g.student for g in gs)}"
            for i, gs in sorted(matching.claimed_twice.items())]
    export.graded = sum(1 for cells in table[1:] if cells[-1] != "" and
                        cells[0] != POINTS_POSSIBLE)
    out.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(table)
    listing.write_text(_listing_text(export), encoding="utf-8")
    return export


def _differs(points: str, max_score: float) -> bool:
    try:
        return abs(float(points) - max_score) > 1e-6
    except ValueError:
        return True


def _listing_text(export: Export) -> str:
    lines = [f"capgrade {export.lms} export: {export.csv_path.name}, column "
             f"{export.column!r}, {export.graded} students graded."]
    lines += [f"note: {n}" for n in export.notes]
    for title, entries in export.problems.items():
        lines += ["", f"{title}: {len(entries) or 'none'}"] + [f"  {e}" for e in entries]
    if export.loose:
        lines += ["", f"matched only by the part before @ (worth a look): {len(export.loose)}"]
        lines += [f"  {e}" for e in export.loose]
    return "\n".join(lines) + "\n"


def export(store: Store, out: Path, exports: Sequence[str], roster_path: Path | None,
           assignment: str = DEFAULT_ASSIGNMENT) -> tuple[list[Export], list[str]]:
    """Every requested LMS export from the store's current grades: what was written, and the
    problems that stopped an export (each already naming what to do)."""
    grades = grades_from_rows(store.latest())
    done, problems = [], []
    for lms in dict.fromkeys(exports):
        try:
            done.append(write(grades, lms, Path(out), roster_path, assignment))
        except RosterError as exc:
            problems.append(f"--export {lms}: {exc}")
    return done, problems
