"""TRUSTED side: drives a worker over a pipe; never runs student code, never imports torch.

``Submission`` starts ``python -m grader.worker.process`` in its own session, temp dir
and scrubbed environment, sends it probe calls over a pipe and decodes the
replies (``grader.protocol``: JSON and raw arrays, no pickle). A worker that
hangs past the timeout, crashes or exits
fails the call in progress with ``WorkerFailure``; the next call starts a fresh
worker, so the remaining checks still run. Workers come from a
``grader.harness.workers.WorkerSupply``; each request and its reply go through
``grader.harness.channel``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from grader import sandbox
from grader.harness.channel import (
    Died,
    Garbled,
    TimedOut,
    TooLarge,
    death,
    exit_signal,
    signal_name,
)
from grader.harness.channel import Watch as _Watch
from grader.harness.outcome import GraderLimit, Outcome, WorkerFailure
from grader.harness.workers import Worker as _Worker
from grader.harness.workers import WorkerSupply, forking
from grader.protocol import INPUT, TOO_LARGE, ErrorInfo, Op, Request
from grader.sandbox import cgroup, resources

if TYPE_CHECKING:
    from grader.sandbox.forkserver import ForkedProcess

IMPORT_TIMEOUT = 120.0
CALL_TIMEOUT = 15.0


class Submission:
    """A proxy for the student's module living in a worker process."""

    def __init__(self, path: str | Path, timeout: float = CALL_TIMEOUT, device: str = "cpu",
                 secrets: tuple[Path, ...] = sandbox.DEFAULT_SECRETS,
                 supply: WorkerSupply | None = None):
        self.path = Path(path).resolve()
        #: Where this proxy's workers come from (shared with its siblings).
        self.supply = supply if supply is not None else WorkerSupply()
        self.timeout = timeout
        self.device = device
        self.cuda = device.startswith("cuda")
        self.secrets = tuple(secrets)
        self.sandbox: sandbox.Sandbox | None = None
        self._worker: _Worker | None = None
        self._launched: _Worker | None = None  # started ahead, not yet given the submission
        self._stderr: IO[bytes] | None = None
        self.proc: subprocess.Popen | ForkedProcess | None = None
        self.import_outcome: Outcome | None = None
        #: The first failed import of this file by this proxy or a sibling, shared among them:
        #: an import that failed once is not retried by any of them (no second 120 s wait).
        self._failed_imports: list[Outcome] = []
        self.restarts = 0
        #: Seeds of the inputs sent since the plugin last cleared them (shared with siblings).
        self.seeds: set[int] = set()
        #: The monitor's record of workers ``retire`` closed (a later worker starts empty).
        self._retired_usage: list[dict[str, Any]] = []
        #: Host OOM counters since the worker last answered: a kill while it sat idle (a
        #: worker started beside it took the memory) is seen by the call that finds it dead.
        self._oom_mark: dict[str, int] | None = None
        self.isolation: list[str] = []
        self._output: list[str] = []
        #: Timeouts are calibrated on a full core: longer on a fractional CPU quota.
        self.scale = resources.timeout_scale()

    # -- lifecycle -----------------------------------------------------------------

    def launch(self) -> None:
        """Start the worker now (Python, torch), to import the submission when a check asks.

        With the fork server, start that (if it is not running): the fork itself
        takes milliseconds when a check asks.
        """
        if forking(self.cuda):
            self.supply.ahead(self.cuda, self.secrets)  # the fork server, started now
        elif self._launched is None and self._worker is None:
            self._launched = self.supply.ahead(self.cuda, self.secrets)

    def start(self) -> Outcome:
        """Start a worker (or take the one launched ahead, or the warm one); import the module."""
        self.close()
        launched, self._launched = self._launched, None
        worker = self.supply.take(launched, self.cuda, self.secrets)
        self._worker = worker
        self.sandbox, self.proc, self._stderr = worker.sandbox, worker.proc, worker.stderr
        self._channel = worker.channel
        self.isolation = list(worker.sandbox.layers)
        # The worker imports its own copy: the original's folder may be closed to it.
        module = worker.home / self.path.name
        shutil.copyfile(self.path, module)
        if worker.owner is not None:
            os.chown(module, *worker.owner)
        self._oom_mark = None
        try:
            watch = self._watch()
            self._channel.send(Request(Op.IMPORT, path=str(module)))
            self.import_outcome = self._receive(IMPORT_TIMEOUT, "importing the submission",
                                                watch)
        except (WorkerFailure, OSError) as exc:
            self.close()
            self.import_outcome = Outcome(False, error=ErrorInfo.grader_side(
                "WorkerFailure", str(exc)),
                failure=exc if isinstance(exc, GraderLimit) else None)
        if not self.import_outcome.ok:
            self.import_outcome.error.stage = "import"
            self._failed_imports.append(self.import_outcome)
        return self.import_outcome

    def retire(self) -> None:
        """Close the worker to give its memory back; the next call starts a fresh one.

        For a tight memory limit, between phases (the overfit trainings and their
        verification): what the runtime monitor saw is kept (``usage``), and the
        fresh worker is not counted as a restart.
        """
        if self.proc is not None and self.proc.poll() is None and self.import_outcome is not None \
                and self.import_outcome.ok:
            with contextlib.suppress(WorkerFailure, OSError):
                self._retired_usage = self.usage()
        self.close()
        if self.import_outcome is not None and self.import_outcome.ok:
            self.import_outcome = None

    def close(self) -> None:
        """Kill the worker's whole sandbox and remove its temp dir."""
        if self._worker is not None:
            self._worker.close()
        self._worker = None
        if self._launched is not None and not self._launched.alive():
            self._launched.close()
            self._launched = None
        self.proc = self._stderr = None

    def __enter__(self) -> Submission:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
        self.discard_launched()

    def discard_launched(self) -> None:
        """Stop a worker launched ahead that no check needed."""
        if self._launched is not None:
            self._launched.close()
            self._launched = None

    # -- calls ---------------------------------------------------------------------

    def _receive(self, timeout: float, doing: str, watch: _Watch) -> Outcome:
        """The reply to the request just sent, waiting ``timeout`` calibrated seconds.

        A call starved by other processes is waited for longer (``_Watch.timed_out``).
        """
        assert self.proc is not None
        watch.promise(timeout)
        try:
            reply = self._channel.reply(timeout, self.scale, doing, watch)
        except TooLarge as exc:  # the student's outcome; the pipe is unusable now
            self.close()
            return Outcome(False, error=ErrorInfo(TOO_LARGE, str(exc.cause)),
                           duration=time.monotonic() - self._channel.since)
        except TimedOut as exc:
            self.close()
            raise exc.failure from None
        except Died as exc:
            detail = (f"killed by signal {signal_name(exc.signum)}" if exc.signum
                      else f"exited with code {exc.code}")
            tail = self._stderr_tail()
            self.close()
            failure = watch.died(exc.signum, doing, self.sandbox.limits.cpu_seconds
                                 if self.sandbox is not None else None)
            if failure is not None:
                raise failure from None
            raise WorkerFailure(f"the worker process {detail} while {doing} "
                                "(sys.exit/os._exit or a crash)"
                                + (f"; its last words: {tail}" if tail else "")) from None
        except Garbled as exc:
            self.close()
            raise WorkerFailure(f"the worker sent a reply that is not plain data "
                                f"({exc.cause})") from exc.cause
        self._oom_mark = resources.oom_kills()
        return Outcome(ok=reply.ok, value=reply.value,
                       error=reply.error or ErrorInfo("", ""), output=reply.output,
                       duration=time.monotonic() - self._channel.since)

    def _stderr_tail(self, chars: int = 600) -> str:
        """The end of what the worker wrote to its stderr outside Python's capture."""
        stream = self._stderr
        if stream is None:
            return ""
        stream.flush()
        stream.seek(max(0, os.fstat(stream.fileno()).st_size - chars))
        return stream.read().decode(errors="replace").strip()

    def _ensure_started(self) -> Outcome:
        if self.import_outcome is None and self._failed_imports:
            self.import_outcome = self._failed_imports[0]  # a sibling's: the same file failed
        if self.import_outcome is not None and not self.import_outcome.ok:
            return self.import_outcome  # an import that failed once is not retried
        if self.proc is None or self.proc.poll() is not None:
            if self.import_outcome is not None:
                self.restarts += 1
            return self.start()
        assert self.import_outcome is not None
        return self.import_outcome

    def imported(self) -> Outcome:
        """The import of the submission (started now if no worker holds it)."""
        return self._ensure_started()

    def call(self, probe: str, timeout: float | None = None, **params: Any) -> Outcome:
        """Run ``grader.worker.probes.<probe>(module, **params)`` in the worker."""
        return self.begin(probe, **params).outcome(timeout)

    def begin(self, probe: str, **params: Any) -> Pending:
        """Send the call and return at once: ``.outcome()`` waits for the reply.

        So calls in workers of their own can run side by side (the overfit trainings).
        """
        self.seeds.update(_seeds(params))  # recorded with the expected values (capgrade build)
        imported = self._ensure_started()
        if not imported.ok:
            return Pending(self, probe, None, imported)
        watch = self._watch()
        self._channel.send(Request(Op.CALL, probe=probe, params=params))
        return Pending(self, probe, watch)

    def sibling(self) -> Submission:
        """Another proxy for the same file, settings and secrets: a worker of its own."""
        twin = Submission(self.path, timeout=self.timeout, device=self.device,
                          secrets=self.secrets, supply=self.supply)
        twin.scale = self.scale
        twin._failed_imports, twin.seeds = self._failed_imports, self.seeds
        return twin

    def merge_output(self, other: Submission) -> None:
        """Count what ``other`` (a sibling that ran part of a check) captured as ours."""
        self._output.append(other.take_output())

    def take_output(self) -> str:
        """Student output captured since the last call of this method."""
        text, self._output = "".join(self._output), []
        return text

    def usage(self) -> list[dict[str, Any]]:
        """Forbidden-API uses the worker has seen so far."""
        self._ensure_started()
        watch = self._watch()
        self._channel.send(Request(Op.USAGE))
        seen = self._receive(self.timeout, "reporting API usage", watch).value or []
        return self._retired_usage + [u for u in seen if u not in self._retired_usage]

    def _watch(self) -> _Watch:
        """The harness's own record of the call about to be sent (see ``_Watch``)."""
        group = self.sandbox.cgroup if self.sandbox is not None else None
        events = functools.partial(cgroup.counters, self.sandbox.id) \
            if group is not None and self.sandbox is not None else None
        granted = self._worker.granted if self._worker is not None else None
        return _Watch(self.proc, memory_events=events, oom_since=self._oom_mark, granted=granted)


