"""The `capgrade` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from grader.authoring.stubgen import StubError, build_stub
from grader.contract import MODULE_FILE
from grader.results import RunStatus

REFERENCE = Path("reference/rnn_lstm_captioning.py")
STUB = Path("student/rnn_lstm_captioning.py")


def _build_stub(args: argparse.Namespace) -> int:
    if not args.reference.is_file():
        print(f"capgrade build-stub: reference not found: {args.reference} "
              "(run from the project root or pass --reference)", file=sys.stderr)
        return 2
    try:
        if args.check:
            from grader.authoring.stubgen import stub_is_current

            if stub_is_current(args.reference, args.out):
                print(f"{args.out} is in sync with {args.reference}")
                return 0
            print(f"{args.out} is stale: run `capgrade build-stub`", file=sys.stderr)
            return 1
        changed = build_stub(args.reference, args.out)
    except (StubError, SyntaxError) as exc:
        print(f"capgrade build-stub: {args.reference}: {exc}", file=sys.stderr)
        return 2
    print(f"{'wrote' if changed else 'unchanged:'} {args.out}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    for path in (args.reference, args.stub):
        if not path.is_file():
            print(f"capgrade demo: not found: {path} (run from the project root)", file=sys.stderr)
            return 2
    if args.tour:
        from grader.authoring.demo import run_demo

        return run_demo(args.reference, args.stub)
    import csv

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from grader.batch.grading import grade_all
    from grader.harness.request import GradingRequest

    try:
        from grader.authoring.examples import write_examples
    except ImportError:  # a student's install: the example class is instructors' material
        print("capgrade demo: the example class ships with the instructors' checkout only",
              file=sys.stderr)
        return 2

    console = Console()
    described = write_examples(args.reference, args.stub, args.out / "submissions")
    console.print(f"grading the example class ({len(described)} submissions in "
                  f"{args.out / 'submissions'}): public + hidden checks")
    summary = grade_all(args.out / "submissions", args.out, workers=args.workers,
                        options=GradingRequest(hidden=True))
    with open(args.out / "gradebook.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    table = Table(title="gradebook", title_justify="left")
    for name in ("student", "what it is", "status", "score", "message"):
        table.add_column(name, overflow="fold")
    for row in rows:
        score = f"{float(row['score']):g} / {float(row['max_score']):g}" \
            if row["status"] == "graded" else "-"
        table.add_row(row["student"], described.get(row["student"], ""), row["status"], score,
                      Text(row["message"][:90]))
    console.print(table)
    console.print(f"{summary.seconds:.0f} s. Gradebook {args.out / 'gradebook.csv'}, feedback "
                  f"{args.out / 'students'}, plots and summary.json in {args.out}")
    return 0


def _release(args: argparse.Namespace) -> int:
    from grader.authoring.release import ReleaseError, build_release

    try:
        files = build_release(args.out, force=args.force)
    except ReleaseError as exc:
        print(f"capgrade release: {exc}", file=sys.stderr)
        return 1 if exc.leak else 2
    for path in files:
        print(f"  {path.relative_to(args.out)}  ({path.stat().st_size:,} bytes)")
    print(f"student release in {args.out}: audited, no solution line and no hidden expected "
          "value in it (the wheel's files included)")
    return 0


def _gradescope(args: argparse.Namespace) -> int:
    import json
    import os
    import shutil
    import subprocess
    import tempfile
    import time

    from grader.authoring.release import ReleaseError
    from grader.integrations import gradescope

    try:
        bundle = gradescope.build_bundle(args.out, args.hidden_expected, slow=not args.no_slow,
                                         notebook=not args.no_notebook, timeout=args.timeout,
                                         deadline=args.deadline)
    except ReleaseError as exc:
        print(f"capgrade gradescope: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {bundle} ({bundle.stat().st_size:,} bytes): upload it as the assignment's "
          "autograder (Configure Autograder > Zip file upload)")
    if args.trial is None:
        return 0
    if not args.trial.is_dir():
        print(f"capgrade gradescope: --trial {args.trial}: not a folder", file=sys.stderr)
        return 2
    from grader.integrations.container import parse_memory, run_limited
    from grader.results.render import LIMITS_TEST

    try:
        memory = parse_memory(args.memory) if args.memory else None
    except ValueError as exc:
        print(f"capgrade gradescope: --memory: {exc}", file=sys.stderr)
        return 2
    if args.cpus is not None and args.cpus <= 0:
        print("capgrade gradescope: --cpus must be above 0 (e.g. 0.5)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="capgrade-trial-") as tmp:
        root = Path(tmp) / "autograder"
        script = gradescope.unpack_for_trial(bundle, root)
        shutil.copytree(args.trial, root / "submission", dirs_exist_ok=True)
        env = {**os.environ, "CAPGRADE_AUTOGRADER_ROOT": str(root),
               "CAPGRADE_PYTHON": sys.executable}
        if memory or args.cpus:
            run = run_limited(["bash", str(script)], env, memory=memory, cpus=args.cpus,
                              cold=True)
        else:
            start = time.monotonic()
            subprocess.run(["bash", str(script)], env=env, check=False)
            run = None
            wall = time.monotonic() - start
        results = json.loads((root / "results" / "results.json").read_text())
        kept = bundle.with_name("trial-results.json")
        shutil.copyfile(root / "results" / "results.json", kept)
    graded = [t for t in results.get("tests", []) if t.get("name") != LIMITS_TEST
              and (t.get("max_score", 0) or "status" in t)]
    regrade = [t["name"] for t in graded if "regrade" in t.get("tags", [])]
    print(f"trial on {args.trial}: score {results.get('score', 0):g} / "
          f"{sum(t['max_score'] for t in graded):g}; "
          f"{sum(t.get('status') == 'passed' for t in graded)} of {len(graded)} tests passed")
    print(f"  under {run.describe()}" if run is not None else f"  wall {wall:.0f} s, no limits")
    print(f"  Gradescope's results.json: {kept}")
    for t in graded:
        if t.get("status") == "failed":
            reason = next((line for line in t.get("output", "").splitlines() if line.strip()), "")
            print(f"  lost {t['max_score'] - t['score']:g}: {t['name']}: {reason[:160]}")
    if regrade or (run is not None and run.oom_kills):
        print(f"  the grading machine ran out on {len(regrade)} check(s): "
              f"{', '.join(regrade) or 'the grader itself'}. A correct submission needs more "
              "than these settings: raise them on Gradescope (and here) and try again.")
        return 1
    return 0


def _default_submission() -> Path:
    """./rnn_lstm_captioning.py in a student's folder, else the project's stub."""
    here = Path(MODULE_FILE)
    return here if here.is_file() else STUB


def _submission(given: Path | None) -> tuple[Path, str | None]:
    """The module `check` grades, or what is wrong with the path given (said before grading).

    A folder means its rnn_lstm_captioning.py (the loss file and notebook are then found
    beside it); a notebook or a missing path is refused at once, not after a worker's start.
    """
    how = f"pass its path: capgrade check path/to/{MODULE_FILE} (or the folder holding it)"
    if given is None:
        path = _default_submission()
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


def _check(args: argparse.Namespace) -> int:
    from grader.harness.request import GradingRequest, device_problem

    path, problem = _submission(args.path)
    problem = problem or GradingRequest(only=args.only, groups=tuple(args.group)) \
        .selection_problem() or device_problem(args.device)
    if problem:  # the caller's mistake: one message, no table, no worker started
        print(f"capgrade check: {problem}", file=sys.stderr)
        return 2
    try:
        return _check_run(args, path)
    except KeyboardInterrupt as exc:
        return _check_interrupted(getattr(exc, "result", None))


def _check_interrupted(result: Any) -> int:
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


def _check_run(args: argparse.Namespace, path: Path) -> int:
    """`check` on a module already found to exist, with a selection already found valid."""
    from grader.sandbox import forkserver

    if forkserver.enabled() and not args.device.startswith("cuda"):
        forkserver.get()  # imports torch while this process imports pytest and the checks
    from grader.harness.engine import grade
    from grader.harness.request import GradingRequest
    from grader.results.render import FORMATS, write

    reports = []
    for spec in args.report:
        fmt, _, target = spec.partition("=")
        if fmt not in FORMATS or not target:
            print(f"capgrade check: --report {spec!r}: expected FORMAT=FILE with FORMAT one of "
                  f"{', '.join(FORMATS)}", file=sys.stderr)
            return 2
        reports.append((fmt, Path(target)))
    result = grade(GradingRequest(
        submission=Path(path), hidden=args.all, slow=args.all, notebook=args.all, only=args.only,
        groups=tuple(args.group), device=args.device, timeout=args.timeout,
        hidden_expected=args.hidden_expected, loss_file=args.loss_file,
        notebook_path=args.notebook, notebook_out=args.notebook_out, verbose=args.verbose))
    if result.status != "graded" and RunStatus(result.status).usage_error:
        print(f"capgrade check: {result.message}", file=sys.stderr)  # once, with no table
        return 2
    write(result, args.format, sys.stdout, verbose=args.verbose)
    for fmt, target in reports:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "w", encoding="utf-8") as stream:
            write(result, fmt, stream)
    if result.status != "graded":
        print(f"capgrade check: {result.message}", file=sys.stderr)
        return 2 if RunStatus(result.status).usage_error else 1
    return 0 if result.all_passed else 1


def _build(args: argparse.Namespace) -> int:
    from grader.authoring import fingerprints
    from grader.harness import expected as ex
    from grader.harness.engine import record
    from grader.harness.request import GradingRequest

    code = _build_stub(argparse.Namespace(reference=args.reference, out=args.stub, check=False))
    if code:
        return code
    print("recording expected values from the reference (public + hidden checks) ...")
    result, recorded = record(GradingRequest(submission=args.reference,
                                             hidden_expected=args.hidden_expected))
    failed = [c for c in result.checks if c.status != "passed"]
    if result.status != "graded" or failed or not result.checks:
        print(f"capgrade build: the reference does not pass its own checks; nothing written: "
              f"{result.message}", file=sys.stderr)
        for c in failed:
            print(f"  {c.id}: {c.status}: {c.message}", file=sys.stderr)
        return 1
    meta = ex.metadata(args.reference, recorded["seeds"])
    ex.save(recorded["public"], {**meta, "visibility": "public"}, ex.PUBLIC_PATH)
    ex.save(recorded["hidden"], {**meta, "visibility": "hidden"}, args.hidden_expected)
    print(f"wrote {ex.PUBLIC_PATH} and {args.hidden_expected} "
          f"({len(result.checks)} checks, {result.duration:.1f} s)")
    print("fingerprinting the known misconceptions (grader/diagnosis/catalogue.toml) ...")
    try:
        found = fingerprints.build(args.reference, args.hidden_expected, jobs=args.jobs)
    except (fingerprints.MutationError, OSError) as exc:
        print(f"capgrade build: {exc}; the expected values are written, without fingerprints "
              "(no diagnoses)", file=sys.stderr)
        return 1
    ex.save({**recorded["public"], **found["public"]}, {**meta, "visibility": "public"},
            ex.PUBLIC_PATH)
    ex.save({**recorded["hidden"], **found["hidden"]}, {**meta, "visibility": "hidden"},
            args.hidden_expected)
    print(f"added {len(found['public'])} public and {len(found['hidden'])} hidden fingerprinted "
          "values")
    return 0


def _misconceptions(args: argparse.Namespace) -> int:
    from grader.diagnosis import catalogue

    print(catalogue.markdown(), end="")
    return 0


def _data(args: argparse.Namespace) -> int:
    import time

    import torch

    from grader.course import dataset
    from grader.course.training import decode_captions

    start = time.monotonic()
    try:
        data = dataset.load_data(args.coco, n_train=args.n_train, n_val=args.n_val,
                                 seed=args.seed)
    except dataset.DataError as exc:
        print(f"capgrade data: {exc}", file=sys.stderr)
        return 2
    print(f"ready in {time.monotonic() - start:.1f} s (format checked: keys, shapes, dtypes, "
          "vocabulary)")
    words = data["vocab"]["idx_to_token"]
    for caption in decode_captions(data["train_captions"][:args.examples], words):
        print(f"  {caption}")
    if args.out is not None:
        torch.save(data, args.out)
        print(f"wrote {args.out} (the course's coco.pt format)")
    return 0


def _run_notebook(args: argparse.Namespace) -> int:
    from grader.notebook import runner as nr
    from grader.results.render import notebook_table
    from grader.results.sanitize import student_text

    parameters = {} if args.as_is else dict(nr.GRADING_PARAMETERS)
    for item in args.param:
        name, _, value = item.partition("=")
        if not name.isidentifier() or not _:
            print(f"capgrade run-notebook: --param wants NAME=VALUE, got {item!r}",
                  file=sys.stderr)
            return 2
        parameters[name] = _literal(value)
    report = nr.run_notebook(args.notebook, module=args.module, out_dir=args.out,
                             parameters=parameters, cell_timeout=args.cell_timeout,
                             budget=args.budget, html=not args.no_html)
    nr.clean_report(report)  # the notebook chose its file names and messages: none raw
    notebook_table(report, sys.stdout)
    if report.status != "executed":
        print(f"capgrade run-notebook: {student_text(report.message)}", file=sys.stderr)
        return 2
    return 0 if report.clean else 1


def _grade_refused(args: argparse.Namespace) -> int:
    """2 when `grade`'s options cannot work (said before grading, which may take hours), else 0.

    A --device without a usable GPU would give every student 0; --export canvas without
    --roster could export nothing. A roster that does not read is still said up front
    while grading goes on (the other reports are worth having).
    """
    from grader.harness.request import device_problem

    problems = [device_problem(args.device)]
    if "canvas" in args.export and args.roster is None:
        from grader.results import lms

        problems += [p.removeprefix("--export canvas: ")
                     for p in lms.check_request(["canvas"], None, args.assignment)]
    problems = [p for p in problems if p]
    for problem in problems:
        print(f"capgrade grade: {problem}. Nothing was graded: fix this and run the command "
              "again", file=sys.stderr)
    return 2 if problems else 0


def _grade(args: argparse.Namespace) -> int:
    if refused := _grade_refused(args):
        return refused
    from rich.console import Console

    from grader.batch.grading import grade_all
    from grader.harness.request import GradingRequest

    options = GradingRequest(hidden=not args.public_only, slow=not args.no_slow,
                             notebook=not args.no_notebook, timeout=args.timeout,
                             device=args.device, hidden_expected=args.hidden_expected)
    if args.export or args.roster:  # say so now, not after hours of grading; grading goes on
        from grader.results import lms

        for problem in lms.check_request(args.export, args.roster, args.assignment):
            print(f"capgrade grade: {problem}. Grading goes on; the other reports will be "
                  "written", file=sys.stderr)
    try:
        summary = grade_all(args.submissions, args.out, workers=args.workers, options=options,
                            regrade=tuple(args.regrade), dask=args.dask,
                            progress=not args.quiet,
                            warm={"auto": None, "on": True, "off": False}[args.warm],
                            pick=dict(p.partition("=")[::2] for p in args.pick))
    except (FileNotFoundError, NotADirectoryError) as exc:
        print(f"capgrade grade: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # a --pick naming no student or copy (PickError)
        from grader.batch.submissions import PickError

        if not isinstance(exc, PickError):
            raise
        print(f"capgrade grade: {exc}", file=sys.stderr)
        return 2
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
    _print_mistakes(console, args.out)
    _print_reviews(console, args.out)
    from grader.batch.grading import NEEDS_REGRADE

    if summary.statuses.get(NEEDS_REGRADE):
        console.print(f"[bold]{summary.statuses[NEEDS_REGRADE]} submission(s) need a regrade[/]: "
                      "the grading machine ran out of memory or time on them (not a grade; "
                      "their gradebook rows say which checks). Run the same command again with "
                      "fewer --workers or on a bigger machine: they are graded again.")
    return _grade_exports(args)


def _print_reviews(console: Any, out: Path) -> None:
    """The submissions whose points wait for an instructor's review (from summary.json)."""
    import json

    from rich.markup import escape

    try:
        found = json.loads((out / "summary.json").read_text()).get("review", {})
    except (OSError, ValueError):
        return
    if found:
        console.print(f"[bold yellow]{len(found)} submission(s) need your review[/] (their "
                      "from-scratch points are withheld until you have looked; the gradebook's "
                      "review column says why): " + escape(", ".join(sorted(found)[:20]))
                      + (f" and {len(found) - 20} more" if len(found) > 20 else ""))


