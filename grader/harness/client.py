"""TRUSTED side: drives a worker over a pipe; never runs student code, never imports torch.

``Submission`` starts ``python -m grader.worker.process`` in its own session, temp dir
and scrubbed environment, sends it probe calls over a pipe and decodes the
replies (``grader.protocol``: JSON and raw arrays, no pickle). A worker that
hangs past the timeout, crashes or exits
fails the call in progress with ``WorkerFailure``; the next call starts a fresh
worker, so the remaining checks still run.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from grader import sandbox
from grader.harness.outcome import GraderLimit, Outcome, WorkerFailure
from grader.protocol import (
    TOO_LARGE,
    ErrorInfo,
    MessageTooLarge,
    Op,
    ProtocolError,
    Reply,
    Request,
    receive,
)
from grader.sandbox import cgroup, forkserver, resources

IMPORT_TIMEOUT = 120.0
CALL_TIMEOUT = 15.0


class Submission:
    """A proxy for the student's module living in a worker process."""

    def __init__(self, path: str | Path, timeout: float = CALL_TIMEOUT, device: str = "cpu",
                 secrets: tuple[Path, ...] = sandbox.DEFAULT_SECRETS):
        self.path = Path(path).resolve()
        self.timeout = timeout
        self.device = device
        self.cuda = device.startswith("cuda")
        self.secrets = tuple(secrets)
        self.sandbox: sandbox.Sandbox | None = None
        self._worker: _Worker | None = None
        self._launched: _Worker | None = None  # started ahead, not yet given the submission
        self._stderr = None
        self.proc: subprocess.Popen | None = None
        self.import_outcome: Outcome | None = None
        #: The first failed import of this file by this proxy or a sibling, shared among them:
        #: an import that failed once is not retried by any of them (no second 120 s wait).
        self._failed_imports: list[Outcome] = []
        self.restarts = 0
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
        if _forking(self.cuda):
            forkserver.get()
            return
        if self._launched is None and self._worker is None:
            self._launched = (_take_warm(self.cuda, self.secrets)
                              or _Worker.launch(self.cuda, self.secrets))

    def start(self) -> Outcome:
        """Start a worker (or take the one launched ahead, or the warm one); import the module."""
        self.close()
        worker, self._launched = self._launched, None
        worker = worker if worker is not None and worker.alive() else \
            _take_warm(self.cuda, self.secrets) or _Worker.launch(self.cuda, self.secrets)
        if _KEEP_WARM:
            _start_warm(self.cuda, self.secrets)  # warms up while this one is graded
        self._worker = worker
        self.sandbox, self.proc, self._stderr = worker.sandbox, worker.proc, worker.stderr
        self._requests, self._replies = worker.requests, worker.replies
        self.isolation = list(worker.sandbox.layers)
        # The worker imports its own copy: the original's folder may be closed to it.
        module = worker.home / self.path.name
        shutil.copyfile(self.path, module)
        if worker.owner is not None:
            os.chown(module, *worker.owner)
        self._oom_mark = None
        try:
            watch = self._watch()
            self._requests.send_bytes(Request(Op.IMPORT, path=str(module)).encode())
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
            try:
                self._retired_usage = self.usage()
            except (WorkerFailure, OSError):
                pass
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
        start = time.monotonic()
        assert self.proc is not None
        watch.promise(timeout)
        try:
            ready = self._replies.poll(timeout * self.scale)
            data = receive(self._replies) if ready else None  # refused unread past the cap
        except MessageTooLarge as exc:  # the student's outcome; the pipe is unusable now
            self.close()
            return Outcome(False, error=ErrorInfo(TOO_LARGE, str(exc)),
                           duration=time.monotonic() - start)
        except (EOFError, OSError):
            data = b""
        if data is None:
            more = watch.timed_out(timeout, self.scale, doing)
            if isinstance(more, float):  # starved by other processes: its CPU time is still due
                return self._receive(more / self.scale, doing, watch)
            self.close()
            raise more
        if not data:
            code = self.proc.wait(timeout=5)
            signum = _exit_signal(code)
            detail = (f"killed by signal {_signal_name(signum)}" if signum
                      else f"exited with code {code}")
            tail = self._stderr_tail()
            self.close()
            failure = watch.died(signum, doing, self.sandbox.limits.cpu_seconds
                                 if self.sandbox is not None else None)
            if failure is not None:
                raise failure
            raise WorkerFailure(f"the worker process {detail} while {doing} "
                                "(sys.exit/os._exit or a crash)"
                                + (f"; its last words: {tail}" if tail else ""))
        try:
            reply = Reply.decode(data)
        except MessageTooLarge as exc:  # over a cap of grader.protocol.WIRE: fails this check
            self.close()
            return Outcome(False, error=ErrorInfo(TOO_LARGE, str(exc)),
                           duration=time.monotonic() - start)
        except ProtocolError as exc:
            self.close()
            raise WorkerFailure(f"the worker sent a reply that is not plain data ({exc})") from exc
        self._oom_mark = resources.oom_kills()
        return Outcome(ok=reply.ok, value=reply.value,
                       error=reply.error or ErrorInfo("", ""), output=reply.output,
                       duration=time.monotonic() - start)

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
        imported = self._ensure_started()
        if not imported.ok:
            return Pending(self, probe, None, imported)
        watch = self._watch()
        self._requests.send_bytes(Request(Op.CALL, probe=probe, params=params).encode())
        return Pending(self, probe, watch)

    def sibling(self) -> Submission:
        """Another proxy for the same file, settings and secrets: a worker of its own."""
        twin = Submission(self.path, timeout=self.timeout, device=self.device,
                          secrets=self.secrets)
        twin.scale = self.scale
        twin._failed_imports = self._failed_imports
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
        self._requests.send_bytes(Request(Op.USAGE).encode())
        seen = self._receive(self.timeout, "reporting API usage", watch).value or []
        return self._retired_usage + [u for u in seen if u not in self._retired_usage]

    def _watch(self) -> _Watch:
        """The harness's own record of the call about to be sent (see ``_Watch``)."""
        group = self.sandbox.cgroup if self.sandbox is not None else None
        events = functools.partial(cgroup.counters, self.sandbox.id) \
            if group is not None and self.sandbox is not None else None
        return _Watch(self.proc, memory_events=events, oom_since=self._oom_mark)


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


