"""LMS gradebook exports: Canvas and Moodle import files, how students are matched to the
roster, and that nothing capgrade did not grade cleanly is ever exported as a number."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from grader.integrations import lms
from grader.results import CheckResult, SubmissionResult
from grader.results.render import total_cell
from grader.results.store import Store

CANVAS_HEADER = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]

#: A Canvas "Export Entire Gradebook" file: BOM, the Points Possible row, other assignments,
#: read-only totals, and the assignment itself with Canvas's "(id)" suffix.
CANVAS_ROSTER = (
    "\ufeffStudent,ID,SIS User ID,SIS Login ID,Section,Homework 1 (111),"
    "RNN captioning (4242),Current Score\n"
    "    Points Possible,,,,,10.00,10.00,(read only)\n"
    '"Lee, Ann",1,S1001,ann,A,5,,50\n'
    '"Ng, Bo",2,S1002,bng,A,,,\n'
    '"Cho, Cy",123,S1003,ccho,B,,,\n'
    '"Day, Dee",4,S1004,dee@uni.edu,B,,,\n'
    '"Ek, Carl",5,S1005,carl,B,,,\n'
    '"Ho, Bob",6,S1006,bob,B,,,\n'
    '"Ma, Eve",7,S1007,eve,B,,,\n'
    '"Gus, Gil",8,S1008,gus,B,,,\n'
)


def _result(score: float, max_score: float = 10.0) -> dict:
    return SubmissionResult("x.py", checks=[
        CheckResult("rnn_step_forward_public", "passed", score, max_score)]).to_dict()


def _store(path: Path, rows: list[tuple[str, str, float | None]]) -> Store:
    """A batch store holding (student, status, score) rows, as grade_all would leave it."""
    store = Store(path / "grades.sqlite")
    run = store.start_run("key", {})
    for student, status, score in rows:
        message = "" if status == "graded" else f"{status} because of reasons"
        store.record(run, {"student": student, "source": student}, "key", status, message,
                     _result(score) if score is not None else None, 1.0)
    return store


def _read(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


@pytest.fixture
def roster(tmp_path: Path) -> Path:
    path = tmp_path / "canvas-roster.csv"
    path.write_text(CANVAS_ROSTER, encoding="utf-8")
    return path


@pytest.fixture
def store(tmp_path: Path):
    # A distinct score per student, so each row shows which submission landed on it.
    store = _store(tmp_path, [
        ("ANN", "graded", 7.5),           # SIS Login ID "ann", another case
        ("S1002", "graded", 6.25),        # SIS User ID
        ("123", "graded", 3.0),           # Canvas ID
        ("dee", "graded", 9.0),           # local part of the login dee@uni.edu
        ("carl@uni.edu", "graded", 8.0),  # its local part is the login "carl"
        ("bob", "could-not-grade", None),  # the grader failed: blank, listed
        ("eve", "graded", 0.0),           # a check flagged for regrade: blank, listed
        ("zed", "graded", 4.0),           # on no roster row
    ])
    # The other engineer's "regrade" flag on a check: honoured when present.
    row = store.db.execute("SELECT id, result FROM grades WHERE student = 'eve'").fetchone()
    result = json.loads(row["result"])
    result["checks"][0]["regrade"] = "memory"
    store.db.execute("UPDATE grades SET result = ? WHERE id = ?", (json.dumps(result), row["id"]))
    store.db.commit()
    yield store
    store.close()


def _canvas(store: Store, out: Path, roster: Path, assignment: str = "RNN captioning"):
    done, problems = lms.export(store, out, ["canvas"], roster, assignment)
    assert problems == []
    (export,) = done
    return export, _read(out / "canvas-import.csv")


def _by_login(table: list[list[str]]) -> dict[str, str]:
    """SIS Login ID -> the assignment cell, for the student rows."""
    return {row[3]: row[-1] for row in table[1:] if row[0].strip() != "Points Possible"}


# --------------------------------------------------------------------------- Canvas


def test_canvas_file_has_the_import_columns_and_reuses_the_assignment_column(
        store, roster, tmp_path):
    export, table = _canvas(store, tmp_path / "out", roster)
    # Canvas's five columns, then one assignment column: the roster's own header, (id) and all.
    assert table[0] == [*CANVAS_HEADER, "RNN captioning (4242)"]
    assert export.column == "RNN captioning (4242)"
    # The Points Possible row comes second, its value the roster's (the assignment's worth is
    # Canvas's to keep), the identity cells blank.
    assert table[1][0].strip() == "Points Possible"
    assert table[1][1:] == ["", "", "", "", "10.00"]
    # Every roster student, in the roster's order, their identity copied unchanged.
    assert [row[:5] for row in table[2:]] == [
        ["Lee, Ann", "1", "S1001", "ann", "A"], ["Ng, Bo", "2", "S1002", "bng", "A"],
        ["Cho, Cy", "123", "S1003", "ccho", "B"], ["Day, Dee", "4", "S1004", "dee@uni.edu", "B"],
        ["Ek, Carl", "5", "S1005", "carl", "B"], ["Ho, Bob", "6", "S1006", "bob", "B"],
        ["Ma, Eve", "7", "S1007", "eve", "B"], ["Gus, Gil", "8", "S1008", "gus", "B"]]
    assert all(len(row) == 6 for row in table)


def test_canvas_matches_by_each_kind_of_id(store, roster, tmp_path):
    _, table = _canvas(store, tmp_path / "out", roster)
    scores = _by_login(table)
    assert scores["ann"] == "7.5"           # SIS Login ID, case-insensitively
    assert scores["bng"] == "6.25"          # SIS User ID
    assert scores["ccho"] == "3"            # Canvas ID
    assert scores["dee@uni.edu"] == "9"     # the login's local part
    assert scores["carl"] == "8"            # the submission id's local part
    # The loosest rule's matches are listed for a look.
    listing = (tmp_path / "out" / "canvas-unmatched.txt").read_text()
    section = listing.split("matched only by the part before @")[1]
    assert "dee -> Day, Dee" in section and "carl@uni.edu -> Ek, Carl" in section
    assert "ANN" not in section


def test_the_assignment_column_cannot_be_an_identity_column(store, roster, tmp_path):
    with pytest.raises(lms.RosterError, match="naming students"):
        lms.write([lms.Grade("ann", 1.0, 1.0)], "canvas", tmp_path, roster, "SIS Login ID")
    _, problems = lms.export(store, tmp_path, ["canvas"], roster, "Section")
    assert problems and "naming students" in problems[0]


def test_canvas_leaves_ungraded_students_blank_never_zero(store, roster, tmp_path):
    export, table = _canvas(store, tmp_path / "out", roster)
    scores = _by_login(table)
    assert scores["bob"] == ""   # could-not-grade
    assert scores["eve"] == ""   # scored 0, but a check asks for a regrade
    assert scores["gus"] == ""   # no submission
    assert "0" not in scores.values()
    assert export.graded == 5
    listing = (tmp_path / "out" / "canvas-unmatched.txt").read_text()
    not_clean = export.problems[lms._NOT_CLEAN]
    assert len(not_clean) == 2
    assert any(line.startswith("bob -> Ho, Bob") and "could-not-grade" in line
               for line in not_clean)
    assert any(line.startswith("eve -> Ma, Eve") and "regrade" in line for line in not_clean)
    for line in not_clean:
        assert line in listing


def test_canvas_lists_unmatched_submissions_and_roster_rows_without_one(store, roster, tmp_path):
    export, table = _canvas(store, tmp_path / "out", roster)
    assert export.problems[lms._UNMATCHED] == [
        "zed: no roster row has this id (capgrade: 4)"]
    assert export.problems[lms._NO_SUBMISSION] == [
        "Gus, Gil (SIS Login ID gus, SIS User ID S1008, ID 8)"]
    assert "zed" not in {cell for row in table for cell in row}
    listing = (tmp_path / "out" / "canvas-unmatched.txt").read_text()
    assert "zed: no roster row has this id" in listing and "Gus, Gil" in listing
    summary = export.summary()
    assert "5 graded" in summary and "1 submissions matching no roster row" in summary


def test_canvas_new_assignment_column_gets_capgrade_points(store, roster, tmp_path):
    _, table = _canvas(store, tmp_path / "out", roster, assignment="Lab 3")
    assert table[0] == [*CANVAS_HEADER, "Lab 3"]
    # A new assignment: Canvas takes its points from this row, capgrade's maximum.
    assert table[1][0].strip() == "Points Possible" and table[1][-1] == "10"
    assert _by_login(table)["ann"] == "7.5"


def test_canvas_without_a_points_possible_row_writes_none_for_an_existing_column(
        store, tmp_path):
    roster = tmp_path / "r.csv"
    lines = CANVAS_ROSTER.splitlines(keepends=True)
    roster.write_text(lines[0] + "".join(lines[2:]), encoding="utf-8")
    export, table = _canvas(store, tmp_path / "out", roster)
    assert table[0][-1] == "RNN captioning (4242)"
    assert [row[0] for row in table[1:3]] == ["Lee, Ann", "Ng, Bo"]  # straight to students
    assert export.notes == []


def test_canvas_says_when_the_assignment_is_worth_other_points(store, roster, tmp_path):
    roster.write_text(CANVAS_ROSTER.replace(",10.00,10.00,", ",10.00,100.00,"),
                      encoding="utf-8")
    export, table = _canvas(store, tmp_path / "out", roster)
    assert table[1][-1] == "100.00"  # Canvas's worth kept; scores are not scaled
    assert _by_login(table)["ann"] == "7.5"
    (note,) = export.notes
    assert "100.00" in note and "out of 10" in note


def test_ambiguous_ids_are_never_guessed(tmp_path):
    roster = tmp_path / "r.csv"
    roster.write_text("Student,ID,SIS User ID,SIS Login ID,Section\n"
                      "Kim A,1,,kim@a.edu,A\nKim B,2,,kim@b.edu,A\nLee,3,,lee,A\n",
                      encoding="utf-8")
    grades = [lms.Grade("kim", 5.0, 10.0), lms.Grade("lee", 6.0, 10.0),
              lms.Grade("3", 7.0, 10.0)]
    export = lms.write(grades, "canvas", tmp_path / "out", roster)
    table = _read(export.csv_path)
    assert {row[0]: row[-1] for row in table[2:]} == {"Kim A": "", "Kim B": "", "Lee": ""}
    (unmatched,) = export.problems[lms._UNMATCHED]
    assert unmatched.startswith("kim: 2 roster rows share this login/email local part")
    # "lee" (login) and "3" (Canvas ID) both name Lee's row: left blank, both listed.
    assert export.problems[lms._TWICE] == ["Lee (SIS Login ID lee, ID 3): lee, 3"]
    assert export.graded == 0


def test_several_columns_with_the_assignment_name_is_an_error(tmp_path):
    roster = tmp_path / "r.csv"
    roster.write_text("Student,ID,SIS User ID,SIS Login ID,Section,Lab (1),Lab (2)\n"
                      "Ann,1,,ann,A,,\n", encoding="utf-8")
    with pytest.raises(lms.RosterError, match=r"several columns named 'Lab'.*--assignment"):
        lms.write([lms.Grade("ann", 1.0, 1.0)], "canvas", tmp_path, roster, "Lab")
    export = lms.write([lms.Grade("ann", 1.0, 1.0)], "canvas", tmp_path, roster, "Lab (2)")
    assert _read(export.csv_path)[0][-1] == "Lab (2)"


# --------------------------------------------------------------------------- grades


def test_only_a_clean_graded_row_gives_a_grade():
    base = {"score": 5.0, "max_score": 10.0, "message": "", "result": json.dumps(_result(5.0))}
    rows = [
        {**base, "student": "ok", "status": "graded"},
        {**base, "student": "timeout", "status": "timeout", "message": "ran past 900 s"},
        {**base, "student": "missing", "status": "missing-files", "result": None},
        {**base, "student": "oom", "status": "graded", "regrade": 1},
        {**base, "student": "flagged", "status": "graded",
         "result": json.dumps({**_result(5.0), "regrade": True})},
        {**base, "student": "empty", "status": "graded", "result": None},
    ]
    grades = {g.student: g for g in lms.grades_from_rows(rows)}
    assert grades["ok"].score == 5.0 and grades["ok"].reason == ""
    for name in ("timeout", "missing", "oom", "flagged", "empty"):
        assert grades[name].score is None and grades[name].reason, name
    assert grades["timeout"].reason == "timeout: ran past 900 s"
    assert "regrade" in grades["oom"].reason and "regrade" in grades["flagged"].reason


@pytest.mark.parametrize("score, cell", [(None, ""), (0.0, "0"), (10.0, "10"), (7.5, "7.5"),
                                         (2.123456, "2.1235")])
def test_total_cell(score, cell):
    assert total_cell(score) == cell


# --------------------------------------------------------------------------- Moodle


MOODLE_ROSTER = ('"First name","Last name","ID number",Institution,Department,'
                 '"Email address","Assignment: RNN (Real)"\n'
                 "Ann,Lee,1001,Uni,CS,ann.lee@uni.edu,-\n"
                 "Bo,Ng,1002,Uni,CS,bo@uni.edu,-\n"
                 "Gil,Gus,1003,Uni,CS,gil@uni.edu,-\n")


def test_moodle_with_a_roster(tmp_path):
    roster = tmp_path / "moodle.csv"
    roster.write_text(MOODLE_ROSTER, encoding="utf-8")
    store = _store(tmp_path, [("Ann.Lee@uni.edu", "graded", 7.5), ("1002", "graded", 6.0),
                              ("zed", "graded", 1.0)])
    try:
        done, problems = lms.export(store, tmp_path / "out", ["moodle"], roster)
    finally:
        store.close()
    assert problems == []
    table = _read(tmp_path / "out" / "moodle-import.csv")
    # The roster's identity columns Moodle can map (ID number, email), then the one grade.
    assert table[0] == ["First name", "Last name", "ID number", "Email address",
                        "RNN captioning"]
    assert table[1:] == [["Ann", "Lee", "1001", "ann.lee@uni.edu", "7.5"],   # by email
                         ["Bo", "Ng", "1002", "bo@uni.edu", "6"],            # by ID number
                         ["Gil", "Gus", "1003", "gil@uni.edu", ""]]          # no submission
    (export,) = done
    assert export.problems[lms._UNMATCHED] == ["zed: no roster row has this id (capgrade: 1)"]
    assert export.problems[lms._NO_SUBMISSION] == [
        "Gil Gus (ID number 1003, Email address gil@uni.edu)"]


def test_moodle_without_a_roster_has_capgrade_ids(tmp_path):
    store = _store(tmp_path, [("ann", "graded", 7.5), ("bob", "could-not-grade", None)])
    try:
        done, problems = lms.export(store, tmp_path / "out", ["moodle"], None, "Lab 3")
    finally:
        store.close()
    assert problems == []
    assert _read(tmp_path / "out" / "moodle-import.csv") == [
        [lms.MOODLE_IDENTIFIER, "Lab 3"], ["ann", "7.5"], ["bob", ""]]
    assert done[0].problems[lms._NOT_CLEAN] == ["bob: could-not-grade: could-not-grade because "
                                                "of reasons"]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("content, encoding, expected", [
    (None, "utf-8", r"not found: export the gradebook from Canvas"),
    ("Name,Login\nAnn,ann\n", "utf-8",
     r"lacks the columns Student, ID, SIS User ID, SIS Login ID, Section \(its header: Name, "
     r"Login\).*Export Entire Gradebook"),
    ("Student,ID,SIS User ID,Section\nAnn,1,S1,A\n", "utf-8", r"lacks the column SIS Login ID "),
    ("Student;ID;SIS User ID;SIS Login ID;Section\nAnn;1;;ann;A\n", "utf-8",
     r"separated by ';', not commas"),
    ("Student,ID,SIS User ID,SIS Login ID,Section\nJos\xe9,1,,jose,A\n", "latin-1",
     r"is not UTF-8 text.*CSV UTF-8"),
    ('Student,ID,SIS User ID,SIS Login ID,Section\n"Ann,1,,ann,A\n', "utf-8",
     r"is not a readable CSV file"),
    ("", "utf-8", r"is empty"),
    ("Student,ID,SIS User ID,SIS Login ID,Section\n    Points Possible,,,,\n", "utf-8",
     r"has no student rows"),
])
def test_a_bad_roster_says_what_is_wrong_and_writes_nothing(tmp_path, content, encoding,
                                                            expected):
    roster = tmp_path / "roster.csv"
    if content is not None:
        roster.write_bytes(content.encode(encoding))
    out = tmp_path / "out"
    out.mkdir()
    (out / "canvas-import.csv").write_text("stale\n")  # an earlier run's file
    (problem,) = lms.check_request(["canvas"], roster, "RNN captioning")
    assert problem.startswith("--export canvas: roster ") and str(roster) in problem
    with pytest.raises(lms.RosterError, match=expected):
        lms.write([lms.Grade("ann", 1.0, 1.0)], "canvas", out, roster)
    assert not (out / "canvas-import.csv").exists()


def test_canvas_needs_a_roster_and_moodle_needs_its_id_columns(tmp_path, roster):
    (problem,) = lms.check_request(["canvas"], None, "x")
    assert "--export canvas needs --roster" in problem
    (problem,) = lms.check_request(["moodle"], roster, "x")  # a Canvas export: no Moodle ids
    assert "lacks one of the columns Username, ID number, Email address" in problem
    assert lms.check_request(["canvas"], roster, "x") == []
    assert lms.check_request(["moodle"], None, "x") == []
    assert "--roster is read only with --export" in lms.check_request([], roster, "x")[0]


# --------------------------------------------------------------------------- command line


def test_grade_export_from_the_command_line(tmp_path, roster, capsys):
    """End to end without grading anything: folders without a module are "missing-files"."""
    from grader.cli import main

    subs = tmp_path / "subs"
    for student in ("ann", "zed"):
        (subs / student).mkdir(parents=True)
    out = tmp_path / "out"
    args = ["grade", str(subs), "-o", str(out), "--quiet", "--workers", "1"]
    assert main([*args, "--export", "canvas", "--export", "moodle", "--roster", str(roster),
                 "--assignment", "Lab 3"]) == 2  # the roster is Canvas's: no Moodle ids
    err = capsys.readouterr().err
    assert "--export moodle: roster" in err and "Nothing exported for it" in err
    assert (out / "gradebook.csv").is_file() and not (out / "moodle-import.csv").exists()
    table = _read(out / "canvas-import.csv")
    assert table[0] == [*CANVAS_HEADER, "Lab 3"]
    assert _by_login(table)["ann"] == ""  # missing files: blank, never 0
    assert "ann -> Lee, Ann" in err and "missing-files" in err
    assert "zed: no roster row has this id (missing-files" in err

    (out / "gradebook.csv").unlink()
    assert main([*args, "--export", "canvas", "--roster", str(tmp_path / "nope.csv")]) == 2
    err = capsys.readouterr().err
    assert f"roster {tmp_path / 'nope.csv'} not found" in err
    assert (out / "gradebook.csv").is_file()  # the other reports are still written
    assert not (out / "canvas-import.csv").exists()  # no stale import left behind


def test_command_line_choices_are_the_modules():
    from grader.cli import build_parser

    grade = build_parser()._subparsers._group_actions[0].choices["grade"]
    actions = {a.dest: a for a in grade._actions}
    assert tuple(actions["export"].choices) == lms.EXPORTS
    assert actions["assignment"].default == lms.DEFAULT_ASSIGNMENT
