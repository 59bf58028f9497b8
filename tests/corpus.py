"""Each known submission graded once per test session, in one shared pool.

The tests that judge whole submissions (bug variants, diagnoses, student styles,
correct variants, the reference and the stub) ask the corpus for a grading
instead of grading themselves. A grading is keyed by the submission's text and
its options, so the first asker pays and every later one reads the result. A
test module declares what it will ask for in ``corpus_jobs(items)``; conftest
starts those jobs when collection ends, two at a time on the machine's cores,
runs the modules that declared jobs first, and closes the pool after the last
of their tests, so no later (timing-sensitive) test shares the CPUs with it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from grader.results import SubmissionResult

MODULE = "rnn_lstm_captioning.py"


@dataclass(frozen=True)
class Job:
    """One grading: a submission's text and the options it is graded with."""

    source: str
    hidden: bool = True
    only: str | None = None

    @property
    def key(self) -> tuple[str, bool, str | None]:
        return hashlib.sha256(self.source.encode()).hexdigest(), self.hidden, self.only


def job_for(path: Path, hidden: bool = True, only: str | None = None) -> Job:
    return Job(path.read_text(encoding="utf-8"), hidden, only)


def _grade(job: Job) -> dict:
    """In a pool process: grade the text as the student's module, in a folder of its own."""
    from grader.harness.engine import run_checks

    with tempfile.TemporaryDirectory(prefix="capgrade-corpus-") as tmp:
        path = Path(tmp) / MODULE
        path.write_text(job.source, encoding="utf-8")
        return run_checks(path, hidden=job.hidden, only=job.only).to_dict()


class Corpus:
    """The session's gradings, by key; a pool of spawned processes grades what is missing."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or max(1, min(2, os.cpu_count() or 1))
        self._pool: ProcessPoolExecutor | None = None
        self._futures: dict[tuple[str, bool, str | None], Future] = {}

    def submit(self, jobs: Iterable[Job]) -> None:
        """Start every job not graded or started yet (in the order given)."""
        for job in jobs:
            if job.key not in self._futures:
                if self._pool is None:
                    self._pool = ProcessPoolExecutor(max_workers=self.workers,
                                                     mp_context=get_context("spawn"))
                self._futures[job.key] = self._pool.submit(_grade, job)

    def result(self, job: Job) -> SubmissionResult:
        """The job's result, grading it now if no one asked before."""
        self.submit([job])
        return SubmissionResult.from_dict(self._futures[job.key].result())

    def grade(self, source: str, hidden: bool = True, only: str | None = None
              ) -> SubmissionResult:
        return self.result(Job(source, hidden, only))

    @property
    def graded(self) -> int:
        return len(self._futures)

    def close(self) -> None:
        """Stop the pool (its processes hold fork servers and warm workers); results stay."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