def _death(code: int | None) -> str:
    """'killed by signal SIGSEGV', 'exited with code 3', or '' (still running, or exit 0)."""
    if not code:
        return ""
    signum = _exit_signal(code)
    return f"killed by signal {_signal_name(signum)}" if signum else f"exited with code {code}"


def _exit_signal(code: int) -> int:
    """The signal that ended a worker, or 0 (its sandbox's init reports signal N as 128 + N)."""
    return -code if code < 0 else code - 128 if code > 128 else 0


class _Watch:
    """What the harness itself saw of a request, to tell afterwards whose fault a failure was.

    Only this accounting (the clock, the sandbox tree's schedstat and CPU times,
    the host's OOM counters) ever makes a failure the grader's: never what the
    worker sends, nor a signal or an exit code it could have given itself.
    """

    def __init__(self, proc: subprocess.Popen | forkserver.ForkedProcess | None,
                 memory_events: Callable[[], dict[str, int]] | None = None,
                 oom_since: dict[str, int] | None = None):
        self.proc = proc
        self.pid = proc.pid if proc is not None else None
        self.started = time.monotonic()
        #: The host's OOM counters when the worker last answered (else now).
        self.oom = oom_since if oom_since is not None else resources.oom_kills()
        #: Reads the counters of the sandbox's OWN memory cgroup, where it has one
        #: (``functools.partial(grader.sandbox.cgroup.counters, sandbox.id)``): a kill by
        #: ITS limit is the student's (``resources.memory_kill``). None: every OOM kill
        #: the host's counters show is the host's, the grader's.
        self.memory_events = memory_events
        self.own_memory = memory_events() if memory_events is not None else None
        self.usage = resources.tree_usage(self.pid)
        #: CPU seconds this call was promised (its calibrated timeout), set by ``promise``.
        self.budget: float | None = None
        try:
            self._granted = _GRANTED.setdefault(proc, [0.0])
        except TypeError:  # None, or a stand-in that cannot be weakly referenced
            self._granted = [0.0]

    def promise(self, calibrated: float) -> None:
        """Note the CPU time the call is promised; once (more time for a starved call is no
        new promise). The sum over a worker's calls is what the grader gave it."""
        if self.budget is None:
            self.budget = calibrated
            self._granted[0] += calibrated

    def timed_out(self, calibrated: float, scale: float, doing: str) -> float | WorkerFailure:
        """A wait for the reply ran out: seconds more to wait, or the failure to raise.

        ``resources.timeout_verdict`` on the tree's usage since the request: a call
        held back by other processes waits on (``resources.more_time``) until it has
        had the CPU time its timeout promises, and is the grader's limit ("time")
        only if ``resources.OVERTIME_CAP`` timeouts pass first. One that had that CPU
        time, or was sleeping or blocked, or waited for its own processes, timed out:
        the student's outcome, said plainly.
        """
        self.promise(calibrated)
        budget = self.budget if self.budget is not None else calibrated
        wall = time.monotonic() - self.started
        now = resources.tree_usage(self.pid)
        used = now - self.usage if now is not None and self.usage is not None else None
        verdict = resources.timeout_verdict(used, budget, wall, scale)
        plain = (f"timed out after {budget * scale:g} s while {doing} "
                 "(an infinite loop, or far too slow)")
        if used is None or verdict == "unknown":
            return WorkerFailure(plain)
        running = used.running / 1e9
        if verdict == "starved":
            more = resources.more_time(used, budget, wall, scale)
            if more > 0.05:
                return more
            return GraderLimit("time", f"while {doing}, the worker got {running:.1f} s of the "
                               f"{budget:g} s of CPU its timeout promises in {wall:.1f} s: it "
                               f"waited {resources.waited_for_others(used, wall):.1f} s for "
                               f"CPUs that other processes held; machine: "
                               f"{resources.describe_host()}")
        if verdict == "spent":
            busy = wall > budget * scale + 0.5
            return WorkerFailure(plain + f": it had its whole {budget:g} s of CPU time"
                                 + (f" (in {wall:.1f} s on a busy machine; the time it "
                                    "waited for a CPU did not count)" if busy else ""))
        return WorkerFailure(plain + f": it ran only {running:.1f} s of CPU in {wall:.1f} s "
                             "and spent the rest sleeping, blocked, or waiting for its own "
                             "processes (not for CPUs that other processes held)")

    def died(self, signum: int, doing: str, cpu_limit: float | None = None
             ) -> WorkerFailure | None:
        """What the worker's death by ``signum`` means, on the harness's evidence.

        A ``GraderLimit`` when the host stopped it (its OOM killer, the fork server's
        end, a CPU-time limit below what the grader gave the calls); a plain
        ``WorkerFailure`` when the evidence shows the student's code (a SIGXCPU far
        below the limit: sent to itself; its sandbox's own memory limit); None: no
        evidence either way, the caller's plain message. ``cpu_limit``: the sandbox's
        ``RLIMIT_CPU`` seconds.
        """
        if signum == resources.SIGXCPU:
            elapsed = time.monotonic() - self.started
            if cpu_limit is None or not resources.could_reach_cpu_limit(self.usage, elapsed,
                                                                        cpu_limit):
                return WorkerFailure(
                    f"your code's process was killed by signal SIGXCPU while {doing}, long "
                    f"before it could have used the sandbox's CPU-time limit: a signal it sent "
                    "itself (os.kill or libc kill), or an exit code that says so")
            granted = self._granted[0]
            if granted + STARTUP_CPU >= cpu_limit:
                return GraderLimit("cpu", f"the worker used up the sandbox's CPU-time limit "
                                   f"({cpu_limit:g} s) while {doing}, and the grader had "
                                   f"given its calls {granted:g} s of CPU in all")
            return WorkerFailure(
                f"your code used up the sandbox's CPU-time limit ({cpu_limit:g} s of CPU) "
                f"while {doing}, though all its calls together were given only {granted:g} s: "
                "code kept running beside them (busy threads or processes)")
        if signum != resources.SIGKILL:
            return None
        own_after = self.memory_events() if self.memory_events is not None else None
        kind = resources.memory_kill(self.oom, self.own_memory, own_after)
        if kind == "sandbox":
            return WorkerFailure(f"your code's process was killed for using more memory than "
                                 f"the sandbox allows while {doing}")
        if kind == "host":
            return GraderLimit("memory", f"the kernel's out-of-memory killer stopped the "
                               f"worker while {doing}; machine: {resources.describe_host()}")
        if isinstance(self.proc, forkserver.ForkedProcess) and not self.proc.server.alive():
            # A fork server takes its workers with it (PR_SET_PDEATHSIG).
            return GraderLimit("grader", f"the grader's fork server stopped while {doing}")
        return None


