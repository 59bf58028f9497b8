"""A correct solution in a style unlike the reference must get full marks.

Guards against checks that reward the reference's incidental choices (layer
names, creation order, conv vs linear, cache layout, loss formula) instead of
the contract.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.harness.plugin import load_rubric
from tests.corpus import Job, job_for

pytestmark = pytest.mark.slow  # grades whole submissions in sandboxed workers

ALT = Path(__file__).resolve().parent / "solutions" / "alt_style_rnn_lstm_captioning.py"


def corpus_jobs(items: list[pytest.Item]) -> list[Job]:
    return [job_for(ALT)]


def test_alt_style_solution_scores_full_marks(corpus):
    result = corpus.result(job_for(ALT))
    assert result.status == "graded", result.message
    failed = [f"{c.id}: {c.status}: {c.message}" for c in result.checks if not c.passed]
    assert not failed, "\n".join(failed)
    rubric = load_rubric(include_slow=False)
    assert {c.id for c in result.checks} == set(rubric), "not every check ran"
    assert result.score == result.max_score == sum(e["points"] for e in rubric.values())
    assert not [c.id for c in result.checks if c.diagnoses], "a mistake named in correct code"
