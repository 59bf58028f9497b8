"""The batch's results, kept in an embedded SQLite database (``OUT/grades.sqlite``).

Every graded submission is committed as soon as its result arrives (WAL mode,
one writer: the coordinating process), so a crash or a kill loses nothing
already graded, and every other file in OUT is exported from here. A grade is
keyed by the student, the content hash of their files and the grading key
(capgrade version + expected values' fingerprint); regrades add rows, so the
history stays, and the newest row per student is the current grade.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL,
    finished REAL,
    grading_key TEXT NOT NULL,
    options TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS grades (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    student TEXT NOT NULL,
    source TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    grading_key TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    score REAL NOT NULL,
    max_score REAL NOT NULL,
    seconds REAL NOT NULL,
    graded_at REAL NOT NULL,
    result TEXT,
    entry TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS grades_lookup ON grades(student, content_hash, grading_key);
CREATE TABLE IF NOT EXISTS checks (
    grade_id INTEGER NOT NULL REFERENCES grades(id),
    check_id TEXT NOT NULL,
    status TEXT NOT NULL,
    score REAL NOT NULL,
    max_score REAL NOT NULL,
    visibility TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (grade_id, check_id)
);
"""


def storable(value: Any) -> Any:
    """``value`` with every string UTF-8-encodable: lone surrogates (undecodable bytes of a
    file name) written as ``\\xNN``, as ``grader.batch.submissions.escaped`` shows them."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else
                           f"\\u{ord(c):04x}" if 0xD800 <= ord(c) <= 0xDFFF else c
                           for c in value)
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [storable(v) for v in value]
    return value


class Store:
    """A thin layer over the database; one instance per process that writes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.db.commit()

    def close(self) -> None:
        self.db.close()

    def start_run(self, grading_key: str, options: dict[str, Any]) -> int:
        cur = self.db.execute("INSERT INTO runs (started, grading_key, options) VALUES (?, ?, ?)",
                              (time.time(), grading_key, json.dumps(options, sort_keys=True)))
        self.db.commit()
        return _inserted_id(cur)

    def finish_run(self, run_id: int) -> None:
        self.db.execute("UPDATE runs SET finished = ? WHERE id = ?", (time.time(), run_id))
        self.db.commit()

    def current(self, student: str, content_hash: str, grading_key: str) -> sqlite3.Row | None:
        """The newest grade of exactly these files under this grading key, if any."""
        return self.db.execute(
            "SELECT * FROM grades WHERE student = ? AND content_hash = ? AND grading_key = ? "
            "ORDER BY id DESC LIMIT 1", (student, content_hash, grading_key)).fetchone()

    def by_hash(self, content_hash: str, grading_key: str) -> sqlite3.Row | None:
        """Any grade of these exact files (another student's identical copy, say)."""
        if not content_hash:
            return None
        return self.db.execute(
            "SELECT * FROM grades WHERE content_hash = ? AND grading_key = ? AND result IS NOT "
            "NULL ORDER BY (seconds > 0) DESC, id DESC LIMIT 1",  # a real grading first
            (content_hash, grading_key)).fetchone()

    def record(self, run_id: int, entry: dict[str, Any], grading_key: str, status: str,
               message: str, result: dict[str, Any] | None, seconds: float) -> int:
        """Commit one submission's grade and its checks, atomically.

        Text is stored escaped (``storable``): a path or message holding bytes that are not
        UTF-8 (a student folder named on Windows) is a row, never a crash.
        """
        entry, message, result = storable(entry), storable(message), storable(result)
        score = float(result.get("score", 0.0)) if result else 0.0
        max_score = float(result.get("max_score", 0.0)) if result else 0.0
        with self.db:
            cur = self.db.execute(
                "INSERT INTO grades (run_id, student, source, content_hash, grading_key, status, "
                "message, score, max_score, seconds, graded_at, result, entry) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, entry["student"], entry["source"], entry.get("content_hash", ""),
                 grading_key, status, message, score, max_score, seconds, time.time(),
                 json.dumps(result) if result is not None else None, json.dumps(entry)))
            grade_id = _inserted_id(cur)
            for c in (result or {}).get("checks", []):
                self.db.execute(
                    "INSERT INTO checks (grade_id, check_id, status, score, max_score, "
                    "visibility, message) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (grade_id, c["id"], c["status"], c["score"], c["max_score"],
                     c.get("visibility", "public"), c.get("message", "")))
        return grade_id

    def latest(self) -> list[sqlite3.Row]:
        """The current grade of every student (their newest row), by student."""
        return self.db.execute(
            "SELECT * FROM grades WHERE id IN (SELECT MAX(id) FROM grades GROUP BY student) "
            "ORDER BY student").fetchall()

    def history(self, student: str) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM grades WHERE student = ? ORDER BY id",
                               (student,)).fetchall()

    def count(self, run_id: int | None = None) -> int:
        if run_id is None:
            return int(self.db.execute("SELECT COUNT(*) FROM grades").fetchone()[0])
        return int(self.db.execute("SELECT COUNT(*) FROM grades WHERE run_id = ?",
                                   (run_id,)).fetchone()[0])


def _inserted_id(cur: sqlite3.Cursor) -> int:
    """The id of the row an INSERT just made (sqlite3 sets it after every INSERT)."""
    if cur.lastrowid is None:
        raise sqlite3.DatabaseError("the INSERT made no row")
    return cur.lastrowid
