"""``capgrade grade``: every submission of a class, in parallel, resumably.

Discovery (``grader.batch.submissions``) turns the input folder into one entry per
student; each entry with files is graded by ``grade_entry`` (the same
``grade`` every other mode uses: public + hidden checks, overfit runs,
the loss file, the notebook) in a pool of processes, or on a Dask cluster;
each result is committed to the store (``grader.results.store``) the moment it
arrives, and the reports in OUT are exported from the store
(``grader.results.reports``). Files already graded under the same grading key are
skipped; identical files (a copied submission) are graded once. A submission
the grading machine could not judge (out of memory or time: the grader's limit,
never the student's fault) is stored as ``needs-regrade`` and graded again by the
next run, which should be given more memory or CPUs. One that needs a regrade a
second time in a row for the same cause (the same resources ran out) is stored as
``needs-attention``, with the evidence of both runs in its message, and is not
retried again: an instructor looks at it (``--regrade STUDENT`` grades it again).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from grader import __version__
from grader.batch.processes import (
    _stop_on_terminate,
    _subreaper,
    descendants,
    kill_descendants,
)
from grader.batch.progress import _fewer, _progress
from grader.batch.regrade import _json, _reusable, escalate, regrade_cause  # noqa: F401
from grader.batch.submissions import Entry, discover
from grader.harness.request import GradingRequest
from grader.results import RunStatus
from grader.results.store import Store
from grader.settings import PARALLEL_TRAININGS, SETTINGS

STORE_NAME = "grades.sqlite"
#: A row the grading machine could not judge: never a grade, retried by the next run.
NEEDS_REGRADE = RunStatus.NEEDS_REGRADE
#: A row that needed a regrade twice in a row for the same cause: never a grade, never
#: retried on its own; its message holds the evidence, for an instructor.
NEEDS_ATTENTION = RunStatus.NEEDS_ATTENTION


#: What each submission of a batch gets unless told otherwise: everything.
DEFAULT_OPTIONS = GradingRequest(hidden=True, slow=True, notebook=True)


@dataclass
class BatchSummary:
    rows: int = 0
    graded_now: int = 0
    reused: int = 0
    skipped: int = 0
    problems: int = 0
    seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    #: student -> the evidence, for every row that needs an instructor's attention
    attention: dict[str, str] = field(default_factory=dict)
    #: student -> which of several copies was graded and how to pick another (Entry.note)
    copies: dict[str, str] = field(default_factory=dict)


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the batch: what was finished is kept; ``str()`` says how to resume."""


def hidden_path(options: GradingRequest) -> Path:
    from grader.harness.expected import hidden_values_path

    return hidden_values_path(options.hidden_expected)


def grading_key(options: GradingRequest) -> str:
    """capgrade's version, the expected values' bytes and the options that change verdicts."""
    from grader.harness import expected as ex

    digest = hashlib.sha256(__version__.encode())
    for path in (ex.PUBLIC_PATH, hidden_path(options)):
        digest.update(path.read_bytes() if path.is_file() else b"-")
    digest.update(repr(sorted(options.verdict_options().items())).encode())
    return f"{__version__}:{digest.hexdigest()[:16]}"


def grade_entry(entry: dict[str, Any], options: dict[str, Any], out_dir: str,
                warm: bool = False) -> dict[str, Any]:
    """Grade one submission; plain data in and out, so a pool or a Dask worker can run it."""
    from grader.harness.engine import grade

    opts = GradingRequest.from_dict(options)
    start = time.monotonic()
    # Submissions are graded side by side: each one's overfit trainings one after the other.
    os.environ.setdefault(PARALLEL_TRAININGS, "1")
    supply = process_workers()
    supply.keep_warm = warm  # on: the next submission's worker warms up beside this one
    if not warm:
        supply.discard_spare()
    try:
        result = grade(opts.for_submission(
            Path(entry["module"]), hidden_expected=hidden_path(opts),
            loss_file=Path(entry["loss_file"]) if entry.get("loss_file") else None,
            notebook_path=Path(entry["notebook"]) if entry.get("notebook") else None,
            notebook_out=Path(out_dir) / "students" / entry["student"] / "notebook"), supply)
    except MemoryError:  # the grading machine's limit, never the student's
        return {"status": NEEDS_REGRADE, "result": None, "seconds": time.monotonic() - start,
                "message": "the grading process ran out of memory: not a grade; run `capgrade "
                           "grade` again with fewer --workers or more memory"}
    except Exception as exc:  # the grader itself broke on this one: say so, go on
        return {"status": RunStatus.COULD_NOT_GRADE,
                "message": f"{type(exc).__name__}: {exc}"[:500], "result": None,
                "seconds": time.monotonic() - start}
    if result.status.graded and result.needs_regrade:
        from grader.results.render import ran_out_words

        status = NEEDS_REGRADE
        message = (f"the grading machine ran out of {ran_out_words(result)} on "
                   f"{', '.join(result.needs_regrade)}: not a grade; run `capgrade grade` "
                   "again with more memory or CPUs (fewer --workers) to regrade it")
    elif result.status.graded:
        status, message = RunStatus.GRADED, result.message
    else:
        status, message = RunStatus.COULD_NOT_GRADE, result.message
    return {"status": status, "message": message, "result": result.to_dict(),
            "seconds": time.monotonic() - start}


