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

_CANVAS_HOWTO = ("export the gradebook from Canvas (Grades > Export > Export Entire Gradebook) "
                 "and pass that CSV file unchanged with --roster")
_MOODLE_HOWTO = ("export the grades from Moodle (Grades > Export > Plain text file) and pass "
                 "that CSV file with --roster, or leave --roster out")
_ASSIGNMENT_ID = re.compile(r"\s*\(\d+\)\s*$")  # Canvas's " (12345)" after an assignment name


class RosterError(ValueError):
    """The export cannot be made: the message names the problem and what to do about it."""


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
    return row[key] if key in row.keys() else None


def no_grade_reason(row: Mapping[str, Any] | Any) -> str:
    """Why a store row must not be exported as a grade ("" when it may).

    Any status but a clean "graded" (could-not-grade, missing-files, timeouts, ...), or a
    ``regrade`` flag on the row, its result or one of its checks (the grader's own limits, such
    as running out of memory), means the total does not measure the student's work.
    """
    status = str(_field(row, "status") or "")
    message = first_line(str(_field(row, "message") or ""))
    if status != "graded":
        return f"{status or 'no status'}: {message}" if message else status or "no status"
    if _field(row, "regrade"):
        return f"marked for regrade: {message}" if message else "marked for regrade"
    result = _field(row, "result")
    if isinstance(result, str | bytes):
        result = json.loads(result) if result else None
    if not result:
        return "graded, but no result was stored"
    if result.get("regrade"):
        return "marked for regrade"
    flagged = [str(c.get("id", "?")) for c in result.get("checks", []) if c.get("regrade")]
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


# --------------------------------------------------------------------------- roster


@dataclass
class Roster:
    """The instructor's class list: the LMS's own CSV export, its student rows by header."""

    path: Path
    header: list[str]
    students: list[dict[str, str]]
    #: The "Points Possible" row's cells by header; empty when the file has none.
    points_possible: dict[str, str] = field(default_factory=dict)

    def column(self, name: str) -> str | None:
        """The header as spelled in the file for ``name``, matched case-insensitively."""
        wanted = name.strip().lower()
        return next((h for h in self.header if h.strip().lower() == wanted), None)

    def value(self, index: int, name: str) -> str:
        column = self.column(name)
        return self.students[index].get(column, "").strip() if column else ""

    def describe(self, index: int) -> str:
        """A roster row as a person reads it: the name, then the ids it has."""
        name = self.value(index, "Student") or " ".join(
            x for x in (self.value(index, "First name"), self.value(index, "Last name")) if x)
        ids = [f"{c} {self.value(index, c)}" for c in ("SIS Login ID", "SIS User ID", "ID",
                                                       "Username", "ID number", "Email address")
               if self.value(index, c)]
        return f"{name or '(no name)'} ({', '.join(ids)})" if ids else name or "(no name)"


#: Columns that identify a student in either LMS's export: a row with none is not a student.
_ID_COLUMNS = ("ID", "SIS User ID", "SIS Login ID", "Username", "ID number", "Email address",
               "Email")


