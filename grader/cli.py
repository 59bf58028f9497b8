"""The `capgrade` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grader import usage
from grader.authoring.build import STUB
from grader.harness.check_command import submission as _submission  # noqa: F401  (tests)
from grader.usage import UsageError


def _build_stub(args: argparse.Namespace) -> int:
    from grader.authoring.build import build_stub_command

    return build_stub_command(args.reference, args.out, check=args.check)


def _build(args: argparse.Namespace) -> int:
    from grader.authoring import build

    paths = build.Paths(reference=args.reference, stub=args.stub, hidden=args.hidden_expected,
                        jobs=args.jobs)
    return build.build(paths, check=args.check, only=tuple(args.only))


def _misconceptions(args: argparse.Namespace) -> int:
    from grader.diagnosis import catalogue

    print(catalogue.markdown(), end="")
    return 0


def _demo(args: argparse.Namespace) -> int:
    for path in (args.reference, args.stub):
        if not path.is_file():
            raise UsageError(f"not found: {path} (run from the project root)")
    if args.tour:
        from grader.authoring.demo import run_demo

        return run_demo(args.reference, args.stub)
    try:
        from grader.authoring.examples import grade_class
    except ImportError:  # a student's install: the example class is instructors' material
        raise UsageError("the example class ships with the instructors' checkout only") from None
    return grade_class(args.reference, args.stub, args.out, workers=args.workers)


def _release(args: argparse.Namespace) -> int:
    from grader.authoring.release import ReleaseError, build_release

    try:
        files = build_release(args.out, force=args.force)
    except ReleaseError as exc:
        raise UsageError(str(exc), code=1 if exc.leak else 2) from None
    for path in files:
        print(f"  {path.relative_to(args.out)}  ({path.stat().st_size:,} bytes)")
    print(f"student release in {args.out}: audited, no solution line and no hidden expected "
          "value in it (the wheel's files included)")
    return 0


def _gradescope(args: argparse.Namespace) -> int:
    from grader.harness.expected import hidden_values_path
    from grader.integrations.gradescope_trial import build_and_try

    return build_and_try(args.out, hidden_values_path(args.hidden_expected),
                         slow=not args.no_slow, notebook=not args.no_notebook,
                         timeout=args.timeout, deadline=args.deadline, trial=args.trial,
                         memory=args.memory, cpus=args.cpus)


def _check(args: argparse.Namespace) -> int:
    from grader.harness.check_command import check

    return check(args)


def _grade(args: argparse.Namespace) -> int:
    from grader.batch.grade_command import grade

    return grade(args)


def _run_notebook(args: argparse.Namespace) -> int:
    from grader.notebook.run_command import run

    return run(args)


class _VersionAction(argparse.Action):
    """``--version``: the text is built only when asked (it reads package metadata)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from grader import version_text

        print(version_text())
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    from grader.authoring.build import NAMES
    from grader.course.settings import CELL_TIMEOUT, NOTEBOOK_BUDGET
    from grader.integrations.gradescope import DEADLINE
    from grader.integrations.lms import DEFAULT_ASSIGNMENT, EXPORTS
    from grader.results.render import FORMATS

    parser = argparse.ArgumentParser(prog="capgrade", description=__doc__)
    parser.add_argument("--version", action=_VersionAction,
                        help="print capgrade's version (and torch's) and exit")
    sub = parser.add_subparsers(dest="command", required=True)

    stub = sub.add_parser("build-stub", help="write the student stub from the reference "
                          "(capgrade build --only stub)")
    usage.add_paths(stub, "reference")
    stub.add_argument("--out", type=Path, default=STUB, help="the stub (default: %(default)s)")
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
    check.add_argument("--format", choices=FORMATS, default="table",
                       help="how to print the result (default: %(default)s)")
    check.add_argument("--report", action="append", default=[], metavar="FORMAT=FILE",
                       help="also write the same result in another format to FILE "
                            "(e.g. junit=capgrade-junit.xml; repeatable)")
    check.add_argument("--all", action="store_true",
                       help="include the hidden checks (instructors: needs reference/expected) "
                           "and the slow end-to-end checks (overfitting, the loss file)")
    usage.add_paths(check, "hidden")
    check.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    usage.add_timeout(check)
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

    build = sub.add_parser("build", help="regenerate every committed generated file: the stub, "
                           "the notebook, the misconceptions table, the expected values")
    usage.add_paths(build, "reference", "stub", "hidden")
    build.add_argument("--jobs", type=int, default=2,
                       help="mutated references fingerprinted side by side (default %(default)s)")
    build.add_argument("--check", action="store_true",
                       help="write nothing: list what is stale (exit 1 when something is)")
    build.add_argument("--only", action="append", default=[], choices=NAMES,
                       help="only this generated file (repeatable; default: all)")
    build.set_defaults(func=_build)

    mis = sub.add_parser("misconceptions", help="the known mistakes the checks can name, as a "
                                                "Markdown table (docs/misconceptions.md)")
    mis.set_defaults(func=_misconceptions)

    from grader.course import data_command

    data_command.add_parser(sub)

    nb = sub.add_parser("run-notebook", help="execute a notebook safely, cell by cell, in "
                        "grading mode; keep the executed copy, its HTML and a report")
    nb.add_argument("notebook", type=Path)
    nb.add_argument("--module", type=Path, default=None,
                    help="the rnn_lstm_captioning.py to run it with (default: the one next to "
                         "the notebook)")
    usage.add_out(nb, "capgrade-notebook", "output folder")
    nb.add_argument("--cell-timeout", type=float, default=CELL_TIMEOUT,
                    help="seconds one cell may run (default: %(default)s)")
    nb.add_argument("--budget", type=float, default=NOTEBOOK_BUDGET,
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
    usage.add_out(grade, "capgrade-out", "output folder, holding the results store")
    usage.add_workers(grade)
    grade.add_argument("--regrade", action="append", default=[], metavar="ID",
                       help="grade this student again even if unchanged (repeatable; '*' = all)")
    grade.add_argument("--dask", metavar="ADDRESS", default=None,
                       help="run the gradings on this Dask scheduler (tcp://host:8786)")
    grade.add_argument("--public-only", action="store_true", help="leave out hidden checks")
    usage.add_grading_choices(grade)
    grade.add_argument("--device", default="cpu")
    usage.add_paths(grade, "hidden")
    grade.add_argument("--warm", choices=["auto", "on", "off"], default="auto",
                       help="keep a sandboxed worker started ahead in each grading process "
                            "(auto: when fewer workers than cores; default: %(default)s)")
    grade.add_argument("--quiet", action="store_true", help="no progress bar")
    grade.add_argument("--pick", action="append", default=[], metavar="ID=WHERE",
                       help="a student with several copies: grade the one in WHERE (a folder "
                            "or zip, relative to the class folder: eve=eve/v2); without it the "
                            "newest copy is graded and the gradebook's copies column says so")
    grade.add_argument("--export", action="append", default=[], choices=EXPORTS,
                       help="also write OUT/LMS-import.csv, one total per student for the LMS's "
                            "gradebook import, and OUT/LMS-unmatched.txt (repeatable)")
    grade.add_argument("--roster", type=Path, default=None, metavar="ROSTER.csv",
                       help="the LMS's gradebook export to match students against (needed by "
                            "canvas; moodle without it writes capgrade's ids)")
    grade.add_argument("--assignment", default=DEFAULT_ASSIGNMENT, metavar="NAME",
                       help="the gradebook column (default: %(default)s); a roster column "
                            "'NAME (id)' is reused, so Canvas updates that assignment")
    grade.set_defaults(func=_grade)

    release = sub.add_parser("release", help="write the student bundle (stub, notebook, grader "
                             "wheel with public values, README, GitHub Classroom starter)")
    usage.add_out(release, "release", "folder to write; must be empty")
    release.add_argument("--force", action="store_true", help="replace a non-empty folder")
    release.set_defaults(func=_release)

    gs = sub.add_parser("gradescope", help="write the Gradescope autograder zip (setup.sh, "
                        "run_autograder, the grader wheel, the hidden values)")
    usage.add_out(gs, "autograder.zip", "the zip to write")
    usage.add_paths(gs, "hidden")
    usage.add_grading_choices(gs)
    gs.add_argument("--deadline", type=float, default=DEADLINE,
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
    usage.add_paths(demo, "reference", "stub")
    usage.add_out(demo, "demo-out", "where the examples and the reports go")
    usage.add_workers(demo)
    demo.add_argument("--tour", action="store_true",
                      help="instead: the reference and the stub on the course's inputs")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:  # the caller's mistake: said once, exit 2 (or the error's code)
        for message in exc.messages:
            print(f"capgrade {exc.command or args.command}: {message}", file=sys.stderr)
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