def _problem_status(problem: str) -> str:
    return RunStatus.MISSING_FILES if problem.startswith("missing files") \
        else RunStatus.COULD_NOT_GRADE


def warm_up(options: dict[str, Any], warm: bool) -> None:
    """Ready a grading process: the check engine loaded, and maybe a sandboxed worker warming.

    With ``warm`` each pool process keeps one worker started ahead
    (``WorkerSupply.keep_warm``), so a submission waits only for its own import, not
    for Python and torch. That start runs beside the grading: it pays where a
    core is free, and costs where every core is grading already (``should_warm``).
    """
    from grader.harness import engine  # noqa: F401 - loads pytest and the checks' imports
    from grader.harness.client import grading_secrets

    _stop_on_terminate()
    if not warm:
        return
    opts = GradingRequest.from_dict(options)
    supply = process_workers()
    supply.keep_warm = True
    supply.prepare(opts.device.startswith("cuda"), grading_secrets(hidden_path(opts)))


def process_workers() -> Any:
    """The ``WorkerSupply`` this grading process grades its submissions with.

    One per process (made on first use): a pool process grades many submissions with
    it, its spare warming beside each (``warm_up``, ``grade_entry``).
    """
    from grader.harness.workers import WorkerSupply

    return SETTINGS.one(WorkerSupply)


class _LocalPool:
    """Processes started fresh (spawn): nothing of the coordinator's state leaks in."""

    def __init__(self, workers: int, options: dict[str, Any], warm: bool):
        _subreaper(True)
        self.before = frozenset(descendants())  # not the batch's: spared by abort()
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                        initializer=warm_up, initargs=(options, warm))

    def submit(self, *args: Any) -> Future:
        return self.pool.submit(grade_entry, *args)

    def completed(self, futures: list) -> Any:
        return as_completed(futures)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        _subreaper(False)

    def abort(self) -> None:
        """Stop now: each pool process kills its sandboxes (SIGTERM), then whatever is
        left below us is killed; no process the batch started outlives it."""
        procs = list((getattr(self.pool, "_processes", None) or {}).values())
        for proc in procs:
            with contextlib.suppress(OSError, TypeError):
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 4.0
        pids = {proc.pid for proc in procs if proc.pid}
        while time.monotonic() < deadline and pids & descendants():
            time.sleep(0.05)
        kill_descendants(spare=self.before)
        self.pool.shutdown(wait=False, cancel_futures=True)
        _subreaper(False)


class _DaskPool:
    """An existing Dask distributed cluster; its workers need capgrade and these paths."""

    def __init__(self, address: Any):
        from distributed import Client

        self.client = address if hasattr(address, "submit") else Client(address)
        self.owned = not hasattr(address, "submit")

    def submit(self, *args: Any) -> Any:
        return self.client.submit(grade_entry, *args, pure=False)

    def completed(self, futures: list) -> Any:
        from distributed import as_completed as dask_completed

        return dask_completed(futures)

    def close(self) -> None:
        if self.owned:
            self.client.close()

    def abort(self) -> None:
        self.close()