def read_roster(path: Path, howto: str = _CANVAS_HOWTO) -> Roster:
    """Read an LMS export; RosterError (ending with ``howto``) when it cannot be read as CSV."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            table = list(csv.reader(f, strict=True))
    except FileNotFoundError:
        raise RosterError(f"roster {path} not found: {howto}") from None
    except UnicodeDecodeError as exc:
        raise RosterError(f"roster {path} is not UTF-8 text ({exc.reason} at byte {exc.start}): "
                          "save it as 'CSV UTF-8', or use the LMS's export unchanged") from None
    except csv.Error as exc:
        raise RosterError(f"roster {path} is not a readable CSV file ({exc}): use the LMS's "
                          "export unchanged, or save it again as CSV") from None
    except OSError as exc:
        raise RosterError(f"roster {path} cannot be read ({exc.strerror or exc})") from None
    if not table or not any(cell.strip() for cell in table[0]):
        raise RosterError(f"roster {path} is empty: {howto}")
    header = [cell.strip() for cell in table[0]]
    roster = Roster(path=path, header=header, students=[])
    id_columns = [c for c in (roster.column(n) for n in _ID_COLUMNS) if c]
    for cells in table[1:]:
        row = dict(zip(header, cells + [""] * (len(header) - len(cells)), strict=False))
        if any(row.get(c, "").strip() for c in id_columns):
            roster.students.append(row)
        elif row.get(roster.column("Student") or "", "").strip().lower() == "points possible":
            roster.points_possible = row
        # else: another row without a student (Canvas's "Manual Posting", a blank line)
    return roster


def _need_columns(roster: Roster, columns: Sequence[str], any_of: bool, howto: str) -> None:
    """RosterError unless the roster has ``columns`` (or one of them) and some student rows."""
    missing = [c for c in columns if not roster.column(c)]
    if len(missing) == len(columns) if any_of else missing:
        found = ", ".join(roster.header[:8]) + (", ..." if len(roster.header) > 8 else "")
        split = next((d for d in (";", "\t") if len(roster.header) == 1 and d in
                      roster.header[0]), None)
        hint = f"; its cells are separated by {split!r}, not commas" if split else ""
        need = f"one of the columns {', '.join(columns)}" if any_of else \
            f"the column{'s' * (len(missing) > 1)} {', '.join(missing)}"
        raise RosterError(f"roster {roster.path} lacks {need} (its header: {found}{hint}): "
                          f"{howto}")
    if not roster.students:
        raise RosterError(f"roster {roster.path} has no student rows: {howto}")


# --------------------------------------------------------------------------- matching


@dataclass(frozen=True)
class IdKind:
    """One way a capgrade id may name a roster row: these columns, whole or the part before @."""

    label: str
    columns: tuple[str, ...]
    local_part: bool = False


#: The order matters: the first kind under which a student's id names a row decides.
CANVAS_KINDS = (IdKind("SIS Login ID", ("SIS Login ID",)),
                IdKind("SIS User ID", ("SIS User ID",)),
                IdKind("Canvas ID", ("ID",)),
                IdKind("login/email local part", ("SIS Login ID", "Email", "Email address"), True))
MOODLE_KINDS = (IdKind("Username", ("Username",)),
                IdKind("ID number", ("ID number",)),
                IdKind("Email address", ("Email address", "Email")),
                IdKind("username/email local part", ("Username", "Email address", "Email"), True))


def _key(text: str, local_part: bool) -> str:
    """Ids compared as the same text however written: case, and NFC (a macOS file name's
    NFD "zoë" is the roster's "zoë")."""
    import unicodedata

    text = unicodedata.normalize("NFC", text.strip()).lower()
    return text.split("@", 1)[0] if local_part else text


@dataclass
class Matching:
    """Which roster row each grade went to, and everything that could not be placed."""

    rows: dict[int, tuple[Grade, IdKind]] = field(default_factory=dict)  # row -> grade, how
    unmatched: list[tuple[Grade, str]] = field(default_factory=list)  # (grade, why)
    claimed_twice: dict[int, list[Grade]] = field(default_factory=dict)


def match(grades: Sequence[Grade], roster: Roster, kinds: Sequence[IdKind]) -> Matching:
    """Place each grade on the roster row its student id names (see the module docstring).

    An id that names several rows under the first kind that finds it, or a row that several
    ids name, is never guessed at: both are reported instead.
    """
    index: dict[IdKind, dict[str, set[int]]] = {}
    for kind in kinds:
        columns = [c for c in (roster.column(n) for n in kind.columns) if c]
        table: dict[str, set[int]] = {}
        for i, row in enumerate(roster.students):
            for column in columns:
                if row.get(column, "").strip():
                    table.setdefault(_key(row[column], kind.local_part), set()).add(i)
        index[kind] = table
    result = Matching()
    claims: dict[int, list[tuple[Grade, IdKind]]] = {}
    for grade in grades:
        found: tuple[IdKind, set[int]] | None = None
        for kind in kinds:
            rows = index[kind].get(_key(grade.student, kind.local_part))
            if rows:
                found = (kind, rows)
                break
        if found is None:
            result.unmatched.append((grade, "no roster row has this id"))
        elif len(found[1]) > 1:
            result.unmatched.append((grade, f"{len(found[1])} roster rows share this "
                                            f"{found[0].label}; not guessing"))
        else:
            claims.setdefault(next(iter(found[1])), []).append((grade, found[0]))
    for i, claimed in sorted(claims.items()):
        if len(claimed) == 1:
            result.rows[i] = claimed[0]
        else:
            result.claimed_twice[i] = [g for g, _ in claimed]
    return result


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
            table = [identity + [column]]
            if points:
                table.append([POINTS_POSSIBLE] + [""] * (len(identity) - 1) + [points])
            if reused and points and max_score is not None and _differs(points, max_score):
                export.notes.append(
                    f"Canvas's {column!r} is worth {points} points; capgrade's total is out of "
                    f"{total_cell(max_score)}: the scores are capgrade's points, unscaled")
        else:
            identity = [c for c in MOODLE_COLUMNS if roster.column(c)]
            table = [identity + [column]]
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
