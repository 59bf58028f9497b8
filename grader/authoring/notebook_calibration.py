"""Calibrate REPRODUCE_RTOL of grader/checks/test_notebook.py.

Measures, on the reference module, how far apart loss histories of the
notebook's grading-mode training can be when nothing is wrong (the grader's
re-run twice; with 1 and 2 threads; the notebook's own execution against the
re-run), and how far the simplest forgeries land (rounded, rescaled, another
seed). Prints a Markdown table for grader/checks/notebook_calibration.md.

Run: ``python -m grader.authoring.notebook_calibration`` (about 3 minutes).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
from pathlib import Path

from grader.settings import WORKER_THREADS

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "reference" / "rnn_lstm_captioning.py"
NOTEBOOK = ROOT / "notebooks" / "rnn_lstm_captioning.ipynb"


def max_rel(a: dict[str, list[float]], b: dict[str, list[float]]) -> float:
    return max(abs(x - y) / max(1.0, abs(y)) for k in b for x, y in zip(a[k], b[k], strict=True))


def rerun(threads: str, seed: int | None = None) -> dict[str, list[float]]:
    from grader.checks import test_notebook as tn
    from grader.harness.client import Submission

    os.environ[WORKER_THREADS] = threads
    # Another seed: the same code trained from another initialisation.
    run = tn.GRADING if seed is None else dataclasses.replace(tn.GRADING, seed=seed)
    with Submission(REFERENCE, timeout=300) as sub:
        return tn.grader_losses(sub, run=run)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter
                            ).parse_args(argv)
    from grader.course import lossfile
    from grader.notebook import runner as notebook_runner
    from grader.worker.lossfile_reader import load_loss_file

    base = rerun("1")
    rows = [("grader re-run, again (1 thread)", max_rel(rerun("1"), base)),
            ("grader re-run with 2 threads", max_rel(rerun("2"), base))]
    os.environ[WORKER_THREADS] = "1"
    work = Path(tempfile.mkdtemp(prefix="capgrade-calibrate-"))
    try:
        shutil.copy(REFERENCE, work / REFERENCE.name)
        shutil.copy(NOTEBOOK, work / NOTEBOOK.name)
        report = notebook_runner.run_notebook(work / NOTEBOOK.name, out_dir=work / "out",
                                              html=False)
        saved = report.file(lossfile.FILENAME)
        if saved is None:
            raise SystemExit(f"the notebook saved no {lossfile.FILENAME}")
        produced = load_loss_file(saved)
        rows.append((f"notebook execution ({report.duration:.0f} s) vs grader re-run",
                     max_rel(produced, base)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rounded = {k: [round(x, 3) for x in v] for k, v in base.items()}
    scaled = {k: [0.99 * x for x in v] for k, v in base.items()}
    rows += [("forgery: rounded to 3 decimals", max_rel(rounded, base)),
             ("forgery: scaled by 0.99", max_rel(scaled, base)),
             ("forgery: trained from another seed", max_rel(rerun("1", seed=1), base))]
    print("| comparison | max relative difference |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value:.3g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
