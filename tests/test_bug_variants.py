"""Every catalogued student bug must cost points in the checks meant to catch it.

A variant that passes the checks named for it means a check is too lenient (or
looks at the wrong thing). Only the named checks are run, once per variant for
all its tests (the session's corpus, ``tests/corpus.py``), so each variant costs
one worker start plus a few probes (~2-3 s). Known grader gaps (checks that
ought to catch a bug and do not yet) are strict xfails: they are visible in
every run, and fixing the grader turns them into failures that ask for the
entry to move from ``gaps`` to ``catch``.
"""

from __future__ import annotations

import pytest

from grader.harness.plugin import load_rubric
from tests.corpus import Corpus, Job
from tests.variants import VARIANTS, Variant, only_expression, reference_source

pytestmark = pytest.mark.slow  # grades whole submissions in sandboxed workers


def _named(variant: Variant) -> tuple[str, ...]:
    return variant.catch + variant.must_pass + variant.advice + variant.gaps


def _job(variant: Variant) -> Job:
    """Every check the variant names, in one grading: its catches, passes, advice and gaps."""
    return Job(variant.apply(reference_source()), hidden=True,
               only=only_expression(_named(variant)))


def corpus_jobs(items: list[pytest.Item]) -> list[Job]:
    return [_job(item.callspec.params["variant"]) for item in items
            if hasattr(item, "callspec") and "variant" in item.callspec.params]


def _run(variant: Variant, corpus: Corpus) -> dict:
    result = corpus.result(_job(variant))
    assert result.status == "graded", result.message
    checks = {c.id: c for c in result.checks}
    assert sorted(checks) == sorted(_named(variant)), "the -k expression selected other checks"
    return checks


def test_catalogue_is_complete_and_named_checks_exist():
    """The catalogue covers enough bugs and names only checks the rubric knows."""
    assert len(VARIANTS) >= 20
    names = [v.name for v in VARIANTS]
    assert len(names) == len(set(names)), "variant names must be unique"
    rubric = load_rubric()
    source = reference_source()
    for v in VARIANTS:
        assert v.catch or v.advice, f"{v.name} names no check that must catch it"
        assert not v.gaps or v.gap_reason, f"{v.name}: a known gap needs its reason"
        named = v.catch + v.must_pass + v.gaps + v.advice
        assert all(rubric[c].get("advisory") for c in v.advice), f"{v.name}: advice not advisory"
        assert not any(rubric[c].get("advisory") for c in v.catch), \
            f"{v.name}: an advisory cannot catch a bug (it costs nothing)"
        assert len(named) == len(set(named)), f"{v.name} names a check twice"
        unknown = [c for c in named if c not in rubric]
        assert not unknown, f"{v.name}: unknown check ids {unknown}"
        assert v.apply(source) != source


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_variant_is_caught(variant: Variant, corpus):
    """Each named check fails (score 0, with a message); must_pass checks still pass;
    advice checks report an advisory (0 points, never a failure)."""
    checks = _run(variant, corpus)
    missed = [f"{cid}: {checks[cid].status}" for cid in variant.catch
              if checks[cid].status == "passed" or checks[cid].score != 0]
    assert not missed, f"{variant.name} ({variant.description}) was not caught by {missed}"
    silent = [cid for cid in variant.catch if not checks[cid].message.strip()]
    assert not silent, f"{variant.name}: no message from {silent}"
    wrongly = [f"{cid}: {checks[cid].message}" for cid in variant.must_pass
               if checks[cid].status != "passed"]
    assert not wrongly, f"{variant.name}: checks that should still pass failed: {wrongly}"
    unadvised = [f"{cid}: {checks[cid].status}" for cid in variant.advice
                 if checks[cid].status != "advisory" or checks[cid].score != 0]
    assert not unadvised, f"{variant.name}: advisories that did not speak: {unadvised}"


GAPS = [
    pytest.param(v, cid, id=f"{v.name}-{cid}",
                 marks=pytest.mark.xfail(strict=True, reason=v.gap_reason))
    for v in VARIANTS for cid in v.gaps
]


@pytest.mark.parametrize(("variant", "check"), GAPS)
def test_known_gap(variant: Variant, check: str, corpus):
    """A check that should catch the bug but does not (a grader weakness to fix)."""
    checks = _run(variant, corpus)
    assert checks[check].status != "passed", f"{variant.name} passes {check}"