class Pending:
    """A call sent to a worker, its reply not read yet."""

    def __init__(self, submission: Submission, probe: str, watch: _Watch | None,
                 done: Outcome | None = None):
        self.submission, self.probe, self.watch, self.done = submission, probe, watch, done

    def outcome(self, timeout: float | None = None) -> Outcome:
        """The reply, waiting ``timeout`` calibrated seconds (default: the call timeout)."""
        if self.done is None:
            assert self.watch is not None
            sub = self.submission
            self.done = sub._receive(timeout or sub.timeout, f"running {self.probe}",
                                     self.watch)
            if self.done.output:
                sub._output.append(self.done.output)
        return self.done


def read_loss_file(path: str | Path, max_bytes: int,
                   secrets: tuple[Path, ...] = sandbox.DEFAULT_SECRETS,
                   supply: WorkerSupply | None = None) -> dict[str, list[float]]:
    """A hand-in's loss histories, parsed in a fresh worker that imports no student code.

    Raises ``LossFileError`` (the student's file is unusable: the message says why) or
    ``WorkerFailure`` (the grader could not read it). The same bytes are parsed
    once per ``supply`` (one grading, or a batch process): a check and the next one
    asking for the same file do not each pay for a worker's start.
    """
    from grader.course.lossfile import LossFileError, check_file

    supply = supply if supply is not None else WorkerSupply()
    path = check_file(path, max_bytes)  # nothing odd goes near a parser, nor gets copied
    key = (hashlib.sha256(path.read_bytes()).hexdigest(), max_bytes)
    parsed = supply.loss_files
    if key not in parsed:
        try:
            parsed[key] = _parse_loss_file(path, max_bytes, secrets, supply)
        except LossFileError as exc:  # the file's own fault: the same answer next time
            parsed[key] = exc
    found = parsed[key]
    if isinstance(found, LossFileError):
        raise LossFileError(str(found))
    return {k: list(v) for k, v in found.items()}