#: CPU seconds a worker uses of its own, beside its calls (starting, importing torch).
STARTUP_CPU = 60.0
#: CPU seconds the grader's calls were promised, per worker process (``_Watch.promise``).
_GRANTED: weakref.WeakKeyDictionary[Any, list[float]] = weakref.WeakKeyDictionary()


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


def read_loss_file(path: str | Path, max_bytes: int,
                   secrets: tuple[Path, ...] = sandbox.DEFAULT_SECRETS) -> dict[str, list[float]]:
    """A hand-in's loss histories, parsed in a fresh worker that imports no student code.

    Raises ``LossFileError`` (the student's file is unusable: the message says why) or
    ``WorkerFailure`` (the grader could not read it). The same bytes are parsed
    once per grading process: a check and the next one asking for the same file
    do not each pay for a worker's start.
    """
    import hashlib

    from grader.course.lossfile import LossFileError, check_file

    path = check_file(path, max_bytes)  # nothing odd goes near a parser, nor gets copied
    key = (hashlib.sha256(path.read_bytes()).hexdigest(), max_bytes)
    if key not in _LOSS_FILES:
        try:
            _LOSS_FILES[key] = _parse_loss_file(path, max_bytes, secrets)
        except LossFileError as exc:  # the file's own fault: the same answer next time
            _LOSS_FILES[key] = exc
    found = _LOSS_FILES[key]
    if isinstance(found, LossFileError):
        raise LossFileError(str(found))
    return {k: list(v) for k, v in found.items()}


