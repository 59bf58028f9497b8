"""``capgrade check``: find the module, refuse a bad request up front, grade, render.

The caller's mistakes (no such module, a notebook given for the module, an
unknown group, a GPU that is not there, a bad ``--report``) are refused with one
message (``grader.usage.UsageError``: exit 2) before any worker starts; Ctrl-C
stops every worker started here and exits 130.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from grader.authoring.build import STUB
from grader.contract import MODULE_FILE
from grader.usage import UsageError


def default_submission() -> Path:
    """./rnn_lstm_captioning.py in a student's folder, else the project's stub (``STUB``)."""
    here = Path(MODULE_FILE)
    return here if here.is_file() else STUB


def submission(given: Path | None) -> tuple[Path, str | None]:
    """The module `check` grades, or what is wrong with the path given (said before grading).

    A folder means its rnn_lstm_captioning.py (the loss file and notebook are then found
    beside it); a notebook or a missing path is refused at once, not after a worker's start.
    """
    how = f"pass its path: capgrade check path/to/{MODULE_FILE} (or the folder holding it)"
    if given is None:
        path = default_submission()
        if path.is_file():
            return path, None
        return path, (f"no {MODULE_FILE} in the current folder ({Path.cwd()}): run capgrade "
                      f"check in the folder that holds your {MODULE_FILE}, or {how}")
    if given.is_dir():
        path = given / MODULE_FILE
        if path.is_file():
            return path, None
        others = sorted(p.name for p in given.glob("*.py"))[:3]
        seen = f" (it has {', '.join(others)}: pass the file itself if yours is one of them)" \
            if others else ""
        return path, f"no {MODULE_FILE} in the folder {given}{seen}; {how}"
    module = given.parent / MODULE_FILE
    if given.suffix == ".ipynb":
        return given, (f"{given} is a notebook; capgrade check grades the module: capgrade "
                       f"check {module} (to run the notebook checks on this notebook: capgrade "
                       f"check {module} --group notebook --notebook {given})")
    if not given.exists():
        return given, f"no such file: {given}; {how}"
    if given.suffix != ".py":
        return given, f"{given} is not a Python file (.py); {how}"
    return given, None


def check(args: Any) -> int:
    """The ``check`` command on its parsed options."""
    from grader.harness.request import GradingRequest, device_problem

    path, problem = submission(args.path)
    problem = problem or GradingRequest(only=args.only, groups=tuple(args.group)) \
        .selection_problem() or device_problem(args.device)
    if problem:  # the caller's mistake: one message, no table, no worker started
        raise UsageError(problem)
    try:
        return _run(args, path)
    except KeyboardInterrupt as exc:
        return interrupted(getattr(exc, "result", None))


def interrupted(result: Any) -> int:
    """Ctrl-C: say so and what had finished, stop every worker started here; exit 130."""
    import signal

    from grader import sandbox

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up
    sandbox.kill_all_started()
    done = list(result.checks) if result is not None else []
    if done:
        print(f"capgrade check: interrupted (Ctrl-C) after {len(done)} check(s) had finished:",
              file=sys.stderr)
        for c in done:
            print(f"  {c.id}: {c.status} ({c.score:g} / {c.max_score:g})", file=sys.stderr)
    else:
        print("capgrade check: interrupted (Ctrl-C) before any check had finished",
              file=sys.stderr)
    print("the workers were stopped; nothing was graded in full: run the command again for a "
          "result", file=sys.stderr)
    return 130


def _reports(specs: list[str]) -> list[tuple[str, Path]]:
    """``--report FORMAT=FILE`` options, or the one that is not."""
    from grader.results.render import FORMATS

    reports = []
    for spec in specs:
        fmt, _, target = spec.partition("=")
        if fmt not in FORMATS or not target:
            raise UsageError(f"--report {spec!r}: expected FORMAT=FILE with FORMAT one of "
                             f"{', '.join(FORMATS)}")
        reports.append((fmt, Path(target)))
    return reports


def _run(args: Any, path: Path) -> int:
    """`check` on a module already found to exist, with a selection already found valid."""
    from grader.sandbox import forkserver

    if forkserver.enabled() and not args.device.startswith("cuda"):
        forkserver.get()  # imports torch while this process imports pytest and the checks
    from grader.harness.engine import grade
    from grader.harness.request import GradingRequest
    from grader.results import RunStatus
    from grader.results.render import write

    reports = _reports(args.report)
    result = grade(GradingRequest(
        submission=Path(path), hidden=args.all, slow=args.all, notebook=args.all, only=args.only,
        groups=tuple(args.group), device=args.device, timeout=args.timeout,
        hidden_expected=args.hidden_expected, loss_file=args.loss_file,
        notebook_path=args.notebook, notebook_out=args.notebook_out, verbose=args.verbose))
    if result.status != "graded" and RunStatus(result.status).usage_error:
        raise UsageError(result.message)  # once, with no table
    write(result, args.format, sys.stdout, verbose=args.verbose)
    for fmt, target in reports:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "w", encoding="utf-8") as stream:
            write(result, fmt, stream)
    if result.status != "graded":
        print(f"capgrade check: {result.message}", file=sys.stderr)
        return 2 if RunStatus(result.status).usage_error else 1
    return 0 if result.all_passed else 1