def _parse_loss_file(path: Path, max_bytes: int, secrets: tuple[Path, ...],
                     supply: WorkerSupply) -> dict[str, list[float]]:
    from grader.course.lossfile import LossFileError

    worker = supply.fresh(False, tuple(secrets))
    try:
        copy = worker.home / path.name
        shutil.copyfile(path, copy)
        if worker.owner is not None:
            os.chown(copy, *worker.owner)
        watch = _Watch(worker.proc, granted=worker.granted)
        worker.channel.send(Request(Op.READ_LOSS_FILE, path=str(copy),
                                    params={"max_bytes": max_bytes}))
        doing = f"reading {path.name}"
        try:  # no student code there: only the file
            reply = worker.channel.reply(IMPORT_TIMEOUT, resources.timeout_scale(), doing, watch)
        except TimedOut as exc:
            if isinstance(exc.failure, GraderLimit):
                raise exc.failure from None
            raise LossFileError(f"{path.name} could not be read: the grader's reader "
                                f"{exc.failure}; three lists of losses read in well under a "
                                "second, so the file is malformed") from None
        except TooLarge as exc:  # no student code ran there: the file holds too much
            raise LossFileError(f"{path.name} holds more than the grader reads back "
                                f"({exc.cause})") from None
        except (Died, Garbled) as exc:
            code = exc.code if isinstance(exc, Died) else \
                worker.proc.wait(timeout=5) if worker.proc is not None else 0
            failure = watch.died(exit_signal(code), doing, worker.sandbox.limits.cpu_seconds)
            if isinstance(failure, GraderLimit):  # the host's doing (OOM killer, fork server)
                raise failure from None
            raise LossFileError(f"{path.name} could not be read: the grader's reader failed on "
                                f"it ({failure or death(code) or exc.cause}); the file is "
                                "malformed") from None
    finally:
        worker.close()
    if reply.ok and isinstance(reply.value, dict):
        return reply.value
    error = reply.error or ErrorInfo("", "")
    if error.type == "LossFileError":
        raise LossFileError(error.message)
    # Only the file went in: a reader that fails on it failed because of the file.
    raise LossFileError(f"{path.name} could not be read: the grader's reader failed on it "
                        f"({error.type}: {error.message[:300]}); the file is malformed")


def _seeds(value: Any) -> set[int]:
    """The seeds of the inputs ``value`` describes (``grader.checks.inputs.spec``)."""
    if isinstance(value, dict):
        found = set().union(*(_seeds(v) for v in value.values())) if value else set()
        args = value.get("args") if INPUT in value else None
        if isinstance(args, dict) and "seed" in args:
            found.add(args["seed"])
        return found
    if isinstance(value, (list, tuple)):
        return set().union(*(_seeds(v) for v in value)) if value else set()
    return set()


def grading_secrets(hidden_expected: str | Path) -> tuple[Path, ...]:
    """What a grading worker must not see: the checkout's secrets, the hidden values, and the
    public ones too (only the harness compares; a module that read them at run time could
    hand a check its own expected answer)."""
    from grader.harness.expected import PUBLIC_PATH

    return (*sandbox.DEFAULT_SECRETS, Path(hidden_expected).resolve(), PUBLIC_PATH.resolve())