#: Parsed loss files by (sha256 of their bytes, size limit): a dict or the LossFileError.
_LOSS_FILES: dict[tuple[str, int], Any] = {}


def _parse_loss_file(path: Path, max_bytes: int, secrets: tuple[Path, ...]
                     ) -> dict[str, list[float]]:
    from grader.course.lossfile import LossFileError

    worker = _Worker.launch(False, tuple(secrets))
    try:
        copy = worker.home / path.name
        shutil.copyfile(path, copy)
        if worker.owner is not None:
            os.chown(copy, *worker.owner)
        watch = _Watch(worker.proc)
        worker.requests.send_bytes(Request(Op.READ_LOSS_FILE, path=str(copy),
                                           params={"max_bytes": max_bytes}).encode())
        scale, wait, doing = resources.timeout_scale(), IMPORT_TIMEOUT, f"reading {path.name}"
        while not worker.replies.poll(wait * scale):  # no student code there: only the file
            more = watch.timed_out(IMPORT_TIMEOUT, scale, doing)
            if isinstance(more, GraderLimit):
                raise more
            if not isinstance(more, float):
                raise LossFileError(f"{path.name} could not be read: the grader's reader {more}; "
                                    "three lists of losses read in well under a second, so the "
                                    "file is malformed")
            wait = more / scale
        try:
            reply = Reply.decode(receive(worker.replies))
        except MessageTooLarge as exc:  # no student code ran there: the file holds too much
            raise LossFileError(f"{path.name} holds more than the grader reads back ({exc})"
                                ) from None
        except (EOFError, OSError, ProtocolError) as exc:
            code = worker.proc.wait(timeout=5) if worker.proc is not None else 0
            failure = watch.died(_exit_signal(code), doing, worker.sandbox.limits.cpu_seconds)
            if isinstance(failure, GraderLimit):  # the host's doing (OOM killer, fork server)
                raise failure from None
            raise LossFileError(f"{path.name} could not be read: the grader's reader failed on "
                                f"it ({failure or _death(code) or exc}); the file is malformed"
                                ) from None
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


# -- the workers: started cold, or one kept warm ------------------------------------------


