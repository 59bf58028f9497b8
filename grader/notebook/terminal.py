"""The notebook runner's report (``grader.notebook.runner.NotebookReport``) on a terminal."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from rich.console import Console, JustifyMethod
from rich.table import Table
from rich.text import Text

from grader.results.text import clean


def notebook_table(report: Any, stream: TextIO | None = None) -> None:
    """A grader.notebook.runner.NotebookReport as a per-cell table and where its files are."""
    console = Console(file=stream if stream is not None else sys.stdout)
    table = Table(title=Text(str(report.notebook)), title_justify="left")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("cell", "right"), ("status", "left"), ("s", "right"), ("first line", "left"),
        ("message", "left"))
    for name, justify in columns:
        table.add_column(name, justify=justify, overflow="fold")
    styles = {"ok": "green", "skipped": "yellow"}
    for c in report.cells:
        message = c.message + (" [output truncated]" if c.truncated else "")
        table.add_row(str(c.index), Text(c.status, style=styles.get(c.status, "red")),
                      f"{c.duration:.1f}", Text(clean(c.first_line)), Text(clean(message)))
    console.print(table)
    console.print(Text(report.summary()))
    for label, path in (("executed copy", report.executed_path), ("HTML", report.html_path),
                        ("files it wrote", ", ".join(report.produced) or None)):
        if path:
            console.print(Text(f"{label}: {path}"))
