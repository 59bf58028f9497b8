"""Batch grading on a class folder as an LMS really exports it: any byte string as a
student's name, several copies of one student's files, Ctrl-C, a log instead of a terminal."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import unicodedata
import zipfile
from pathlib import Path

import pytest

from grader.batch import similarity
from grader.batch.grading import descendants, grade_all
from grader.batch.submissions import PickError, discover
from grader.harness.request import GradingRequest
from grader.integrations import lms
from grader.results.store import Store
from tests.conftest import REFERENCE, STUB

pytestmark = [pytest.mark.slow, pytest.mark.alone]  # grades a class through the batch pool;
# alone: it scans the whole machine, or times itself, so it runs after the corpus's pool

ROOT = Path(__file__).resolve().parent.parent
MODULE = "rnn_lstm_captioning.py"
#: Two quick public checks: enough to tell the reference (full marks) from the stub (0).
QUICK = GradingRequest(only="rnn_step_forward_public or rnn_step_backward_public")
LATIN1 = os.fsdecode(b"j\xf6rg")  # a folder name made on Windows: not UTF-8
NFD = unicodedata.normalize("NFD", "zoë")  # as macOS writes it
EMOJI = "🎉party"
OLD, NEW = time.time() - 3 * 86400, time.time() - 86400


def _module(folder: Path, source: Path, mtime: float | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / MODULE
    shutil.copy(source, target)
    if mtime is not None:
        os.utime(target, (mtime, mtime))
    return target


def _zip(path: Path, source: Path, mtime: float) -> None:
    info = zipfile.ZipInfo(MODULE, time.localtime(mtime)[:6])
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(info, source.read_bytes())


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "gradebook.csv", newline="", encoding="utf-8") as f:
        return {r["student"]: r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def course(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every kind of name and every kind of ambiguity an LMS export holds."""
    subs = tmp_path_factory.mktemp("class") / "class"
    _module(subs / LATIN1, REFERENCE)
    _module(subs / NFD, REFERENCE)
    _module(subs / EMOJI, STUB)
    _module(subs / "alice", STUB, OLD)  # an early attempt in a folder ...
    _zip(subs / "alice.zip", REFERENCE, NEW)  # ... and the final zip
    _module(subs / "eve" / "v1", STUB, OLD)  # two copies in one folder
    _module(subs / "eve" / "v2", REFERENCE, NEW)
    _module(subs / "carol" / "sub" / "deeper", REFERENCE)  # a nested copy
    (subs / "dan").mkdir()  # nothing handed in
    _module(subs / "bob", STUB)
    return subs


