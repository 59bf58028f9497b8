"""Renderings of one ``SubmissionResult``: terminal table, JSON, Gradescope, JUnit, CSV row.

Every format reads the same schema (``grader.results``), so a verdict cannot differ between
what a student sees in the terminal and what Gradescope or CI records. Text that came from
student code (messages, captured output) is cleaned of terminal escapes and control
characters before it reaches any format, so a submission cannot garble a terminal or
produce an XML file that does not parse.

Each format lives in a module of its own (``text``: cleaning and totals; ``table``;
``gradescope``; ``junit``; ``gradebook``: the CSV row and Markdown); this module names
them all, renders JSON, and ``write(result, fmt, stream)`` is what the CLI calls;
``RENDERERS`` maps its ``--format`` names to writers. Nothing here reads the rubric
(``grader.rubric`` does).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TextIO

from rich.console import Console

from grader.results import SubmissionResult
from grader.results.gradebook import (  # noqa: F401 - the renderers, by one name
    gradebook_cell,
    render_csv_row,
    render_markdown,
    total_cell,
)
from grader.results.gradescope import (  # noqa: F401
    GRADESCOPE_VISIBILITY,
    HIDDEN_CHOICES,
    LIMITS_TEST,
    gradescope_dict,
    hidden_checks_visibility,
    limits_note,
    ran_out_words,
    render_gradescope,
)
from grader.results.junit import render_junit
from grader.results.table import (  # noqa: F401
    COMPACT_MESSAGE_LINES,
    STATUS_STYLES,
    WEAKENED_LAYERS,
    OneLine,
    build_table,
    render_table,
)
from grader.results.text import REVIEW_HEADLINE, clean, first_line, review_note  # noqa: F401


def render_json(result: SubmissionResult) -> str:
    """The schema itself, sorted keys: what batch grading stores and reads back with from_dict.

    A measured error of NaN is written as ``NaN`` (Python's JSON extension) so that it
    round-trips; that is the one place this output is not strict JSON.
    """
    return json.dumps(result.to_dict(), indent=2, sort_keys=True, default=str)


# --------------------------------------------------------------------------- writers


def _write_table(result: SubmissionResult, stream: TextIO, verbose: bool = False) -> None:
    render_table(result, console=Console(file=stream), verbose=verbose)


def _writer(render: Callable[[SubmissionResult], str]) -> Callable[[SubmissionResult, TextIO],
                                                                   None]:
    def write_text(result: SubmissionResult, stream: TextIO) -> None:
        stream.write(render(result) + "\n")

    write_text.__doc__ = f"Write {render.__name__}(result) and a newline to the stream."
    return write_text


#: CLI --format name -> writer(result, stream).
RENDERERS: dict[str, Callable[[SubmissionResult, TextIO], None]] = {
    "table": _write_table,
    "json": _writer(render_json),
    "gradescope": _writer(render_gradescope),
    "junit": _writer(render_junit),
    "markdown": _writer(render_markdown),
}
FORMATS = tuple(RENDERERS)


def write(result: SubmissionResult, fmt: str, stream: TextIO | None = None, *,
          verbose: bool = False) -> None:
    """Render ``result`` as ``fmt`` onto ``stream`` (stdout by default); the CLI's one call.

    ``verbose``: the table lists every isolation layer (other formats always record them).
    """
    try:
        writer = RENDERERS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(RENDERERS)}") from None
    stream = stream if stream is not None else sys.stdout
    if fmt == "table":
        _write_table(result, stream, verbose=verbose)
    else:
        writer(result, stream)
