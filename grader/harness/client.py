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
import os
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from grader import sandbox
from grader.harness.outcome import GraderLimit, Outcome, WorkerFailure
from grader.protocol import ErrorInfo, Op, ProtocolError, Reply, Request
from grader.sandbox import forkserver, resources

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
        self.restarts = 0
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
        try:
            watch = _Watch(self.proc)
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
        return self.import_outcome

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
        """The reply to the request just sent, waiting ``timeout`` calibrated seconds."""
        start = time.monotonic()
        assert self.proc is not None
        try:
            ready = self._replies.poll(timeout * self.scale)
            data = self._replies.recv_bytes() if ready else None
        except (EOFError, OSError):
            data = b""
        if data is None:
            limit = watch.timed_out(timeout, self.scale, doing)
            self.close()
            if limit is not None:
                raise limit
            raise WorkerFailure(f"timed out after {timeout * self.scale:g} s while {doing} "
                                "(an infinite loop, or far too slow)")
        if not data:
            code = self.proc.wait(timeout=5)
            signum = _exit_signal(code)
            detail = f"killed by signal {signum}" if signum else f"exited with code {code}"
            tail = self._stderr_tail()
            self.close()
            limit = watch.died(signum, doing)
            if limit is not None:
                raise limit
            raise WorkerFailure(f"the worker process {detail} while {doing} "
                                "(sys.exit/os._exit or a crash)"
                                + (f"; its last words: {tail}" if tail else ""))
        try:
            reply = Reply.decode(data)
        except ProtocolError as exc:
            self.close()
            raise WorkerFailure(f"the worker sent a reply that is not plain data ({exc})") from exc
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
        if self.import_outcome is not None and not self.import_outcome.ok:
            return self.import_outcome  # an import that failed once is not retried
        if self.proc is None or self.proc.poll() is not None:
            if self.import_outcome is not None:
                self.restarts += 1
            return self.start()
        assert self.import_outcome is not None
        return self.import_outcome

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
        watch = _Watch(self.proc)
        self._requests.send_bytes(Request(Op.CALL, probe=probe, params=params).encode())
        return Pending(self, probe, watch)

    def sibling(self) -> Submission:
        """Another proxy for the same file, settings and secrets: a worker of its own."""
        twin = Submission(self.path, timeout=self.timeout, device=self.device,
                          secrets=self.secrets)
        twin.scale = self.scale
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
        watch = _Watch(self.proc)
        self._requests.send_bytes(Request(Op.USAGE).encode())
        return self._receive(self.timeout, "reporting API usage", watch).value or []


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


def _exit_signal(code: int) -> int:
    """The signal that ended a worker, or 0 (its sandbox's init reports signal N as 128 + N)."""
    return -code if code < 0 else code - 128 if code > 128 else 0


class _Watch:
    """What the host said before a request, to tell afterwards whose fault a failure was."""

    def __init__(self, proc: subprocess.Popen | forkserver.ForkedProcess | None):
        self.proc = proc
        self.pid = proc.pid if proc is not None else None
        self.oom = resources.oom_kills()
        self.usage = resources.tree_usage(self.pid)

    def timed_out(self, calibrated: float, scale: float, doing: str) -> GraderLimit | None:
        """A GraderLimit when the worker was starved of CPU rather than slow itself."""
        now = resources.tree_usage(self.pid)
        if now is None or self.usage is None:
            return None
        used = now - self.usage
        if not resources.starved(used, calibrated):
            return None
        return GraderLimit("time", f"while {doing}, the worker got {used.running / 1e9:.1f} s "
                           f"of CPU in {calibrated * scale:g} s and waited "
                           f"{used.waiting / 1e9:.1f} s for one; machine: "
                           f"{resources.describe_host()}")

    def died(self, signum: int, doing: str) -> GraderLimit | None:
        """A GraderLimit when the host killed the worker: out of memory or CPU time."""
        if signum == resources.SIGXCPU:
            return GraderLimit("cpu", f"the worker used up the sandbox's CPU-time limit while "
                               f"{doing}")
        if signum != resources.SIGKILL:
            return None
        if resources.killed_for_memory(self.oom):
            return GraderLimit("memory", f"the kernel's out-of-memory killer stopped the "
                               f"worker while {doing}; machine: {resources.describe_host()}")
        if isinstance(self.proc, forkserver.ForkedProcess) and not self.proc.server.alive():
            # A fork server takes its workers with it (PR_SET_PDEATHSIG).
            return GraderLimit("grader", f"the grader's fork server stopped while {doing}")
        return None


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
        scale = resources.timeout_scale()
        if not worker.replies.poll(IMPORT_TIMEOUT * scale):
            raise watch.timed_out(IMPORT_TIMEOUT, scale, f"reading {path.name}") or \
                WorkerFailure(f"timed out after {IMPORT_TIMEOUT * scale:g} s reading {path.name}")
        try:
            reply = Reply.decode(worker.replies.recv_bytes())
        except (EOFError, OSError, ProtocolError) as exc:
            code = worker.proc.wait(timeout=5) if worker.proc is not None else 0
            raise watch.died(_exit_signal(code), f"reading {path.name}") or WorkerFailure(
                f"the worker reading {path.name} failed ({exc})") from None
    finally:
        worker.close()
    if reply.ok and isinstance(reply.value, dict):
        return reply.value
    error = reply.error or ErrorInfo("", "")
    if error.type == "LossFileError":
        raise LossFileError(error.message)
    raise WorkerFailure(f"reading {path.name} failed in the grader ({error.type}: "
                        f"{error.message})")


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
