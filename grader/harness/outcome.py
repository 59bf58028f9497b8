"""TRUSTED side: what a call into the worker came to, as judging sees it.

Shared by the worker client (which makes them) and judging (which reads them),
so judging needs nothing of how workers are driven.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from grader.protocol import ErrorInfo


class WorkerFailure(Exception):
    """The worker hung, crashed or exited while answering: the check cannot judge."""


@dataclass
class Outcome:
    """A probe's reply: ``value`` when ok, else ``error`` (type, message, student frames)."""

    ok: bool
    value: Any = None
    error: ErrorInfo = field(default_factory=lambda: ErrorInfo("", ""))
    output: str = ""
    duration: float = 0.0

    @property
    def not_implemented(self) -> bool:
        return not self.ok and self.error.not_implemented
