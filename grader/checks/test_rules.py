"""Rules of the assignment: the work is done from scratch."""

from __future__ import annotations

from grader.checks.inputs import call
from grader.harness.judging import CheckFailure


def test_from_scratch_public(submission):
    """Lost only for a forbidden API actually seen; earned for the parts that ran.

    Each part of the module is called once (the probe ``tour``). A part that
    returned values was verified; one not implemented yet earns nothing here;
    one that crashed is left out (its own checks report the crash, once).
    """
    ran = call(submission, "the whole module", "tour")
    uses = submission.usage()
    if uses:
        listed = "; ".join(f"{u['api']} at line {u['line']} in {u['function']}" for u in uses)
        raise CheckFailure(f"uses library versions of what the assignment asks you to write "
                           f"yourself: {listed}")
    verified = [name for name, status in ran.items() if status == "ran"]
    todo = [name for name, status in ran.items() if status == "not implemented"]
    crashed = [f"{name} ({status})" for name, status in ran.items()
               if status not in ("ran", "not implemented")]
    left_out = (f"; not counted here: {', '.join(crashed)} raised an error, which its own "
                "checks report") if crashed else ""
    if not verified:
        raise CheckFailure("nothing to verify yet: no part of the module returned values "
                           f"(not implemented yet: {', '.join(todo) or 'none'}){left_out}. The "
                           "rule is earned by code that runs")
    if todo:
        share = len(verified) / (len(verified) + len(todo))
        raise CheckFailure(f"written from scratch as far as it runs ({len(verified)} of "
                           f"{len(verified) + len(todo)} parts); not implemented yet: "
                           f"{', '.join(todo)}: the rest of the points come with them"
                           f"{left_out}", credit=share)
