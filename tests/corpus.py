"""Each known submission graded once per test session, in one shared pool.

The tests that judge whole submissions (bug variants, diagnoses, student styles,
correct variants, the reference and the stub) ask the corpus for a grading
instead of grading themselves. A grading is keyed by the submission's text and
its options, so the first asker pays and every later one reads the result. A
test module declares what it will ask for in ``corpus_jobs(items)``; conftest
starts those jobs when collection ends, two at a time on the machine's cores,
runs the tests that do not mind company beside them, then the readers, and
closes the pool after the last reader, so no test marked ``alone`` (machine-wide
process scans, memory counters, timings) shares the machine with it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class Call:
    """A run that is more than one grading (a notebook, a bundle in a container).

    ``function`` ("module:name") is called in a pool process with a folder of its
    own (``Corpus.folder``, kept until the session ends) and ``args``; what it
    returns must pickle, and the test makes its assertions on that and the folder.
    """

    function: str
    args: tuple = ()

    @property
    def key(self) -> tuple[str, str, tuple]:
        return "call", self.function, self.args


def job_for(path: Path, hidden: bool = True, only: str | None = None) -> Job:
    return Job(path.read_text(encoding="utf-8"), hidden, only)


def _grade(job: Job) -> dict:
    """In a pool process: grade the text as the student's module, in a folder of its own."""
    from grader.harness.engine import run_checks

    with tempfile.TemporaryDirectory(prefix="capgrade-corpus-") as tmp:
        path = Path(tmp) / MODULE
        path.write_text(job.source, encoding="utf-8")
        return run_checks(path, hidden=job.hidden, only=job.only).to_dict()


def _call(call: Call, folder: str) -> Any:
    module, name = call.function.split(":")
    return getattr(importlib.import_module(module), name)(Path(folder), *call.args)


class Corpus:
    """The session's gradings, by key; a pool of spawned processes grades what is missing.

    Jobs wait in a queue and go to the pool only as it has a free process, so a
    test that asks for a grading no one declared jumps the queue instead of
    waiting for every declared one.
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or max(1, min(2, os.cpu_count() or 1))
        self._pool: ProcessPoolExecutor | None = None
        self._futures: dict[tuple, Future] = {}
        self._queue: deque[Job | Call] = deque()
        self._busy = 0
        self._turn = threading.Condition()
        self._feeder: threading.Thread | None = None
        self._root: Path | None = None

    def folder(self, call: Call) -> Path:
        """The folder a call works in (its outputs stay there until the session ends)."""
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="capgrade-corpus-"))
        digest = hashlib.sha256(repr(call.key).encode()).hexdigest()[:12]
        return self._root / f"{call.function.rsplit(':', 1)[-1]}-{digest}"

    def submit(self, jobs: Iterable[Job | Call], first: bool = False) -> None:
        """Queue every job not graded or queued yet (in the order given, or ahead of all)."""
        with self._turn:
            for job in jobs:
                if job.key not in self._futures:
                    self._futures[job.key] = Future()
                    self._queue.append(job)
                elif first and job in self._queue:
                    self._queue.remove(job)
                    self._queue.appendleft(job)
                    continue
                else:
                    continue
                if first:
                    self._queue.rotate(1)  # the job just added goes to the front
            if self._feeder is None and self._queue:
                self._pool = ProcessPoolExecutor(max_workers=self.workers,
                                                 mp_context=get_context("spawn"))
                self._feeder = threading.Thread(target=self._feed, daemon=True,
                                                name="corpus-feeder")
                self._feeder.start()
            self._turn.notify_all()

    def _feed(self) -> None:
        """Hand the queue's head to the pool whenever one of its processes is free."""
        while True:
            with self._turn:
                self._turn.wait_for(lambda: self._pool is None
                                    or (self._queue and self._busy < self.workers))
                if self._pool is None:
                    return
                job, pool = self._queue.popleft(), self._pool
                self._busy += 1
            if isinstance(job, Call):
                folder = self.folder(job)
                folder.mkdir(parents=True, exist_ok=True)
                running = pool.submit(_call, job, str(folder))
            else:
                running = pool.submit(_grade, job)
            running.add_done_callback(functools.partial(self._finished, job.key))

    def _finished(self, key: tuple, running: Future) -> None:
        outer = self._futures[key]
        if running.cancelled():
            outer.cancel()
        elif running.exception() is not None:
            outer.set_exception(running.exception())
        else:
            outer.set_result(running.result())
        with self._turn:
            self._busy -= 1
            self._turn.notify_all()

    def result(self, job: Job | Call) -> Any:
        """A grading's ``SubmissionResult`` (a call's return value), run now if no one asked."""
        self.submit([job], first=True)
        value = self._futures[job.key].result()
        return value if isinstance(job, Call) else SubmissionResult.from_dict(value)

    def grade(self, source: str, hidden: bool = True, only: str | None = None
              ) -> SubmissionResult:
        return self.result(Job(source, hidden, only))

    def close(self) -> None:
        """Stop the pool (its processes hold fork servers and warm workers); results stay.

        Jobs still queued are dropped: asking for one later grades it in a new pool.
        """
        with self._turn:
            pool, feeder, self._pool, self._feeder = self._pool, self._feeder, None, None
            for job in self._queue:
                del self._futures[job.key]
            self._queue.clear()
            self._turn.notify_all()
        if feeder is not None:
            feeder.join()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def remove(self) -> None:
        """At the session's end: the pool and the calls' folders."""
        self.close()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
