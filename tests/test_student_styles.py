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

from pathlib import Path

import pytest

from grader.harness.plugin import load_rubric
from tests.corpus import Job, job_for

pytestmark = pytest.mark.slow  # grades whole submissions in sandboxed workers

STUDENTS = sorted((Path(__file__).resolve().parent / "solutions" / "students").glob("s*.py"))


def corpus_jobs(items: list[pytest.Item]) -> list[Job]:
    """Every selected solution, graded once (public + hidden) in the session's corpus."""
    return [job_for(item.callspec.params["path"]) for item in items
            if hasattr(item, "callspec") and "path" in item.callspec.params]


def test_there_are_enough_independent_solutions():
    assert len(STUDENTS) >= 12
    for path in STUDENTS:
        assert path.read_text().startswith("#"), f"{path.name}: first line must name its style"


@pytest.mark.parametrize("path", STUDENTS, ids=lambda p: p.stem)
def test_student_style_solution_gets_every_point(path: Path, corpus):
    result = corpus.result(job_for(path))
    assert result.status == "graded", result.message
    wrong = [f"{c.id}: {c.status} {c.score}/{c.max_score}: {c.message}" for c in result.checks
             if (c.status != "passed" and not c.advisory) or c.status in ("error",)
             or c.score != c.max_score]
    assert not wrong, "\n".join(wrong)
    rubric = load_rubric(include_slow=False)
    assert {c.id for c in result.checks} == set(rubric)
    assert result.score == result.max_score == 100
    assert not [c.diagnoses for c in result.checks if c.diagnoses], "a mistake named"
