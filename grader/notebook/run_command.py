"""``capgrade run-notebook``: execute a notebook safely in grading mode; keep what it made."""

from __future__ import annotations

import argparse
import ast
import sys

from grader.usage import UsageError


def parameters(items: list[str], as_is: bool) -> dict[str, object]:
    """``--param NAME=VALUE`` options over the grading parameters (none with ``--as-is``).

    A VALUE is a Python literal when it parses as one (True, 3, 0.5, "x"), else the text.
    """
    from grader.notebook import runner as nr

    found = {} if as_is else dict(nr.GRADING_PARAMETERS)
    for item in items:
        name, eq, value = item.partition("=")
        if not name.isidentifier() or not eq:
            raise UsageError(f"--param wants NAME=VALUE, got {item!r}")
        try:
            found[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            found[name] = value
    return found


def run(args: argparse.Namespace) -> int:
    """The ``run-notebook`` command on its parsed options."""
    from grader.notebook import runner as nr
    from grader.notebook.terminal import notebook_table
    from grader.results.sanitize import student_text

    report = nr.run_notebook(args.notebook, module=args.module, out_dir=args.out,
                             parameters=parameters(args.param, args.as_is),
                             cell_timeout=args.cell_timeout, budget=args.budget,
                             html=not args.no_html)
    nr.clean_report(report)  # the notebook chose its file names and messages: none raw
    notebook_table(report, sys.stdout)
    if report.status != "executed":  # the notebook's failure, not the caller's: said, exit 2
        print(f"capgrade run-notebook: {student_text(report.message)}", file=sys.stderr)
        return 2
    return 0 if report.clean else 1
