"""The instructor's class list (an LMS's own gradebook export) and matching ids to its rows.

Used by the LMS exports (``grader.integrations.lms``): a capgrade student id (their
folder or file name) names a roster row under a fixed order of id kinds
(``CANVAS_KINDS``, ``MOODLE_KINDS``), case-insensitively; an id that names several rows,
or a row several ids name, is reported, never guessed at.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from grader.integrations.lms import Grade

_CANVAS_HOWTO = ("export the gradebook from Canvas (Grades > Export > Export Entire Gradebook) "
                 "and pass that CSV file unchanged with --roster")
_MOODLE_HOWTO = ("export the grades from Moodle (Grades > Export > Plain text file) and pass "
                 "that CSV file with --roster, or leave --roster out")


class RosterError(ValueError):
    """The export cannot be made: the message names the problem and what to do about it."""


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
