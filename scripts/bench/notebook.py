"""Wall time of executing the student notebook with the reference, in grading mode.

Target (issue 5): <= 3 minutes on the 2-core machine. Runs the real command
line (`capgrade run-notebook`) in a subprocess, as an instructor would, and
then the three notebook checks (`capgrade check --only notebook`), which add
the grader's own re-run of the notebook's training.

    .venv/bin/python scripts/bench.py notebook [--repeat 1]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from scripts.bench.check import timed

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench.py notebook", description=__doc__)
    parser.add_argument("--repeat", type=int, default=1)
    repeat = parser.parse_args(argv).repeat
    work = Path(tempfile.mkdtemp(prefix="capgrade-bench-"))
    try:
        shutil.copy(ROOT / "reference" / "rnn_lstm_captioning.py", work)
        shutil.copy(ROOT / "notebooks" / "rnn_lstm_captioning.ipynb", work)
        for label, args in [
            ("capgrade run-notebook (grading mode)",
             ["run-notebook", "rnn_lstm_captioning.ipynb", "-o", "out"]),
            ("capgrade check --only notebook (run + re-run)",
             ["check", "rnn_lstm_captioning.py", "--only", "notebook"]),
        ]:
            times = [timed(args, work) for _ in range(repeat)]
            print(f"{label}: median {statistics.median(times):.1f} s over {repeat} "
                  f"(all: {', '.join(f'{t:.1f}' for t in times)})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
