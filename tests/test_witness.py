"""The student's process is a witness, never a judge (DESIGN.md): the corpus earns nothing.

Every case of ``tests/witness_corpus.py`` is graded once, for its own checks
only, and the gradings are shared by the asserts below:

- the checks an attack targets earn (together) at most its ``max_points``, 0 for
  all but one: a loss curve, an "every part ran", a "no forbidden call" or a
  notebook's output that the student process reports about itself earns nothing
  until the trusted side has checked it against ground truth;
- a correct solution that also patches the grader keeps its honest points;
- hiding library cells from the monitor, or patching the grader next to a correct
  solution, marks the submission for instructor review (``SubmissionResult.review``,
  a list of reasons).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.harness.engine import run_checks
from grader.harness.plugin import load_rubric
from grader.results import SubmissionResult
from tests.corpus import Call
from tests.witness_corpus import BY_NAME, CASES, NOTEBOOK_CHECKS, Witness, can, trained_elsewhere

pytestmark = pytest.mark.slow

REVIEWED = [c for c in CASES if c.review]
WITH_HONEST = [c for c in CASES if c.honest]
TARGETED = [c for c in CASES if c.targets]


def grade_case(folder: Path, name: str) -> dict:
    """In the corpus's pool: one case, graded for exactly the checks it names."""
    case = BY_NAME[name]
    path = case.write(folder, can(trained_elsewhere()) if case.canned else "{}")
    return run_checks(path, only=case.only, hidden=True, slow=True,
                      notebook=bool(case.notebook)).to_dict()


def _call(case: Witness) -> Call:
    return Call("tests.test_witness:grade_case", (case.name,))


def corpus_jobs(items: list[pytest.Item]) -> list[Call]:
    return [_call(item.callspec.params["case"]) for item in items
            if hasattr(item, "callspec") and "case" in item.callspec.params]


@pytest.fixture(scope="module")
def graded(corpus):
    """A case's grading (once per session, in the corpus's pool)."""

    def grade(case: Witness) -> SubmissionResult:
        return SubmissionResult.from_dict(corpus.result(_call(case)))

    return grade


def _by_id(result: SubmissionResult) -> dict:
    return {c.id: c for c in result.checks}


def _summary(result: SubmissionResult) -> str:
    return "; ".join(f"{c.id}: {c.status} {c.score:g}/{c.max_score:g} ({c.message[:160]!r})"
                     for c in result.checks)


# -- the corpus itself (no grading) ----------------------------------------------------------


def test_the_corpus_is_well_formed():
    rubric = load_rubric()
    assert len(CASES) >= 10
    assert len(BY_NAME) == len(CASES), "case names must be unique"
    for case in CASES:
        assert case.base in ("stub", "reference"), case.name
        assert set(case.checks) <= set(rubric), (case.name, set(case.checks) - set(rubric))
        assert case.targets or case.honest, case.name
        compile(case.source(), f"<{case.name}>", "exec")
    assert sum(c.base == "reference" and not c.targets and c.review for c in CASES) >= 2


# -- what the attacks earn -------------------------------------------------------------------


#: Holes found and not closed yet (the closing note of issue 25 says so): an expected failure.
KNOWN_GAPS = {
    "canned_parameters": "parameters trained elsewhere and embedded in the module pass the "
                         "reference's evaluation: nothing ties them to the student's own model",
}


def _param(case: Witness):
    reason = KNOWN_GAPS.get(case.name)
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in TARGETED])
def test_the_attack_earns_nothing(case: Witness, graded):
    result = graded(case)
    assert result.status == "graded", result.message
    checks = _by_id(result)
    missing = [cid for cid in case.targets if cid not in checks]
    assert not missing, f"{case.name}: targeted checks not reported: {missing}"
    if "from_scratch_public" in case.targets:  # judged with the function checks' verdicts
        assert any(cid.endswith("_public") and cid != "from_scratch_public" for cid in checks)
    earned = sum(checks[cid].score for cid in case.targets)
    assert earned <= case.max_points, (
        f"{case.name} ({case.attack}) earned {earned:g} points on "
        f"{', '.join(case.targets)}: {_summary(result)}")
    if any(cid in NOTEBOOK_CHECKS for cid in case.targets):
        notebook = sum(c.score for c in result.checks if c.id.startswith("notebook_"))
        assert notebook == 0, f"{case.name}: {notebook:g} notebook points: {_summary(result)}"


@pytest.mark.parametrize("case", WITH_HONEST, ids=[c.name for c in WITH_HONEST])
def test_a_correct_solution_that_pokes_at_the_grader_keeps_its_honest_points(case, graded):
    result = graded(case)
    assert result.status == "graded", result.message
    checks = _by_id(result)
    for cid in case.honest:
        assert cid in checks, f"{case.name}: {cid} not reported"
        check = checks[cid]
        assert check.status == "passed" and check.score == check.max_score > 0, (
            f"{case.name}: {cid}: {check.status} {check.score:g}/{check.max_score:g}: "
            f"{check.message}")


@pytest.mark.parametrize("case", REVIEWED, ids=[c.name for c in REVIEWED])
def test_the_submission_is_marked_for_review(case: Witness, graded):
    result = graded(case)
    review = getattr(result, "review", [])
    assert isinstance(review, list) and review, (
        f"{case.name} ({case.attack}) is not marked for instructor review: "
        f"{_summary(result)}")
    assert all(isinstance(reason, str) and reason for reason in review), review