def grade_all(submissions: str | Path, out: str | Path, workers: int | None = None,
              options: GradingRequest | None = None, regrade: tuple[str, ...] = (),
              dask: Any = None, progress: bool = True, warm: bool | None = None,
              pick: dict[str, str] | None = None) -> BatchSummary:
    """Grade every submission in ``submissions`` into ``out``; see the module docstring.

    ``pick``: student -> which of their several copies to grade (``discover``). Raises
    BatchInterrupted on Ctrl-C, once every process the batch started is gone; what was
    finished is in the store, and the same call again grades the rest.
    """
    from grader.results import reports

    options = options or DEFAULT_OPTIONS
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    entries = discover(Path(submissions), out / "work", pick=pick)
    for entry in entries:  # never decided silently: said before any grading starts
        if entry.note and progress:
            print(f"capgrade grade: {entry.note}", file=sys.stderr, flush=True)
    store = Store(out / STORE_NAME)
    key = grading_key(options)
    run_id = store.start_run(key, {**options.to_dict(), "workers": workers, "dask": str(dask)})
    summary = BatchSummary(rows=len(entries))
    summary.copies = {e.student: e.note for e in entries if e.note}
    todo: list[Entry] = []
    copies: list[Entry] = []
    first_of_hash: dict[str, Entry] = {}
    try:
        for entry in entries:
            fresh = entry.student in regrade or regrade == ("*",)
            previous = store.current(entry.student, entry.content_hash, key)
            if entry.problem:
                if fresh or previous is None or previous["message"] != entry.problem:
                    store.record(run_id, entry.as_dict(), key, _problem_status(entry.problem),
                                 entry.problem, None, 0.0)
                summary.problems += 1
            elif previous is not None and not fresh and previous["status"] != NEEDS_REGRADE:
                summary.skipped += 1
            elif entry.content_hash in first_of_hash or (
                    not fresh and _reusable(store.by_hash(entry.content_hash, key))):
                copies.append(entry)
            else:
                first_of_hash[entry.content_hash] = entry
                todo.append(entry)
        if progress and todo and len(todo) < summary.rows:
            print(_fewer(len(todo), summary.rows, summary.skipped, summary.problems,
                         len(copies)), flush=True)
        _run(todo, options, out, store, run_id, key, workers, dask, progress, summary,
             should_warm(workers, dask) if warm is None else warm)
        for entry in copies:
            original = store.by_hash(entry.content_hash, key)
            if original is not None and original["status"] == NEEDS_REGRADE:
                store.record(run_id, entry.as_dict(), key, NEEDS_REGRADE,
                             f"identical files to {original['student']}'s, which the grading "
                             "machine could not judge: regraded by the next run", None, 0.0)
                continue
            if original is not None and original["status"] == NEEDS_ATTENTION:
                store.record(run_id, entry.as_dict(), key, NEEDS_ATTENTION,
                             f"identical files to {original['student']}'s: "
                             f"{original['message']}", None, 0.0)
                continue
            if not _reusable(original):  # its original could not be graded: say so
                store.record(run_id, entry.as_dict(), key, RunStatus.COULD_NOT_GRADE,
                             "identical to a submission that could not be graded", None, 0.0)
                continue
            store.record(run_id, entry.as_dict(), key, original["status"],
                         f"identical files to {original['student']}'s; result reused",
                         _json(original["result"]), 0.0)
            summary.reused += 1
        store.finish_run(run_id)
        reports.export(store, out)
        for row in store.latest():
            summary.statuses[row["status"]] = summary.statuses.get(row["status"], 0) + 1
            if row["status"] == NEEDS_ATTENTION:
                summary.attention[row["student"]] = row["message"]
    except KeyboardInterrupt as exc:
        if isinstance(exc, BatchInterrupted):
            raise
        kept = store.count(run_id)
        graded = len(store.latest())
        raise BatchInterrupted(
            f"interrupted: {kept} result(s) of this run kept in {out / STORE_NAME} ({graded} "
            f"of {len(entries)} students have a row). To grade the rest, run the same command "
            "again: nothing finished is graded twice.") from None
    finally:
        store.close()
    summary.seconds = round(time.monotonic() - start, 2)
    return summary


def should_warm(workers: int | None, dask: Any) -> bool:
    """Warm workers by default only where a core is left over for their start.

    Measured on 2 cores, 20 submissions (scripts/bench.py batch): 1 worker 183.7 s
    cold, 117.6 s warm; 2 workers 86.2 / 92.5 s cold, 94.2 s warm. A Dask
    cluster's cores are not known here: off unless asked for.
    """
    cores = os.cpu_count() or 1
    return dask is None and (workers or cores) < cores


def _run(todo: list[Entry], options: GradingRequest, out: Path, store: Store, run_id: int,
         key: str, workers: int | None, dask: Any, progress: bool, summary: BatchSummary,
         warm: bool) -> None:
    if not todo:
        return
    pool = _DaskPool(dask) if dask is not None else \
        _LocalPool(workers or os.cpu_count() or 1, options.to_dict(), warm)
    bar = _progress(len(todo)) if progress else None
    aborted = False
    try:
        futures = {pool.submit(e.as_dict(), options.to_dict(), str(out), warm): e for e in todo}
        for future in pool.completed(list(futures)):
            entry = futures[future]
            try:
                done = future.result()
            except Exception as exc:  # a pool process died (killed, out of memory): ours
                done = {"status": NEEDS_REGRADE, "result": None, "seconds": 0.0,
                        "message": f"the grading process died ({type(exc).__name__}: {exc}), "
                                   "most likely out of memory: not a grade; run `capgrade "
                                   "grade` again with fewer --workers or more memory"}
            done = escalate(store.current(entry.student, entry.content_hash, key), done,
                            entry.student)
            store.record(run_id, entry.as_dict(), key, done["status"], done["message"],
                         done["result"], done["seconds"])
            summary.graded_now += 1
            if bar is not None:
                bar.advance(entry.student, done)
    except KeyboardInterrupt:
        aborted = True
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C waits
        try:
            if bar is not None:
                bar.close()
                bar = None
            pool.abort()
        finally:
            signal.signal(signal.SIGINT, previous)
        raise
    finally:
        if bar is not None:
            bar.close()
        if not aborted:
            pool.close()
