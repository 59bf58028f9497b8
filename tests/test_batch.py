"""Batch grading: one row per input, the right status, resumable after a kill, Dask = local."""

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
import zipfile
from pathlib import Path

import pytest

from grader.batch.grading import DEFAULT_OPTIONS, grade_all
from grader.harness.plugin import load_rubric
from grader.harness.request import GradingRequest
from tests.conftest import REFERENCE, STUB
from tests.hostile import BY_NAME as HOSTILE
from tests.test_hostile import any_sandboxed_pids
from tests.variants import by_name, write_variant

pytestmark = [pytest.mark.slow, pytest.mark.alone]  # grades whole submissions in sandboxed workers;
# alone: it scans the whole machine, or times itself, so it runs after the corpus's pool

BUGGY = "rnn_step_no_tanh"  # a realistic bug (tests/variants.py)
FAST = GradingRequest(hidden=True)  # public + hidden checks
ROOT = Path(__file__).resolve().parent.parent


def _module(folder: Path, source: Path | str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "rnn_lstm_captioning.py"
    if isinstance(source, Path):
        shutil.copy(source, target)
    else:
        target.write_text(source)
    return target


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "gradebook.csv", newline="") as f:
        return {r["student"]: r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Good, buggy, broken, hostile, empty, duplicate, zipped and unusable inputs, graded."""
    subs = tmp_path_factory.mktemp("submissions")
    _module(subs / "good", REFERENCE)
    (subs / "buggy").mkdir()
    write_variant(by_name()[BUGGY], subs / "buggy")
    _module(subs / "broken", "def rnn_step_forward(:\n")
    _module(subs / "hostile", HOSTILE["os_exit_at_import"].source())
    (subs / "empty").mkdir()
    _module(subs / "copycat" / "deep", REFERENCE)  # identical files, one folder deeper
    _module(subs / "stub", STUB)
    with zipfile.ZipFile(subs / "zipped.zip", "w") as zf:
        zf.write(REFERENCE, "rnn_lstm_captioning.py")
    with zipfile.ZipFile(subs / "escaper.zip", "w") as zf:
        zf.writestr("../evil.py", "print('x')\n")
    (subs / "notes.txt").write_text("not a submission\n")
    out = tmp_path_factory.mktemp("out")
    # Warm workers on (auto would leave them off with 2 workers on 2 cores): the same rows.
    summary = grade_all(subs, out, workers=2, options=FAST, progress=False, warm=True)
    return subs, out, summary


def test_every_input_gets_exactly_one_row_with_the_right_status(mixed):
    subs, out, summary = mixed
    rows = _rows(out)
    assert sorted(rows) == sorted(p.stem for p in subs.iterdir())
    assert summary.rows == len(rows) == 10
    status = {s: r["status"] for s, r in rows.items()}
    assert status == {"good": "graded", "buggy": "graded", "broken": "graded",
                      "hostile": "graded", "empty": "missing-files", "copycat": "graded",
                      "stub": "graded", "zipped": "graded", "escaper": "could-not-grade",
                      "notes": "could-not-grade"}
    full = sum(e["points"] for e in load_rubric(include_slow=False).values())
    score = {s: float(r["score"]) for s, r in rows.items()}
    assert score["good"] == score["copycat"] == score["zipped"] == full
    assert 0 < score["buggy"] < full and rows["buggy"]["rnn_step_forward_public"] == "0.0"
    assert score["broken"] == score["hostile"] == score["stub"] == 0
    assert "SyntaxError" in rows["broken"]["message"]
    assert "exit" in rows["hostile"]["message"].lower()
    assert "points outside" in rows["escaper"]["message"]
    assert "no rnn_lstm_captioning.py" in rows["empty"]["message"]
    # The copies were graded once: the reused ones say whose result they carry.
    assert summary.graded_now == 5 and summary.reused == 2
    reused = [s for s in ("good", "copycat", "zipped") if "result reused" in rows[s]["message"]]
    assert len(reused) == 2


def test_warm_workers_only_where_a_core_is_free(monkeypatch):
    from grader.batch import grading as batch

    monkeypatch.setattr(batch.os, "cpu_count", lambda: 4)
    assert batch.should_warm(1, None) and batch.should_warm(3, None)
    assert not batch.should_warm(4, None) and not batch.should_warm(None, None)
    assert not batch.should_warm(1, "tcp://scheduler:8786")


def test_no_sandboxed_process_outlives_the_batch(mixed):
    """Each pool process kept a warm worker; all of them went with the pool."""
    assert any_sandboxed_pids() == set()


def test_reports_are_exported_from_the_store(mixed):
    _, out, _ = mixed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["submissions"] == 10
    assert summary["statuses"] == {"graded": 7, "missing-files": 1, "could-not-grade": 2}
    assert summary["pass_rate"]["rnn_step_forward_public"] == pytest.approx(3 / 7, abs=1e-3)
    for name in ("score_histogram.png", "pass_rate.png", "time_per_submission.png",
                 "misconceptions.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # What to re-teach: the buggy submission's mistake, named once for the one student.
    assert summary["misconceptions"] == {"rnn_step_no_tanh": {
        "students": 1, "share": round(1 / 7, 4), "name": "RNN step without tanh",
        "function": "rnn_step_forward"}}
    assert "| RNN step without tanh (`rnn_step_no_tanh`) | `rnn_step_forward` | 1 | 14% |" in (
        out / "misconceptions.md").read_text()
    good = json.loads((out / "students" / "good" / "results.json").read_text())
    assert good["status"] == "graded" and good["result"]["score"] == good["result"]["max_score"]
    feedback = (out / "students" / "buggy" / "feedback.html").read_text()
    assert "rnn_step_forward_public" in feedback and "details withheld" in feedback
    assert "Likely cause: This is what a vanilla RNN step computes when it forgets" in feedback
    db = sqlite3.connect(out / "grades.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT COUNT(*) FROM grades").fetchone()[0] == 10
    checks = db.execute("SELECT COUNT(*) FROM checks c JOIN grades g ON g.id = c.grade_id "
                        "WHERE g.student = 'good'").fetchone()[0]
    assert checks == len(good["result"]["checks"])


def test_a_second_run_skips_everything_unchanged_and_regrade_redoes_one(mixed):
    subs, out, _ = mixed
    again = grade_all(subs, out, workers=2, options=FAST, progress=False)
    assert again.graded_now == 0 and again.skipped == 7 and again.rows == 10
    one = grade_all(subs, out, workers=1, options=FAST, progress=False, regrade=("buggy",))
    assert one.graded_now == 1
    db = sqlite3.connect(out / "grades.sqlite")
    history = db.execute("SELECT COUNT(*) FROM grades WHERE student = 'buggy'").fetchone()[0]
    assert history == 2
    assert len(_rows(out)) == 10


def test_a_changed_submission_is_graded_again(tmp_path):
    subs = tmp_path / "subs"
    _module(subs / "ann", STUB)
    out = tmp_path / "out"
    opts = GradingRequest()
    grade_all(subs, out, workers=1, options=opts, progress=False)
    assert float(_rows(out)["ann"]["score"]) == 0
    _module(subs / "ann", REFERENCE)
    second = grade_all(subs, out, workers=1, options=opts, progress=False)
    assert second.graded_now == 1 and float(_rows(out)["ann"]["score"]) > 0


def test_gradescope_export_takes_ids_from_the_metadata(tmp_path):
    subs = tmp_path / "export"
    _module(subs / "submission_101", REFERENCE)
    _module(subs / "submission_102", STUB)
    (subs / "submission_metadata.yml").write_text(
        "submission_101:\n  :submitters:\n  - :name: Ann Lee\n    :sid: s123\n"
        "    :email: ann@example.edu\n  :created_at: 2026-11-20\n"
        "submission_102:\n  :submitters:\n  - :name: Bob Ray\n    :email: bob@example.edu\n")
    out = tmp_path / "out"
    grade_all(subs, out, workers=2, options=GradingRequest(hidden=False, slow=False,
                                                          notebook=False), progress=False)
    rows = _rows(out)
    assert sorted(rows) == ["bob@example.edu", "s123"]
    assert float(rows["s123"]["score"]) > 0 and float(rows["bob@example.edu"]["score"]) == 0


def test_killing_the_run_halfway_loses_nothing_and_the_rerun_finishes_the_rest(tmp_path):
    subs = tmp_path / "subs"
    for i, name in enumerate(["a1", "a2", "a3", "a4"]):
        source = REFERENCE.read_text() + f"\n# student {i}\n"  # distinct content hashes
        _module(subs / name, source)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "grader.cli", "grade", str(subs), "-o", str(out),
           "--workers", "1", "--public-only", "--no-slow", "--no-notebook", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    db_path = out / "grades.sqlite"
    deadline = time.monotonic() + 180
    graded = 0
    while time.monotonic() < deadline and graded < 1:
        time.sleep(0.5)
        if db_path.exists():
            with contextlib.suppress(sqlite3.OperationalError):
                graded = sqlite3.connect(db_path).execute(
                    "SELECT COUNT(*) FROM grades").fetchone()[0]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 1 <= graded < 4, "kill the run while it is halfway"
    db = sqlite3.connect(db_path)
    first = {s: i for s, i in db.execute("SELECT student, id FROM grades")}
    assert len(first) < 4
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = db.execute("SELECT student, id, run_id FROM grades ORDER BY id").fetchall()
    assert sorted(s for s, _, _ in rows) == ["a1", "a2", "a3", "a4"]  # one row each
    for student, grade_id, _ in rows:
        if student in first:
            assert grade_id == first[student]  # not graded again
    assert sorted(_rows(out)) == ["a1", "a2", "a3", "a4"]


def test_a_dask_local_cluster_gives_the_local_results(tmp_path):
    distributed = pytest.importorskip("distributed")
    subs = tmp_path / "subs"
    _module(subs / "good", REFERENCE)
    (subs / "buggy").mkdir()
    write_variant(by_name()[BUGGY], subs / "buggy")
    _module(subs / "stub", STUB)
    opts = GradingRequest(hidden=True)
    grade_all(subs, tmp_path / "local", workers=2, options=opts, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        grade_all(subs, tmp_path / "dask", options=opts, progress=False, dask=client,
                  warm=True)
    local, remote = _rows(tmp_path / "local"), _rows(tmp_path / "dask")
    assert sorted(local) == sorted(remote) == ["buggy", "good", "stub"]
    for student in local:
        a = {k: v for k, v in local[student].items() if k != "seconds"}
        b = {k: v for k, v in remote[student].items() if k != "seconds"}
        assert a == b


def test_a_missing_submissions_folder_is_a_clear_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "grader.cli", "grade", str(tmp_path / "nope"),
                           "-o", str(tmp_path / "out")], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 2 and "does not exist" in done.stderr


def test_a_batch_grades_everything_unless_told_otherwise():
    assert DEFAULT_OPTIONS.hidden and DEFAULT_OPTIONS.slow and DEFAULT_OPTIONS.notebook
    with pytest.raises(ValueError, match="unknown grading options: include_slow"):
        GradingRequest.from_dict({"include_slow": True})
    again = GradingRequest.from_dict(FAST.for_submission(Path("a.py")).to_dict())
    assert again == FAST.for_submission(Path("a.py"))


def test_the_demo_class_is_built_from_the_reference(tmp_path):
    from grader.authoring.examples import BUGS, write_examples

    described = write_examples(REFERENCE, STUB, tmp_path / "class")
    names = sorted(p.stem for p in (tmp_path / "class").iterdir())
    assert names == sorted(described) and len(names) == 9
    reference = REFERENCE.read_text()
    for student, (_, old, new) in BUGS.items():
        text = (tmp_path / "class" / student / "rnn_lstm_captioning.py").read_text()
        assert text == reference.replace(old, new) and text != reference
    assert (tmp_path / "class" / "bob_stub" / "rnn_lstm_captioning.py").read_text() == \
        STUB.read_text()
