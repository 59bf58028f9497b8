"""Correct solutions written the way real students write them must get every point.

``tests/solutions/students/`` holds solutions written independently of the
reference (their authors never read it), each a copy of the course-style
starter (``tests/starter/``) with the TODOs filled in place, in a style real
submissions use: in-place updates, all three cells in ``__init__``, the
starter's float32 attention buffer, the one-line loss with ``ignore_index``
passed straight through, early stopping at ``<END>``, ``pretrained=True``
hard-coded, loops or vectorised code, ``nn.Linear`` or 1x1 convolutions, ...
(each file's first line says which). Every function check (public and hidden)
must give them all its points; advisories may speak but never fail.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest

from grader.harness.engine import run_checks
from grader.harness.plugin import load_rubric
from grader.results import SubmissionResult

STUDENTS = sorted((Path(__file__).resolve().parent / "solutions" / "students").glob("s*.py"))


def _grade(path: Path) -> dict:
    return run_checks(path, hidden=True).to_dict()


@pytest.fixture(scope="module")
def graded() -> dict[str, SubmissionResult]:
    """Every solution graded once, side by side on the machine's cores (each in its sandbox)."""
    workers = max(1, min(len(STUDENTS), os.cpu_count() or 1))
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        results = dict(zip(STUDENTS, pool.map(_grade, STUDENTS), strict=True))
    return {path.stem: SubmissionResult.from_dict(r) for path, r in results.items()}


def test_there_are_enough_independent_solutions():
    assert len(STUDENTS) >= 12
    for path in STUDENTS:
        assert path.read_text().startswith("#"), f"{path.name}: first line must name its style"


@pytest.mark.parametrize("path", STUDENTS, ids=lambda p: p.stem)
def test_student_style_solution_gets_every_point(path: Path, graded):
    result = graded[path.stem]
    assert result.status == "graded", result.message
    wrong = [f"{c.id}: {c.status} {c.score}/{c.max_score}: {c.message}" for c in result.checks
             if (c.status != "passed" and not c.advisory) or c.status in ("error",)
             or c.score != c.max_score]
    assert not wrong, "\n".join(wrong)
    rubric = load_rubric(include_slow=False)
    assert {c.id for c in result.checks} == set(rubric)
    assert result.score == result.max_score == 100
    assert not [c.diagnoses for c in result.checks if c.diagnoses], "a mistake named"
