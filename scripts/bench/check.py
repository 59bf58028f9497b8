"""Wall time of `capgrade check` on the reference (a benchmark, not a test).

Targets (issue 3): <= 5 s for the public checks, <= 15 s public + hidden, on a
2-core machine. Runs the real command line in a subprocess, as a user would.

    .venv/bin/python scripts/bench.py check [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def timed(args: list[str], cwd: Path = ROOT) -> float:
    """Wall time of ``capgrade ARGS`` run in ``cwd``; exits with its output if it fails."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "grader.cli", *args], cwd=cwd,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"capgrade {' '.join(args)} failed ({done.returncode}):\n{done.stdout}"
                 f"{done.stderr}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench.py check", description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    repeat = parser.parse_args(argv).repeat
    reference = "reference/rnn_lstm_captioning.py"
    # The reference has no hand-in loss file, so those two checks are left out.
    unit = "not overfit and not submission_file and not notebook"
    for label, args in [("public", ["check", reference, "--format", "json"]),
                        ("public + hidden", ["check", reference, "--all", "--only", unit,
                                             "--format", "json"]),
                        ("public + hidden + overfit", ["check", reference, "--all", "--only",
                                                       "not submission_file and not notebook",
                                                       "--format",
                                                       "json"])]:
        times = [timed(args) for _ in range(repeat)]
        print(f"capgrade check ({label}): median {statistics.median(times):.2f} s, "
              f"min {min(times):.2f} s over {repeat} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