def _print_mistakes(console: Any, out: Path) -> None:
    """The most common named mistakes of the class (from summary.json), if any."""
    import json

    try:
        found = json.loads((out / "summary.json").read_text()).get("misconceptions", {})
    except (OSError, ValueError):
        return
    if found:
        top = ", ".join(f"{v['name']} ({v['students']})" for v in list(found.values())[:5])
        console.print(f"most common known mistakes: {top}; all in {out / 'misconceptions.md'}")


def _grade_exports(args: argparse.Namespace) -> int:
    """`grade --export`: the LMS files from the store; 2 when the options or roster were bad."""
    from grader.batch.grading import STORE_NAME
    from grader.results import lms
    from grader.results.store import Store

    if not args.export:  # only --roster: say it was not used
        problems = lms.check_request([], args.roster, args.assignment)
    else:
        store = Store(args.out / STORE_NAME)
        try:
            done, problems = lms.export(store, args.out, args.export, args.roster,
                                        args.assignment)
        finally:
            store.close()
        for export in done:
            print(export.summary())
            for note in export.notes:
                print(f"  note: {note}")
            for title, lines in export.problems.items():
                if lines:
                    print(f"capgrade grade: {export.lms}: {title}:", file=sys.stderr)
                    for line in lines[:10]:
                        print(f"  {line}", file=sys.stderr)
                    if len(lines) > 10:
                        print(f"  ... and {len(lines) - 10} more in {export.listing}",
                              file=sys.stderr)
    for problem in problems:
        print(f"capgrade grade: {problem}. Nothing exported for it; once fixed, run the same "
              "command again (nothing is graded twice)", file=sys.stderr)
    return 2 if problems else 0


