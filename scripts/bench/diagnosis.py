"""The time diagnosis adds to `capgrade check --all` (a benchmark, not a test).

Runs the real command line on the same submissions with the code of two commits,
alternating old and new so that both see the same machine load: ``--old`` (a
commit before the misconception catalogue; checked out in a temporary git
worktree, run with this venv's Python) and the working tree. Prints the median
wall time of each, and their difference. A SUBMISSION is a file, or the name of a
buggy solution (tests/solutions/buggy/manifest.toml, stored as edits: written to a
temporary folder).

    .venv/bin/python scripts/bench.py diagnosis --old e45e82b --repeat 3 [SUBMISSION ...]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests import buggy

ROOT = Path(__file__).resolve().parents[2]

DEFAULT = ["reference/rnn_lstm_captioning.py", "b09_gates_ifgo", "b15_g_sigmoid_loss_sum"]


def submission(arg: str, folder: Path) -> Path:
    """The file to check: a buggy solution's name (or its old path) is written to folder."""
    name = arg.removeprefix("tests/solutions/buggy/").removesuffix(".py")
    if name in buggy.names():
        return buggy.write(name, folder)
    return (ROOT / arg).resolve()


def timed(cwd: Path, submission: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "grader.cli", "check", str(submission), "--all",
                           "--format", "json"], cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: some check failed, as expected for buggy code
        sys.exit(f"capgrade check failed in {cwd} ({done.returncode}):\n{done.stderr[-2000:]}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench.py diagnosis", description=__doc__)
    parser.add_argument("submissions", nargs="*", default=DEFAULT)
    parser.add_argument("--old", required=True, help="the commit to compare with")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="capgrade-old-") as tmp:
        subs = [submission(s, Path(tmp)) for s in args.submissions]
        old = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), args.old], cwd=ROOT,
                       check=True, capture_output=True)
        try:
            times: dict[tuple[str, str], list[float]] = {}
            for _ in range(args.repeat):
                for sub in subs:
                    for label, cwd in (("old", old), ("new", ROOT)):
                        times.setdefault((label, sub.name), []).append(timed(cwd, sub))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT,
                           check=False, capture_output=True)
    print(f"| submission | old ({args.old}) median s | new median s | added s |")
    print("|---|---|---|---|")
    for sub in subs:
        o = statistics.median(times[("old", sub.name)])
        n = statistics.median(times[("new", sub.name)])
        print(f"| {sub.name} | {o:.1f} | {n:.1f} | {n - o:+.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
