"""Progress of a batch: a bar on a terminal, one line per submission anywhere else."""

from __future__ import annotations

from typing import Any


def _fewer(todo: int, rows: int, kept: int, problems: int, copies: int) -> str:
    """Why the count of submissions to grade is below the class's rows (the bar's total)."""
    why = [f"{n} {what}" for n, what in ((kept, "unchanged since the last run"),
                                         (problems, "without a module to grade"),
                                         (copies, "identical to another submission"))
           if n]
    return f"grading {todo} of {rows} submissions ({', '.join(why)}: their rows are written " \
           "without grading)"


def _progress(total: int) -> Any:
    """A bar on a terminal; one line per finished submission anywhere else (CI, nohup)."""
    from rich.console import Console

    return _Progress(total) if Console().is_terminal else _Lines(total)


def _outcome(done: dict[str, Any]) -> str:
    result = done.get("result") or {}
    score = (f" {result['score']:g}/{result['max_score']:g}"
             if "score" in result and "max_score" in result else "")
    return f"{done['status']}{score} ({done.get('seconds', 0.0):.1f} s)"


class _Lines:
    """Progress for a log: ``[3/9] alice: graded 65/65 (12.3 s)``, flushed at once."""

    def __init__(self, total: int):
        self.total, self.done = total, 0
        print(f"grading {total} submission(s)", flush=True)

    def advance(self, student: str, done: dict[str, Any]) -> None:
        self.done += 1
        print(f"[{self.done}/{self.total}] {student}: {_outcome(done)}", flush=True)

    def close(self) -> None:
        pass


class _Progress:
    """A rich progress bar with the ETA and the last student graded."""

    def __init__(self, total: int):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(TextColumn("grading"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 TextColumn("{task.fields[last]}"))
        self.task = self.progress.add_task("grading", total=total, last="")
        self.progress.start()

    def advance(self, student: str, done: dict[str, Any]) -> None:
        from rich.markup import escape

        self.progress.update(self.task, advance=1, last=escape(f"{student}: {done['status']}"))

    def close(self) -> None:
        self.progress.stop()
