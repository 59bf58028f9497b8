"""Rules of the assignment: the work is done from scratch."""

from __future__ import annotations

from grader.checks.inputs import call
from grader.compare import CheckFailure


def test_from_scratch_public(submission):
    ran = call(submission, "the whole module", "tour")
    uses = submission.usage()
    if uses:
        listed = "; ".join(f"{u['api']} at line {u['line']} in {u['function']}" for u in uses)
        raise CheckFailure(f"uses library versions of what the assignment asks you to write "
                           f"yourself: {listed}")
    todo = [name for name, status in ran.items() if status == "not implemented"]
    if todo:
        raise CheckFailure(f"not implemented yet: {', '.join(todo)} (the from-scratch rule is "
                           "checked on code that runs)")
    broken = [name for name, status in ran.items() if status != "ran"]
    if broken:
        raise CheckFailure("could not verify that the code is written from scratch: "
                           f"{', '.join(broken)} did not run ({ran[broken[0]]})")