def _literal(text: str) -> object:
    """A Python literal when it parses as one (True, 3, 0.5, "x"), else the text itself."""
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _add_grading_choices(parser: argparse.ArgumentParser) -> None:
    """What `grade` and `gradescope` may leave out, and the per-call timeout: one wording."""
    parser.add_argument("--no-slow", action="store_true",
                        help="leave out the overfit and loss-file checks")
    parser.add_argument("--no-notebook", action="store_true",
                        help="do not execute the submitted notebooks")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds one call into student code may take (default: 15)")


class _VersionAction(argparse.Action):
    """``--version``: the text is built only when asked (it reads package metadata)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from grader import version_text

        print(version_text())
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="capgrade", description=__doc__)
    parser.add_argument("--version", action=_VersionAction,
                        help="print capgrade's version (and torch's) and exit")
    sub = parser.add_subparsers(dest="command", required=True)

    stub = sub.add_parser("build-stub", help="write the student stub from the reference")
    stub.add_argument("--reference", type=Path, default=REFERENCE)
    stub.add_argument("--out", type=Path, default=STUB)
    stub.add_argument("--check", action="store_true",
                      help="only report whether the stub is in sync (exit 1 when stale)")
    stub.set_defaults(func=_build_stub)

    check = sub.add_parser("check", help="run the checks on a submission")
    check.add_argument("path", nargs="?", type=Path,
                       help="the module to check (default: ./rnn_lstm_captioning.py if present, "
                            f"else {STUB})")
    check.add_argument("--only", metavar="NAME",
                       help="only checks whose id matches NAME (a pytest -k expression); "
                           "e.g. --only overfit runs the three overfit checks")
    check.add_argument("--group", action="append", default=[], metavar="PART",
                       help="only the checks of this part: rnn, embedding_loss, lstm, attention, "
                            "captioning, rules, overfit, submission_file, notebook (repeatable)")
    check.add_argument("--format", choices=["table", "json", "junit", "gradescope", "markdown"],
                       default="table")
    check.add_argument("--report", action="append", default=[], metavar="FORMAT=FILE",
                       help="also write the same result in another format to FILE "
                            "(e.g. junit=capgrade-junit.xml; repeatable)")
    check.add_argument("--all", action="store_true",
                       help="include the hidden checks (instructors: needs reference/expected) "
                           "and the slow end-to-end checks (overfitting, the loss file)")
    check.add_argument("--hidden-expected", type=Path, default=None,
                       help="hidden expected values (default: "
                       "reference/expected/hidden.safetensors)")
    check.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    check.add_argument("--timeout", type=float, default=None,
                       help="seconds one call into the student's code may take (default: 15)")
    check.add_argument("--loss-file", type=Path, default=None,
                       help="the hand-in's loss file (default: rnn_lstm_attention_submission.pt "
                            "next to the module)")
    check.add_argument("--notebook", type=Path, default=None,
                       help="the notebook the notebook checks execute (default: "
                            "rnn_lstm_captioning.ipynb next to the module)")
    check.add_argument("--notebook-out", type=Path, default=None,
                       help="keep the executed notebook, its HTML and report here (default: a "
                            "new temp dir)")
    check.add_argument("--verbose", action="store_true", help="show pytest's own output")
    check.set_defaults(func=_check)

    build = sub.add_parser("build", help="regenerate the stub and the expected values")
    build.add_argument("--reference", type=Path, default=REFERENCE)
    build.add_argument("--stub", type=Path, default=STUB)
    build.add_argument("--hidden-expected", type=Path,
                       default=Path("reference/expected/hidden.safetensors"))
    build.add_argument("--jobs", type=int, default=2,
                       help="mutated references fingerprinted side by side (default 2)")
    build.set_defaults(func=_build)

    mis = sub.add_parser("misconceptions", help="the known mistakes the checks can name, as a "
                                                "Markdown table (docs/misconceptions.md)")
    mis.set_defaults(func=_misconceptions)

    data = sub.add_parser("data", help="check the course's coco.pt, or make the synthetic set")
    data.add_argument("--coco", type=Path, default=None,
                      help="the course's coco.pt to validate (default: $CAPGRADE_COCO, else "
                           "the synthetic dataset)")
    data.add_argument("--n-train", type=int, default=2000, help="synthetic training images")
    data.add_argument("--n-val", type=int, default=200, help="synthetic validation images")
    data.add_argument("--seed", type=int, default=0, help="synthetic dataset seed")
    data.add_argument("--examples", type=int, default=3, help="captions to print")
    data.add_argument("-o", "--out", type=Path, default=None,
                      help="also save the data to this file")
    data.set_defaults(func=_data)

    nb = sub.add_parser("run-notebook", help="execute a notebook safely, cell by cell, in "
                        "grading mode; keep the executed copy, its HTML and a report")
    nb.add_argument("notebook", type=Path)
    nb.add_argument("--module", type=Path, default=None,
                    help="the rnn_lstm_captioning.py to run it with (default: the one next to "
                         "the notebook)")
    nb.add_argument("-o", "--out", type=Path, default=Path("capgrade-notebook"),
                    help="output folder (default: %(default)s)")
    nb.add_argument("--cell-timeout", type=float, default=300.0,
                    help="seconds one cell may run (default: %(default)s)")
    nb.add_argument("--budget", type=float, default=900.0,
                    help="seconds the whole notebook may run (default: %(default)s)")
    nb.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="set a parameter after the notebook's parameters cell (repeatable; "
                         "GRADING_MODE=True is set unless --as-is)")
    nb.add_argument("--as-is", action="store_true",
                    help="do not switch to grading mode (the notebook's own settings)")
    nb.add_argument("--no-html", action="store_true", help="skip the HTML export")
    nb.set_defaults(func=_run_notebook)

    grade = sub.add_parser("grade", help="grade a folder of submissions: gradebook, feedback, "
                           "plots; parallel and resumable")
    grade.add_argument("submissions", type=Path,
                       help="per-student folders, .zip files, or a Gradescope export")
    grade.add_argument("-o", "--out", type=Path, default=Path("capgrade-out"),
                       help="output folder, holding the results store (default: %(default)s)")
    grade.add_argument("--workers", type=int, default=None,
                       help="parallel gradings (default: the number of cores)")
    grade.add_argument("--regrade", action="append", default=[], metavar="ID",
                       help="grade this student again even if unchanged (repeatable; '*' = all)")
    grade.add_argument("--dask", metavar="ADDRESS", default=None,
                       help="run the gradings on this Dask scheduler (tcp://host:8786)")
    grade.add_argument("--public-only", action="store_true", help="leave out hidden checks")
    _add_grading_choices(grade)
    grade.add_argument("--device", default="cpu")
    grade.add_argument("--hidden-expected", type=Path, default=None)
    grade.add_argument("--warm", choices=["auto", "on", "off"], default="auto",
                       help="keep a sandboxed worker started ahead in each grading process "
                            "(auto: when fewer workers than cores; default: %(default)s)")
    grade.add_argument("--quiet", action="store_true", help="no progress bar")
    grade.add_argument("--pick", action="append", default=[], metavar="ID=WHERE",
                       help="a student with several copies: grade the one in WHERE (a folder "
                            "or zip, relative to the class folder: eve=eve/v2); without it the "
                            "newest copy is graded and the gradebook's copies column says so")
    grade.add_argument("--export", action="append", default=[], choices=("canvas", "moodle"),
                       help="also write OUT/LMS-import.csv, one total per student for the LMS's "
                            "gradebook import, and OUT/LMS-unmatched.txt (repeatable)")
    grade.add_argument("--roster", type=Path, default=None, metavar="ROSTER.csv",
                       help="the LMS's gradebook export to match students against (needed by "
                            "canvas; moodle without it writes capgrade's ids)")
    grade.add_argument("--assignment", default="RNN captioning", metavar="NAME",
                       help="the gradebook column (default: %(default)s); a roster column "
                            "'NAME (id)' is reused, so Canvas updates that assignment")
    grade.set_defaults(func=_grade)

    release = sub.add_parser("release", help="write the student bundle (stub, notebook, grader "
                             "wheel with public values, README, GitHub Classroom starter)")
    release.add_argument("-o", "--out", type=Path, default=Path("release"),
                         help="folder to write (default: %(default)s); must be empty")
    release.add_argument("--force", action="store_true", help="replace a non-empty folder")
    release.set_defaults(func=_release)

    gs = sub.add_parser("gradescope", help="write the Gradescope autograder zip (setup.sh, "
                        "run_autograder, the grader wheel, the hidden values)")
    gs.add_argument("-o", "--out", type=Path, default=Path("autograder.zip"),
                    help="the zip to write (default: %(default)s)")
    gs.add_argument("--hidden-expected", type=Path,
                    default=Path("reference/expected/hidden.safetensors"),
                    help="hidden expected values to ship (default: %(default)s)")
    _add_grading_choices(gs)
    gs.add_argument("--deadline", type=float, default=540.0,
                    help="seconds after which a submission's grading is stopped and reported "
                         "as such (default: %(default)s; keep it under the autograder timeout "
                         "set on Gradescope)")
    gs.add_argument("--trial", type=Path, default=None, metavar="SUBMISSION",
                    help="then run the bundle on this folder as Gradescope would, locally")
    gs.add_argument("--memory", default=None, metavar="SIZE",
                    help="with --trial: the container's memory, e.g. 768M (Gradescope's "
                         "default), 1536M, 4G; needs root and cgroups")
    gs.add_argument("--cpus", type=float, default=None,
                    help="with --trial: the container's CPUs, e.g. 0.5 (Gradescope's default)")
    gs.set_defaults(func=_gradescope)

    from grader.batch import similarity

    similarity.add_parser(sub)

    demo = sub.add_parser("demo", help="grade the bundled example class and print the gradebook")
    demo.add_argument("--reference", type=Path, default=REFERENCE)
    demo.add_argument("--stub", type=Path, default=STUB)
    demo.add_argument("-o", "--out", type=Path, default=Path("demo-out"),
                      help="where the examples and the reports go (default: %(default)s)")
    demo.add_argument("--workers", type=int, default=None,
                      help="parallel gradings (default: the number of cores)")
    demo.add_argument("--tour", action="store_true",
                      help="instead: the reference and the stub on the course's inputs")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