class _Worker:
    """One sandboxed worker process, started and waiting for its import request."""

    def __init__(self, cuda: bool, secrets: tuple[Path, ...]):
        self.key = (cuda, secrets)
        self.tmp = tempfile.TemporaryDirectory(prefix="capgrade-worker-")
        os.chmod(self.tmp.name, 0o711)  # an unprivileged worker must reach its home inside
        self.home = Path(self.tmp.name) / "home"
        self.home.mkdir()
        self.sandbox = sandbox.Sandbox(self.home, secrets=secrets, cuda=cuda, own_user=True)
        ids = self.sandbox.user()
        self.owner = (ids[0], ids[1]) if ids is not None else None
        self.stderr = open(Path(self.tmp.name) / "stderr.log", "w+b")  # noqa: SIM115
        self.proc: subprocess.Popen | None = None

    @classmethod
    def launch(cls, cuda: bool, secrets: tuple[Path, ...]) -> _Worker:
        """A worker forked by this process's fork server, or (off, or it failed) a new Python."""
        worker = cls(cuda, secrets)
        req_read, req_write = os.pipe()
        rep_read, rep_write = os.pipe()
        try:
            if _forking(cuda):
                try:
                    worker.proc = worker._fork(req_read, rep_write)
                except forkserver.ForkServerError as exc:
                    _fork_failed(exc)
            if worker.proc is None:
                worker.proc = worker._exec(req_read, rep_write)
        finally:
            os.close(req_read)
            os.close(rep_write)
        worker.requests = Connection(req_write, readable=False)
        worker.replies = Connection(rep_read, writable=False)
        return worker

    def _fork(self, request: int, reply: int) -> forkserver.ForkedProcess:
        flags, options = self.sandbox.plan(forked=True)
        spec = {"env": self.sandbox.environment(), "cwd": str(self.home), "launch": options,
                "unshare": list(flags) if flags is not None else None}
        return forkserver.get().spawn(spec, [request, reply, self.stderr.fileno()])

    def _exec(self, request: int, reply: int) -> subprocess.Popen:
        command = self.sandbox.command(
            [sys.executable, "-m", "grader.worker.process", "--request-fd", str(request),
             "--reply-fd", str(reply)])
        return subprocess.Popen(
            command,
            pass_fds=(request, reply),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,  # student output is captured inside the worker
            cwd=self.home,
            env=self.sandbox.environment(),
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        if self.proc is not None:
            self.requests.close()
            self.replies.close()
            self.sandbox.kill(self.proc.pid)
            self.proc.wait()
            self.proc = None
        self.stderr.close()
        self.tmp.cleanup()


def _forking(cuda: bool) -> bool:
    """Whether workers are forked by the fork server here (else each is a new Python).

    CUDA workers start as a new Python: a fork of a process that touched CUDA
    cannot use it, and no GPU here proves the server never does.
    """
    return forkserver.enabled() and not cuda


def _fork_failed(exc: Exception) -> None:
    """This worker starts as a new Python (slower, same grades); say so, and when it is for good."""
    off = forkserver.failed()
    print(f"capgrade: the fork server failed ({str(exc)[:300]}); this worker starts as a new "
          "Python instead (slower, same grades)"
          + ("; so will all the next ones" if off else ""), file=sys.stderr)


_KEEP_WARM = False
_WARM: _Worker | None = None


def grading_secrets(hidden_expected: str | Path) -> tuple[Path, ...]:
    """What a grading worker must not see: the checkout's secrets, the hidden values, and the
    public ones too (only the harness compares; a module that read them at run time could
    hand a check its own expected answer)."""
    from grader.harness.expected import PUBLIC_PATH

    return (*sandbox.DEFAULT_SECRETS, Path(hidden_expected).resolve(), PUBLIC_PATH.resolve())


def keep_warm(enabled: bool = True) -> None:
    """Keep one worker started ahead (torch imported, no submission yet) in this process.

    For batch grading: a submission then starts in the time an import takes,
    while the next worker warms up beside it. Each worker still serves one
    submission in its own fresh sandbox. Off by default: a single check run
    would only waste the spare.
    """
    global _KEEP_WARM
    _KEEP_WARM = enabled
    if not enabled:
        discard_warm()


def discard_warm() -> None:
    """Stop the warm worker, if any (also at exit)."""
    global _WARM
    if _WARM is not None:
        _WARM.close()
        _WARM = None


def _take_warm(cuda: bool, secrets: tuple[Path, ...]) -> _Worker | None:
    global _WARM
    if _forking(cuda):
        return None  # a fork is as quick as a spare, and holds no second torch
    worker, _WARM = _WARM, None
    if worker is not None and (worker.key != (cuda, tuple(secrets)) or not worker.alive()):
        worker.close()
        worker = None
    return worker


def prepare_warm(cuda: bool, secrets: tuple[Path, ...]) -> None:
    """Start the warm worker now, for submissions graded with these settings."""
    _start_warm(cuda, secrets)


def _start_warm(cuda: bool, secrets: tuple[Path, ...]) -> None:
    global _WARM
    discard_warm()
    if _forking(cuda):
        forkserver.get()  # imports torch now, beside whatever else this process does
        return
    _WARM = _Worker.launch(cuda, tuple(secrets))


atexit.register(discard_warm)
