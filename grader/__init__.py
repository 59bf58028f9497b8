"""capgrade: an autograder for the RNN / LSTM / attention-LSTM captioning assignment."""

from __future__ import annotations

from grader.contract import MODULE_FILE

__version__ = "0.1.0"


def check(only: str | None = None, path: str = MODULE_FILE, **options):
    """Notebook helper: run the public checks (``only``: a -k expression) and show a compact table.

    ``options`` are ``grader.harness.request.GradingRequest`` fields. Returns the
    SubmissionResult so a cell can inspect it.
    """
    from pathlib import Path

    from grader.harness.engine import grade
    from grader.harness.request import GradingRequest
    from grader.results.render import render_table

    result = grade(GradingRequest(submission=Path(path), only=only, **options))
    if result.status != "graded":
        print(f"capgrade: {result.message}")
    render_table(result, compact=True)
    return result
