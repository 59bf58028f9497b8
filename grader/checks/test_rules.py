"""Rules of the assignment: the work is done from scratch.

The student's process is a witness, never a judge: what it reports about itself
(the runtime monitor's list, which parts ran) can cost the rule's points, never
earn them. The points are earned by the harness's own verdicts: a part counts
as written when a check of it passed against expected values the harness holds.
Against it count the forbidden calls the monitor saw run, and what the harness
reads in the source itself (``grader.harness.source_rules``): a forbidden name
the monitor missed, or code that reaches around the grader, withholds the points
until an instructor has reviewed the submission.
"""

from __future__ import annotations

from collections import defaultdict

from grader.checks.inputs import call
from grader.harness import source_advice, source_rules
from grader.harness.judging import CheckFailure, require_ok

#: Targets that are not a part of the module a student writes.
_NOT_PARTS = {"whole module"}
_NOT_IMPLEMENTED = "not implemented yet"


def parts_verified(verdicts) -> tuple[list[str], list[str], list[str]]:
    """(parts with a passing check, parts not implemented yet, the rest) by rubric target.

    Only graded checks of functions count: advisories, the slow end-to-end checks
    and this rule itself say nothing about one part.
    """
    by_part: dict[str, list] = defaultdict(list)
    for check in verdicts:
        if check.advisory or check.group in ("rules", "overfit", "notebook",
                                             "submission_file"):
            continue
        if check.target and check.target not in _NOT_PARTS:
            by_part[check.target].append(check)
    verified, todo, other = [], [], []
    for part, checks in by_part.items():
        if any(c.status == "passed" for c in checks):
            verified.append(part)
        elif checks and all(_NOT_IMPLEMENTED in c.message for c in checks):
            todo.append(part)
        else:
            other.append(part)
    return verified, todo, other


def test_from_scratch_public(submission, grading, verdicts, request):
    """Lost for a forbidden API seen running; earned for the parts the harness verified.

    Each part of the module is still called once (the probe ``tour``), so the
    runtime monitor sees the calls a check may not reach; what the tour says
    ran is not used.
    """
    call(submission, "the whole module", "tour")
    uses = submission.usage()
    if uses:
        listed = "; ".join(f"{u['api']} at line {u['line']} in {u['function']}" for u in uses)
        raise CheckFailure(f"uses library versions of what the assignment asks you to write "
                           f"yourself: {listed}")
    found = source_rules.scan(grading.submission)
    review = [f.describe() for f in found.evasion]
    review += [f"{f.describe()}, a library version of what you must write" for f in
               found.forbidden]
    if found.unreadable:
        review.append(found.unreadable)
    if review:
        shown = "; ".join(review[:6]) + (f" (and {len(review) - 6} more)" if len(review) > 6
                                         else "")
        request.node.user_properties.append(("review", shown))
        raise CheckFailure("points withheld until your instructor has reviewed your code: it "
                           f"contains {shown}. The rule is judged from what your code does; "
                           "code that reaches around the grader, or library versions of what "
                           "you must write, is looked at by a person")
    verified, todo, other = parts_verified(verdicts)
    if not (verified or todo or other):
        raise CheckFailure("judged from the verdicts of the function checks, and none ran with "
                           "it: run it together with them (without --only)")
    left_out = (f"; not counted here: {', '.join(other)}, whose checks failed (they say why)"
                if other else "")
    if not verified:
        raise CheckFailure("nothing verified yet: no part of the module passed a check "
                           f"(not implemented yet: {', '.join(todo) or 'none'}){left_out}. The "
                           "rule is earned by code that works")
    if todo:  # reported once, in their own checks: the rule does not charge them again
        request.node.user_properties.append(("note", (
            f"written from scratch: {len(verified)} parts verified; not implemented yet, "
            f"and charged only in their own checks: {', '.join(todo)}")))


def test_literal_comparisons_public(submission, grading):
    """Advisory: ``x is "literal"`` works only while both are the same object."""
    require_ok(submission.imported(), "the whole module")  # advice on code that runs
    found = source_advice.scan(grading.submission)
    if found:
        shown = "; ".join(a.describe() for a in found[:4]) + (
            f" (and {len(found) - 4} more)" if len(found) > 4 else "")
        raise CheckFailure(shown)
