"""Every catalogued student bug must cost points in the checks meant to catch it.

A variant that passes the checks named for it means a check is too lenient (or
looks at the wrong thing). Only the named checks are run, so each variant costs
one worker start plus a few probes (~2-3 s). Known grader gaps (checks that
ought to catch a bug and do not yet) are strict xfails: they are visible in
every run, and fixing the grader turns them into failures that ask for the
entry to move from ``gaps`` to ``catch``.
"""

from __future__ import annotations

import pytest

from grader.harness.engine import run_checks
from grader.harness.plugin import load_rubric
from tests.variants import VARIANTS, Variant, only_expression, reference_source, write_variant


def _run(variant: Variant, ids: tuple[str, ...], tmp_path) -> dict:
    path = write_variant(variant, tmp_path)
    result = run_checks(path, hidden=True, only=only_expression(ids))
    assert result.status == "graded", result.message
    checks = {c.id: c for c in result.checks}
    assert sorted(checks) == sorted(ids), "the -k expression selected other checks"
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
def test_variant_is_caught(variant: Variant, tmp_path):
    """Each named check fails (score 0, with a message); must_pass checks still pass;
    advice checks report an advisory (0 points, never a failure)."""
    checks = _run(variant, variant.catch + variant.must_pass + variant.advice, tmp_path)
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
def test_known_gap(variant: Variant, check: str, tmp_path):
    """A check that should catch the bug but does not (a grader weakness to fix)."""
    checks = _run(variant, (check,), tmp_path)
    assert checks[check].status != "passed", f"{variant.name} passes {check}"