@pytest.fixture(scope="module")
def graded(course: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("out")
    summary = grade_all(course, out, workers=2, options=QUICK, progress=False, warm=False)
    return out, summary


EXPECTED = ["alice", "bob", "carol", "dan", "eve", "j\\xf6rg", "zoë", EMOJI]


def test_every_name_is_a_row_and_nothing_crashes(course: Path, graded) -> None:
    """Latin-1 bytes, NFD and emoji names: graded, stored and exported (escaped)."""
    out, summary = graded
    rows = _rows(out)
    assert sorted(rows) == sorted(EXPECTED)
    assert rows["j\\xf6rg"]["status"] == rows["zoë"]["status"] == "graded"
    full = float(rows["zoë"]["max_score"])
    assert full > 0 and float(rows["j\\xf6rg"]["score"]) == float(rows["zoë"]["score"]) == full
    assert float(rows[EMOJI]["score"]) == 0 and rows[EMOJI]["status"] == "graded"
    assert rows["dan"]["status"] == "missing-files" and MODULE in rows["dan"]["message"]
    assert "j\\xf6rg" in rows["j\\xf6rg"]["source"]  # the source path too, escaped
    for student in EXPECTED:  # every student's feedback, under a printable folder name
        record = json.loads((out / "students" / student / "results.json").read_text())
        assert record["student"] == student
        assert (out / "students" / student / "feedback.html").is_file()
    assert json.loads((out / "summary.json").read_text())["submissions"] == len(EXPECTED)
    assert summary.rows == len(EXPECTED)


def test_several_copies_are_one_row_the_newest_graded_and_said(graded) -> None:
    out, summary = graded
    rows = _rows(out)
    full = float(rows["zoë"]["max_score"])
    # The newest copy is graded: the zip over the older folder, v2 over v1.
    assert float(rows["alice"]["score"]) == full and rows["alice"]["source"].endswith("alice.zip")
    assert float(rows["eve"]["score"]) == full
    assert "alice-2" not in rows
    for student, chosen, other in (("alice", "alice.zip/", "alice/"), ("eve", "eve/v2/",
                                                                        "eve/v1/")):
        note = rows[student]["copies"]
        assert note == summary.copies[student]
        assert f"graded {chosen}{MODULE} (the newest)" in note and other + MODULE in note
        assert "--pick" in note
    assert not rows["carol"]["copies"] and not rows["bob"]["copies"]
    assert float(rows["carol"]["score"]) == full  # found two folders deep
    assert set(json.loads((out / "summary.json").read_text())["copies"]) == {"alice", "eve"}


def test_canvas_puts_the_graded_copy_on_the_students_row(graded, tmp_path: Path) -> None:
    out, _ = graded
    roster = tmp_path / "roster.csv"
    roster.write_text("Student,ID,SIS User ID,SIS Login ID,Section,RNN captioning (9)\n"
                      "    Points Possible,,,,,10\n"
                      '"Liddell, Alice",1,S1,alice,A,\n"Ek, Eve",2,S2,eve,A,\n'
                      '"Ng, Zoë",3,S3,zoë,A,\n', encoding="utf-8")
    store = Store(out / "grades.sqlite")
    try:
        _, problems = lms.export(store, tmp_path, ["canvas"], roster, "RNN captioning")
    finally:
        store.close()
    assert problems == []
    with open(tmp_path / "canvas-import.csv", newline="", encoding="utf-8") as f:
        table = {r[3]: r[-1] for r in csv.reader(f)}
    full = f"{float(_rows(out)['alice']['max_score']):g}"
    assert table["alice"] == table["eve"] == table["zoë"] == full


def test_similarity_compares_the_students_grade_grades(course: Path, tmp_path: Path) -> None:
    """One discovery rule: the nested copy is compared, each student once, the same copy."""
    modules, problems, notes = similarity.find_submissions(course, tmp_path)
    entries = {e.student: e for e in discover(course, tmp_path / "grade")}
    assert sorted(modules) == sorted(s for s in EXPECTED if s != "dan")
    assert sorted(problems) == ["dan"] and sorted(notes) == ["alice", "eve"]
    assert modules["carol"].parent.name == "deeper"
    assert modules["eve"] == Path(entries["eve"].module)


def test_pick_grades_the_named_copy_and_a_wrong_pick_is_refused(course: Path,
                                                                tmp_path: Path) -> None:
    picked = {e.student: e for e in discover(course, tmp_path, pick={"eve": "eve/v1"})}
    assert Path(picked["eve"].module) == course / "eve" / "v1" / MODULE
    assert "picked with --pick" in (picked["eve"].note or "")
    with pytest.raises(PickError, match="eve/v1, eve/v2"):
        discover(course, tmp_path, pick={"eve": "eve/v3"})
    done = subprocess.run([sys.executable, "-m", "grader.cli", "grade", str(course), "-o",
                           str(tmp_path / "out"), "--pick", "nobody=x"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "nobody" in done.stderr and "Traceback" not in done.stderr


def _wait_for_rows(db_path: Path, n: int, timeout: float) -> int:
    deadline, graded = time.monotonic() + timeout, 0
    while time.monotonic() < deadline and graded < n:
        time.sleep(0.3)
        if db_path.exists():
            with contextlib.suppress(sqlite3.OperationalError):
                graded = sqlite3.connect(db_path).execute(
                    "SELECT COUNT(*) FROM grades").fetchone()[0]
    return graded


def _group_members(pgid: int) -> set[int]:
    found = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.add(int(name))
    return found


@pytest.mark.slow
def test_ctrl_c_stops_at_once_kills_everything_and_the_rerun_loses_nothing(
        tmp_path: Path) -> None:
    subs = tmp_path / "subs"
    names = [f"s{i}" for i in range(6)]
    for i, name in enumerate(names):
        _module(subs / name, REFERENCE).write_text(REFERENCE.read_text() + f"\n# {i}\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "grader.cli", "grade", str(subs), "-o", str(out),
           "--workers", "2", "--warm", "on", "--public-only", "--no-slow", "--no-notebook"]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    graded = _wait_for_rows(out / "grades.sqlite", 1, 240)
    tree = descendants(proc.pid)  # pool processes, their fork servers and sandboxes, ...
    assert tree, "the batch runs in processes of its own"
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    start = time.monotonic()
    try:
        _, stderr = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("Ctrl-C did not stop the batch within 30 s") from None
    assert time.monotonic() - start < 20
    assert proc.returncode == 130, stderr
    # No KeyboardInterrupt traceback (multiprocessing's resource tracker may still grumble).
    assert "KeyboardInterrupt" not in stderr and "run the same command again" in stderr
    assert graded >= 1
    deadline = time.monotonic() + 5  # the resource tracker exits when its pipe closes
    while time.monotonic() < deadline and (_group_members(proc.pid) or
                                           {p for p in tree if os.path.exists(f"/proc/{p}")}):
        time.sleep(0.2)
    assert _group_members(proc.pid) == set(), "a process of the batch's group outlived it"
    left = {p for p in tree if os.path.exists(f"/proc/{p}")}
    assert left == set(), f"processes the batch started outlived it: {left}"
    db = sqlite3.connect(out / "grades.sqlite")
    kept = dict(db.execute("SELECT student, id FROM grades"))
    done = subprocess.run([*cmd, "--quiet"], cwd=ROOT, capture_output=True, text=True,
                          timeout=400)
    assert done.returncode == 0, done.stderr
    rows = db.execute("SELECT student, id FROM grades ORDER BY id").fetchall()
    assert sorted(s for s, _ in rows) == names  # one row each: nothing graded twice
    assert all(dict(rows)[s] == i for s, i in kept.items())
    assert sorted(_rows(out)) == names


def test_a_log_gets_one_line_per_finished_submission(tmp_path: Path, capsys) -> None:
    """Not on a terminal (CI, nohup): progress as lines, not silence until the end."""
    subs = tmp_path / "subs"
    _module(subs / "ann", STUB)
    _module(subs / "ben", REFERENCE)
    (subs / "cy").mkdir()
    out = tmp_path / "out"
    grade_all(subs, out, workers=1, options=QUICK, progress=True, warm=False)
    printed = capsys.readouterr().out.splitlines()
    lines = [ln for ln in printed if ln.startswith("[")]
    assert len(lines) == 2, lines
    # The count is 2 of a class of 3: said, so that "[2/2]" does not read as the whole class.
    assert "grading 2 of 3 submissions (1 without a module to grade" in "\n".join(printed)
    assert [ln.split("] ")[0] for ln in lines] == ["[1/2", "[2/2"]
    assert {ln.split("] ")[1].split(":")[0] for ln in lines} == {"ann", "ben"}
    assert all(": graded " in ln and ln.endswith(" s)") for ln in lines)
    assert sorted(_rows(out)) == ["ann", "ben", "cy"]
