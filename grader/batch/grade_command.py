"""``capgrade grade``: a class graded (``grader.batch.grading.grade_all``), then said.

Options that cannot work (a GPU that is not there, ``--export canvas`` without a
roster) are refused before grading, which may take hours (``UsageError``: exit 2);
a roster that does not read is said up front while grading goes on. After the run:
the counts, the copies, the class's common mistakes, the reviews and the regrades,
then the LMS exports.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from grader.usage import UsageError


def refused(args: Any) -> None:
    """Raise when `grade`'s options cannot work (said before grading), else return.

    A --device without a usable GPU would give every student 0; --export canvas without
    --roster could export nothing.
    """
    from grader.harness.request import device_problem

    problems = [device_problem(args.device)]
    if "canvas" in args.export and args.roster is None:
        from grader.integrations import lms

        problems += [p.removeprefix("--export canvas: ")
                     for p in lms.check_request(["canvas"], None, args.assignment)]
    problems = [p for p in problems if p]
    if problems:
        raise UsageError(*(f"{problem}. Nothing was graded: fix this and run the command again"
                           for problem in problems))


def grade(args: Any) -> int:
    """The ``grade`` command on its parsed options."""
    refused(args)
    from rich.console import Console

    from grader.batch.grading import NEEDS_REGRADE, grade_all
    from grader.batch.submissions import PickError
    from grader.harness.request import GradingRequest

    options = GradingRequest(hidden=not args.public_only, slow=not args.no_slow,
                             notebook=not args.no_notebook, timeout=args.timeout,
                             device=args.device, hidden_expected=args.hidden_expected)
    if args.export or args.roster:  # say so now, not after hours of grading; grading goes on
        from grader.integrations import lms

        for problem in lms.check_request(args.export, args.roster, args.assignment):
            print(f"capgrade grade: {problem}. Grading goes on; the other reports will be "
                  "written", file=sys.stderr)
    try:
        summary = grade_all(args.submissions, args.out, workers=args.workers, options=options,
                            regrade=tuple(args.regrade), dask=args.dask,
                            progress=not args.quiet,
                            warm={"auto": None, "on": True, "off": False}[args.warm],
                            pick=dict(p.partition("=")[::2] for p in args.pick))
    except (FileNotFoundError, NotADirectoryError, PickError) as exc:  # PickError: --pick
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt as exc:  # BatchInterrupted: every process it started is gone
        print(f"\ncapgrade grade: {exc or 'interrupted'}", file=sys.stderr)
        return 130
    console = Console()
    console.print(f"{summary.rows} submissions: {summary.graded_now} graded now, "
                  f"{summary.reused} identical to another (result reused), {summary.skipped} "
                  f"unchanged since the last run, {summary.problems} with nothing to grade; "
                  f"{summary.seconds:.1f} s")
    console.print("status: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.statuses.items())))
    console.print(f"gradebook: {args.out / 'gradebook.csv'}; feedback: {args.out / 'students'}")
    if summary.copies:  # several copies for one student: which was graded is never silent
        from rich.markup import escape

        console.print(f"[bold]{len(summary.copies)} student(s) handed in several copies[/]; "
                      "the newest (or --pick's) was graded, the gradebook's copies column says "
                      "which: " + escape(", ".join(sorted(summary.copies))))
    print_mistakes(console, args.out)
    print_reviews(console, args.out)
    if summary.statuses.get(NEEDS_REGRADE):
        console.print(f"[bold]{summary.statuses[NEEDS_REGRADE]} submission(s) need a regrade[/]: "
                      "the grading machine ran out of memory or time on them (not a grade; "
                      "their gradebook rows say which checks). Run the same command again with "
                      "fewer --workers or on a bigger machine: they are graded again.")
    return exports(args.out, args.export, args.roster, args.assignment)


def _summary(out: Path, key: str) -> dict[str, Any]:
    try:
        return json.loads((out / "summary.json").read_text()).get(key, {})
    except (OSError, ValueError):
        return {}


def print_reviews(console: Any, out: Path) -> None:
    """The submissions whose points wait for an instructor's review (from summary.json)."""
    from rich.markup import escape

    found = _summary(out, "review")
    if found:
        console.print(f"[bold yellow]{len(found)} submission(s) need your review[/] (their "
                      "from-scratch points are withheld until you have looked; the gradebook's "
                      "review column says why): " + escape(", ".join(sorted(found)[:20]))
                      + (f" and {len(found) - 20} more" if len(found) > 20 else ""))


def print_mistakes(console: Any, out: Path) -> None:
    """The most common named mistakes of the class (from summary.json), if any."""
    found = _summary(out, "misconceptions")
    if found:
        top = ", ".join(f"{v['name']} ({v['students']})" for v in list(found.values())[:5])
        console.print(f"most common known mistakes: {top}; all in {out / 'misconceptions.md'}")


def exports(out: Path, export: list[str], roster: Path | None, assignment: str) -> int:
    """`grade --export`: the LMS files from the store; 2 when the options or roster were bad."""
    from grader.batch.grading import STORE_NAME
    from grader.integrations import lms
    from grader.results.store import Store

    if not export:  # only --roster: say it was not used
        problems = lms.check_request([], roster, assignment)
    else:
        store = Store(out / STORE_NAME)
        try:
            done, problems = lms.export(store, out, export, roster, assignment)
        finally:
            store.close()
        for made in done:
            print(made.summary())
            for note in made.notes:
                print(f"  note: {note}")
            for title, lines in made.problems.items():
                if lines:
                    print(f"capgrade grade: {made.lms}: {title}:", file=sys.stderr)
                    for line in lines[:10]:
                        print(f"  {line}", file=sys.stderr)
                    if len(lines) > 10:
                        print(f"  ... and {len(lines) - 10} more in {made.listing}",
                              file=sys.stderr)
    if problems:
        raise UsageError(*(f"{problem}. Nothing exported for it; once fixed, run the same "
                           "command again (nothing is graded twice)" for problem in problems))
    return 0
