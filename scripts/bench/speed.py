"""How fast checks and grading are, old code against new (a benchmark, not a test).

Runs the real entry points with the code of two checkouts, alternating old and
new so both see the same machine load: ``--old`` (a commit, checked out in a
temporary git worktree and run with this venv's Python) and this working tree.

- ``cli``: ``capgrade check SUB`` (public checks), a new process each time: cold.
- ``notebook``: one Python session calling ``grader.check()`` (every public
  check) and ``grader.check("rnn_step_forward")`` again and again, as a
  notebook's kernel does: the first call, then the median of the later ones.
- ``overfit``: ``capgrade check SUB --only overfit``: each training check's time.
- ``otter``: the work of otter's test for this assignment (the public checks and
  the rnn overfit): ``capgrade check SUB --only "public or (overfit and rnn)"``.
- ``batch``: ``capgrade grade`` of N submissions (reference, alternative style,
  the student-style and buggy solutions of tests/solutions), public + hidden +
  overfit, ``--no-notebook``, ``--workers`` as given: wall time per submission.

    .venv/bin/python scripts/bench.py speed --old 0f6d0c9 [--repeat 3] [--batch 20]
        [--only cli,notebook,overfit,otter,batch] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests import buggy  # the buggy solutions are stored as edits

ROOT = Path(__file__).resolve().parents[2]

REFERENCE = ROOT / "reference" / "rnn_lstm_captioning.py"

SESSION = """
import contextlib, io, json, sys, time
import grader
path, calls = sys.argv[1], int(sys.argv[2])
times = {"all": [], "one": []}
for i in range(calls):
    for key, only in (("all", None), ("one", "rnn_step_forward")):
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            result = grader.check(only, path=path)
        times[key].append(time.perf_counter() - start)
        assert result.score == result.max_score, (key, result.score)
print(json.dumps(times))
"""


def _run(cwd: Path, *args: str) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(cwd)})
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 1):
        sys.exit(f"{args} failed in {cwd} ({done.returncode}):\n{done.stderr[-2000:]}")
    return elapsed, done.stdout


def cli(cwd: Path, sub: Path) -> dict[str, float]:
    wall, out = _run(cwd, "-m", "grader.cli", "check", str(sub), "--format", "json")
    assert json.loads(out)["score"] == json.loads(out)["max_score"]
    return {"cli public (s)": wall}


def notebook(cwd: Path, sub: Path, calls: int = 4) -> dict[str, float]:
    _, out = _run(cwd, "-c", SESSION, str(sub), str(calls))
    times = json.loads(out)
    return {"notebook check() first (s)": times["all"][0],
            "notebook check() later (s)": statistics.median(times["all"][1:]),
            "notebook check('rnn_step_forward') later (s)": statistics.median(times["one"])}


def overfit(cwd: Path, sub: Path) -> dict[str, float]:
    wall, out = _run(cwd, "-m", "grader.cli", "check", str(sub), "--only", "overfit",
                     "--format", "json")
    checks = {c["id"]: c for c in json.loads(out)["checks"]}
    assert all(c["status"] == "passed" for c in checks.values()), checks
    return {"--only overfit (s)": wall,
            **{f"{cid} (s)": c["duration"] for cid, c in sorted(checks.items())}}


def otter(cwd: Path, sub: Path) -> dict[str, float]:
    wall, _ = _run(cwd, "-m", "grader.cli", "check", str(sub), "--only",
                   "public or (overfit and rnn)", "--format", "json")
    return {"otter's work: public + rnn overfit (s)": wall}


def batch_corpus(folder: Path, count: int) -> Path:
    files = [REFERENCE, ROOT / "tests" / "solutions" / "alt_style_rnn_lstm_captioning.py",
             *sorted((ROOT / "tests" / "solutions" / "students").glob("s*.py"))]
    sources = [(p.stem, p.read_text(encoding="utf-8")) for p in files]
    sources += [(name, buggy.source(name)) for name in buggy.names()]
    sources = sources[:count]
    if len(sources) < count:
        sys.exit(f"only {len(sources)} submissions to batch-grade")
    for stem, text in sources:
        student = folder / stem
        student.mkdir(parents=True)
        (student / "rnn_lstm_captioning.py").write_text(text, encoding="utf-8")
    return folder


def batch(cwd: Path, subs: Path, count: int, workers: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="capgrade-bench-out-") as out:
        wall, _ = _run(cwd, "-m", "grader.cli", "grade", str(subs), "-o", out, "--no-notebook",
                       "--workers", str(workers), "--quiet")
    return {f"batch of {count}, per submission (s)": wall / count}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench.py speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="the commit to compare with")
    parser.add_argument("--submission", type=Path, default=REFERENCE)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=20, help="submissions in the batch")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--only", default="cli,notebook,overfit,otter,batch")
    parser.add_argument("--json", type=Path, default=None, help="also write every time here")
    args = parser.parse_args(argv)
    wanted = set(args.only.split(","))
    sub = args.submission.resolve()
    times: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}

    def note(label: str, found: dict[str, float]) -> None:
        for key, value in found.items():
            times[label].setdefault(key, []).append(value)
        print(label, {k: round(v, 2) for k, v in found.items()}, flush=True)

    with tempfile.TemporaryDirectory(prefix="capgrade-bench-") as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), args.old], cwd=ROOT,
                       check=True, capture_output=True)
        try:
            sides = (("old", old), ("new", ROOT))
            for _ in range(args.repeat):
                for label, cwd in sides:
                    if "cli" in wanted:
                        note(label, cli(cwd, sub))
                    if "otter" in wanted:
                        note(label, otter(cwd, sub))
                    if "overfit" in wanted:
                        note(label, overfit(cwd, sub))
                    if "notebook" in wanted:
                        note(label, notebook(cwd, sub))
            if "batch" in wanted:
                subs = batch_corpus(Path(tmp) / "class", args.batch)
                for label, cwd in sides:
                    note(label, batch(cwd, subs, args.batch, args.workers))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT,
                           check=False, capture_output=True)
    if args.json:
        args.json.write_text(json.dumps(times, indent=1))
    print(f"\n| measure (median) | old ({args.old}) | new | speed-up |")
    print("|---|---|---|---|")
    for key in times["new"]:
        if key in times["old"]:
            o, n = statistics.median(times["old"][key]), statistics.median(times["new"][key])
            print(f"| {key} | {o:.2f} | {n:.2f} | {o / n:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
