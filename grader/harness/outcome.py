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


#: What a grading machine can run out of, and the words a message uses for it.
RESOURCES = {"memory": "memory", "time": "CPU time (the machine was too slow or too busy)",
             "cpu": "the CPU time its sandbox allows (the grader's calls were given more)",
             "deadline": "time before the autograder's deadline",
             "grader": "a working grader process (one of the grader's own processes stopped)"}


class GraderLimit(WorkerFailure):
    """The grading machine ran out of something: the grader's limit, never the student's fault.

    Raised only on the trusted side, on the harness's own accounting (the host's
    OOM counters, the sandbox tree's CPU and wait times against the clock, the CPU
    time the grader gave the worker's calls), never decoded from a worker's reply
    nor inferred from a signal or exit code student code could give itself: see
    ``grader.harness.client._Watch`` and ``grader.sandbox.resources``.
    """

    def __init__(self, resource: str, detail: str):
        super().__init__(detail)
        self.resource, self.detail = resource, detail

    def student_message(self) -> str:
        return (f"Not graded: the grading machine ran out of {RESOURCES[self.resource]} "
                f"({self.detail}). This says nothing about your code, and no points were "
                "taken for it: the submission must be regraded (ask your instructor, or "
                "run the checks again on a machine with more memory or time).")


@dataclass
class Outcome:
    """A probe's reply: ``value`` when ok, else ``error`` (type, message, student frames)."""

    ok: bool
    value: Any = None
    error: ErrorInfo = field(default_factory=lambda: ErrorInfo("", ""))
    output: str = ""
    duration: float = 0.0
    #: Set on the trusted side when the call could not run (never from the wire).
    failure: WorkerFailure | None = None

    @property
    def not_implemented(self) -> bool:
        return not self.ok and self.error.not_implemented
