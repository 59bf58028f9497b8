"""Record every verdict the grader gives on its corpus, or compare with a recording.

A redesign must not change a grade. This grades, through the CLI only (so it
runs unchanged on old and new code), every submission the project knows:

- the reference, the alternative-style solution, the independent student-style
  solutions (tests/solutions/students), the correct variants, the course-style
  starter and the generated stub;
- every single-bug variant of tests/variants.py, and the student-style buggy set
  (tests/solutions/buggy);
- every hostile case of tests/hostile.py (its three checks);
- the demo class (``capgrade demo``: batch grading, its gradebook).

Each gets public + hidden checks and the overfit trainings (``--all`` without the
hand-in checks, which need a notebook and a loss file; ``tests/test_notebook.py``
covers those). The recording is ``{submission: {check: [status, score]}}``.

    python scripts/verdicts.py record out.json [--jobs 2] [--root DIR] [--no-overfit]
                                  [--only-overfit] [--match REGEX]
    python scripts/verdicts.py compare base.json new.json

``--root`` grades with another checkout's code (e.g. a ``git worktree`` of an older
commit) and its corpus; ``--no-overfit`` leaves out the three overfit trainings
(for changes that cannot touch them; say so when you report the comparison);
``--only-overfit`` grades only those, ``--match`` only the submissions named so.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ALL = "not submission_file and not notebook"
#: Gradebook columns that differ from run to run whatever the verdicts (time, temp folder).
VOLATILE = {"seconds", "source"}
TIMEOUTS: dict[str, float | None] = {}
SKIP_OVERFIT = False
ONLY_OVERFIT = False
MATCH = ""


def corpus(folder: Path) -> list[tuple[str, Path, str]]:
    """(name, module path, --only expression) for every submission."""
    from tests import correct_variants, hostile, variants  # from ROOT (--root)

    items: list[tuple[str, Path, str]] = []

    def put(name: str, text: str, only: str = ALL) -> None:
        path = folder / name / "rnn_lstm_captioning.py"
        path.parent.mkdir(parents=True)
        path.write_text(text)
        items.append((name, path, only))

    reference = variants.reference_source()
    put("reference", reference)
    put("stub", (ROOT / "student" / "rnn_lstm_captioning.py").read_text())
    put("starter", (ROOT / "tests" / "starter" / "rnn_lstm_captioning.py").read_text())
    put("alt_style", (ROOT / "tests" / "solutions" / "alt_style_rnn_lstm_captioning.py")
        .read_text())
    for path in sorted((ROOT / "tests" / "solutions" / "students").glob("s*.py")):
        put(f"student/{path.stem}", path.read_text())
    for case in correct_variants.CORRECT:
        put(f"correct/{case.name}", case.apply(reference))
    put("correct/mutate_arguments", reference + correct_variants.MUTATE_ARGUMENTS)
    for bug in variants.VARIANTS:
        put(f"bug/{bug.name}", bug.apply(reference))
    for name, text in _buggy():
        put(f"buggy/{name}", text)
    fill = {"port": "9", "secret_dir": str(ROOT / "reference"),
            "out_dir": str(folder / "hostile-out"), "marker_name": "hostile-marker"}
    for case in hostile.CASES:
        put(f"hostile/{case.name}", case.source(**fill), hostile.ONLY)
        TIMEOUTS[f"hostile/{case.name}"] = case.timeout
    return items


def _buggy() -> list[tuple[str, str]]:
    """The student-style buggy set: edits on their bases, or whole files in older checkouts."""
    try:
        from tests import buggy
    except ImportError:
        folder = ROOT / "tests" / "solutions" / "buggy"
        return [(p.stem, p.read_text()) for p in sorted(folder.glob("b*.py"))]
    return [(name, buggy.source(name)) for name in buggy.names()]


def grade(name: str, path: Path, only: str) -> dict[str, list]:
    timeout = ["--timeout", str(TIMEOUTS[name])] if TIMEOUTS.get(name) else []
    if ONLY_OVERFIT:
        only = "overfit"
    elif SKIP_OVERFIT and only == ALL:
        only = f"({only}) and not overfit"
    run = subprocess.run(
        [sys.executable, "-m", "grader.cli", "check", str(path), "--all", "--only", only,
         "--format", "json", *timeout], capture_output=True, text=True, cwd=ROOT,
        timeout=1800)
    try:
        result = json.loads(run.stdout)
    except json.JSONDecodeError:
        return {"__cli__": [f"exit {run.returncode}", run.stderr[-300:]]}
    return {c["id"]: [c["status"], c["score"]] for c in result["checks"]}


def demo(folder: Path) -> dict[str, dict[str, list]]:
    out = folder / "demo"
    subprocess.run([sys.executable, "-m", "grader.cli", "demo", "-o", str(out)], cwd=ROOT,
                   capture_output=True, text=True, timeout=3600)
    with open(out / "gradebook.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {f"demo/{row['student']}": {k: [v, None] for k, v in row.items() if k != "student"}
            for row in rows}


def record(out: Path, jobs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="capgrade-verdicts-") as tmp:
        items = [i for i in corpus(Path(tmp)) if re.search(MATCH, i[0])
                 and not (ONLY_OVERFIT and i[2] != ALL)]
        verdicts: dict[str, dict[str, list]] = {}
        with ThreadPoolExecutor(jobs) as pool:
            for (name, _, _), result in zip(items, pool.map(lambda i: grade(*i), items),
                                            strict=True):
                verdicts[name] = result
                print(f"{name}: {sum(v[0] == 'passed' for v in result.values())}/"
                      f"{len(result)} passed", flush=True)
        if not ONLY_OVERFIT and MATCH == "":
            verdicts.update(demo(Path(tmp)))
    out.write_text(json.dumps(verdicts, indent=1, sort_keys=True))
    print(f"wrote {out}: {len(verdicts)} submissions")


def compare(base: Path, new: Path) -> int:
    old, now = json.loads(base.read_text()), json.loads(new.read_text())
    differences = []
    for name in sorted(set(old) | set(now)):
        a, b = old.get(name, {}), now.get(name, {})
        for check in sorted((set(a) | set(b)) - VOLATILE):
            if a.get(check) != b.get(check):
                differences.append(f"{name} {check}: {a.get(check)} -> {b.get(check)}")
    print("\n".join(differences) or f"identical: {len(old)} submissions, "
          f"{sum(len(v) for v in old.values())} verdicts")
    return 1 if differences else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("out", type=Path)
    rec.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    rec.add_argument("--root", type=Path, default=None,
                     help="grade with this checkout's code and corpus (default: this one)")
    rec.add_argument("--no-overfit", action="store_true",
                     help="leave out the overfit trainings")
    rec.add_argument("--only-overfit", action="store_true",
                     help="only the overfit trainings (of the submissions graded with --all)")
    rec.add_argument("--match", default="", metavar="REGEX",
                     help="only the submissions whose name matches (no demo class)")
    cmp_ = sub.add_parser("compare")
    cmp_.add_argument("base", type=Path)
    cmp_.add_argument("new", type=Path)
    args = parser.parse_args()
    if args.command == "record":
        global ROOT, SKIP_OVERFIT, ONLY_OVERFIT, MATCH  # noqa: PLW0603 CLI settings, set once
        if args.root is not None:
            ROOT = args.root.resolve()
            sys.path.insert(0, str(ROOT))
        SKIP_OVERFIT, ONLY_OVERFIT, MATCH = args.no_overfit, args.only_overfit, args.match
        record(args.out.resolve(), args.jobs)
        return 0
    return compare(args.base, args.new)


if __name__ == "__main__":
    raise SystemExit(main())
