"""What one notebook run found (``CellRun``, ``NotebookReport``), and its text cleaned.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from grader.results.sanitize import LINE_CAP, MESSAGE_CAP, sanitize, student_text


@dataclass
class CellRun:
    """What happened to one code cell (``index`` counts all cells, from 0)."""

    index: int
    status: str  # ok | error | timeout | kernel-died | skipped
    message: str = ""
    duration: float = 0.0
    output_chars: int = 0
    truncated: bool = False
    first_line: str = ""
    #: The grading machine ran out of this ("memory", "time") during the cell: not the
    #: student's failure, the notebook must be run again on a bigger machine.
    limit: str = ""


@dataclass
class NotebookReport:
    """The outcome of one execution; ``status`` is ``executed`` or why nothing ran."""

    notebook: str
    status: str = "executed"  # executed | missing-file | invalid-notebook | kernel-failed
    message: str = ""
    cells: list[CellRun] = field(default_factory=list)
    duration: float = 0.0
    kernel_restarts: int = 0
    parameters: dict[str, Any] = field(default_factory=dict)
    produced: list[str] = field(default_factory=list)  # files the notebook wrote
    out_dir: str | None = None
    executed_path: str | None = None
    html_path: str | None = None
    isolation: list[str] = field(default_factory=list)
    kernel_pids: list[int] = field(default_factory=list)  # every kernel started, all killed

    @property
    def failures(self) -> list[CellRun]:
        return [c for c in self.cells if c.status != "ok"]

    @property
    def limits(self) -> list[CellRun]:
        """Cells that failed because the grading machine ran out of memory or CPU time."""
        return [c for c in self.cells if c.limit]

    @property
    def clean(self) -> bool:
        return self.status == "executed" and not self.failures

    def file(self, name: str) -> Path | None:
        """A file the notebook produced, as copied to ``out_dir``."""
        if self.out_dir is None or name not in self.produced:
            return None
        path = Path(self.out_dir) / "produced" / name
        return path if path.is_file() else None

    def summary(self) -> str:
        if self.status != "executed":
            return f"{self.status}: {self.message}"
        ok = sum(c.status == "ok" for c in self.cells)
        text = f"{ok}/{len(self.cells)} code cells ran cleanly in {self.duration:.1f} s"
        if self.kernel_restarts:
            text += f"; kernel replaced {self.kernel_restarts}x"
        return text

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _safe_name(name: str) -> str:
    """A file name the notebook chose, its unsafe characters written out, in 255 bytes."""
    name = sanitize(name)
    while len(name.encode()) > 255:
        name = name[:-1]
    return name



def clean_report(report: NotebookReport) -> NotebookReport:
    """The notebook's own text in ``report`` (its name, cell lines, what its errors said, the
    files it wrote) sanitised and capped in place, as every view shows it (idempotent)."""
    report.notebook = student_text(report.notebook)
    report.message = student_text(report.message, MESSAGE_CAP)
    for cell in report.cells:
        cell.first_line = student_text(cell.first_line, LINE_CAP)
        cell.message = student_text(cell.message, MESSAGE_CAP)
    report.produced = [_safe_name(name) for name in report.produced]
    return report


def _report_markdown(report: NotebookReport) -> str:
    lines = [f"**capgrade run-notebook**: {report.summary()}.", ""]
    for c in report.failures:
        lines.append(f"- cell {c.index} ({c.status}): `{c.first_line}` - {c.message}")
    return "\n".join(lines)
