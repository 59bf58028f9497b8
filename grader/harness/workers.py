"""TRUSTED side: where sandboxed workers come from, and when they start.

A ``WorkerSupply`` hands out workers: forked by this process's fork server, or
(where there is none: ``CAPGRADE_FORKSERVER=0``, a failed server, CUDA) a new
Python each, maybe the spare it started ahead. It is owned by whoever grades:
``grader.harness.engine.grade`` makes one per grading unless given one; a batch
pool process keeps one for all its submissions, with a spare warming
(``keep_warm``). No state lives in this module: it is all on the supply.

The scheduling policy (which workers start ahead, which trainings run side by
side, when a worker gives its memory back, the order the checks run in) is the
last section here, in one place.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import tempfile
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grader import sandbox
from grader.harness.channel import Channel
from grader.sandbox import forkserver, resources

if TYPE_CHECKING:
    from grader.harness.request import GradingRequest


class Worker:
    """One sandboxed worker process, started and waiting for its first request."""

    # Set by ``launch`` once the process runs: the pipes to it and the channel over them.
    requests: Connection
    replies: Connection
    channel: Channel

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
        self.proc: subprocess.Popen | forkserver.ForkedProcess | None = None
        #: CPU seconds the grader's calls were promised, in all (``channel.Watch.promise``).
        self.granted = [0.0]

    @classmethod
    def launch(cls, cuda: bool, secrets: tuple[Path, ...]) -> Worker:
        """A worker forked by this process's fork server, or (off, or it failed) a new Python."""
        worker = cls(cuda, secrets)
        req_read, req_write = os.pipe()
        rep_read, rep_write = os.pipe()
        try:
            if forking(cuda):
                try:
                    worker.proc = worker._fork(req_read, rep_write)
                except forkserver.ForkServerError as exc:
                    fork_failed(exc)
            if worker.proc is None:
                worker.proc = worker._exec(req_read, rep_write)
        finally:
            os.close(req_read)
            os.close(rep_write)
        worker.requests = Connection(req_write, readable=False)
        worker.replies = Connection(rep_read, writable=False)
        worker.channel = Channel(worker.requests, worker.replies, worker.proc)
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


def forking(cuda: bool) -> bool:
    """Whether workers are forked by the fork server here (else each is a new Python).

    CUDA workers start as a new Python: a fork of a process that touched CUDA
    cannot use it, and no GPU here proves the server never does.
    """
    return forkserver.enabled() and not cuda


def fork_failed(exc: Exception) -> None:
    """This worker starts as a new Python (slower, same grades); say so, and when it is for good."""
    off = forkserver.failed()
    print(f"capgrade: the fork server failed ({str(exc)[:300]}); this worker starts as a new "
          "Python instead (slower, same grades)"
          + ("; so will all the next ones" if off else ""), file=sys.stderr)


class WorkerSupply:
    """Hands out workers for one grading, or for all a grading process grades.

    ``keep_warm``: keep one worker started ahead (torch imported, no submission
    yet). For batch grading: a submission then starts in the time an import
    takes, while the next worker warms up beside it. Each worker still serves one
    submission in its own fresh sandbox. Off by default: a single check run would
    only waste the spare. With the fork server no spare is kept: a fork is as
    quick, and holds no second torch.
    """

    def __init__(self, keep_warm: bool = False):
        self.keep_warm = keep_warm
        #: The worker started ahead, not yet given a submission.
        self.spare: Worker | None = None
        #: Parsed loss files by (sha256 of their bytes, size limit): a dict or the
        #: LossFileError (``grader.harness.client.read_loss_file``).
        self.loss_files: dict[tuple[str, int], Any] = {}
        self._closed_at_exit = False

    def fresh(self, cuda: bool, secrets: tuple[Path, ...]) -> Worker:
        """A worker started now (forked, or a new Python): never the spare."""
        return Worker.launch(cuda, tuple(secrets))

    def ahead(self, cuda: bool, secrets: tuple[Path, ...]) -> Worker | None:
        """A worker for a check to come (None with the fork server: started now, it
        forks in milliseconds when a check asks)."""
        if forking(cuda):
            forkserver.get()
            return None
        return self._take_spare(cuda, secrets) or self.fresh(cuda, secrets)

    def take(self, launched: Worker | None, cuda: bool, secrets: tuple[Path, ...]) -> Worker:
        """The worker for a submission: ``launched`` (started ahead for it, if still alive),
        or the spare, or a fresh one; with ``keep_warm``, the next spare starts now."""
        worker = launched if launched is not None and launched.alive() else \
            self._take_spare(cuda, secrets) or self.fresh(cuda, secrets)
        if self.keep_warm:
            self.prepare(cuda, secrets)  # warms up while this one is graded
        return worker

    def prepare(self, cuda: bool, secrets: tuple[Path, ...]) -> None:
        """Start the spare now, for submissions graded with these settings (with the fork
        server: the server, which imports torch beside whatever else this process does)."""
        self.discard_spare()
        if forking(cuda):
            forkserver.get()
            return
        self.spare = Worker.launch(cuda, tuple(secrets))
        if not self._closed_at_exit:
            atexit.register(self.discard_spare)
            self._closed_at_exit = True

    def _take_spare(self, cuda: bool, secrets: tuple[Path, ...]) -> Worker | None:
        if forking(cuda):
            return None  # a fork is as quick as a spare, and holds no second torch
        worker, self.spare = self.spare, None
        if worker is not None and (worker.key != (cuda, tuple(secrets)) or not worker.alive()):
            worker.close()
            worker = None
        return worker

    def discard_spare(self) -> None:
        """Stop the spare, if any (also at exit)."""
        if self.spare is not None:
            self.spare.close()
            self.spare = None

    def close(self) -> None:
        """Stop the spare and keep no spare from now on."""
        self.keep_warm = False
        self.discard_spare()


# -- the scheduling policy: what starts when, and what runs beside what -------------------


def launch_ahead(request: GradingRequest) -> bool:
    """Whether the check worker starts before pytest collects the catalogue (its start,
    Python and torch, then overlaps the harness's own).

    Never beside a notebook kernel or a loss-file reader: each holds its own torch,
    and two do not fit in a small grading container (Gradescope's default is 768 MB).
    """
    return not (runs_notebook(request) or request.slow)


def runs_notebook(request: GradingRequest) -> bool:
    """Whether the notebook checks may run (they execute the notebook in a kernel)."""
    return request.notebook or "notebook" in request.groups or "notebook" in (request.only or "")


def phase(fixtures: list[str] | tuple[str, ...], group: str) -> int:
    """When a check runs: one torch in memory at a time (a small grading container fits
    only one).

    First the checks that call no student code (the loss file's, read in a worker
    of their own), then the notebook, whose kernel must not run beside a check
    worker, then the rest; the rules last: they are judged from the verdicts of the
    checks before them.
    """
    if "submission" not in fixtures:
        return 0
    if group == "notebook":
        return 1
    return 3 if "verdicts" in fixtures else 2


def side_by_side(trainings: int, device: str) -> bool:
    """Whether the overfit trainings all start at once, each in a worker of its own: where
    the run has the cores (``resources.parallel_trainings``), never on a GPU."""
    return resources.parallel_trainings() > 1 and trainings > 1 and not device.startswith("cuda")


def retire_between_phases() -> bool:
    """Whether a worker gives its memory back before the next one starts (the function
    checks' worker before a training, the training's before its verifier): under a
    tight memory limit (``resources.memory_tight``)."""
    return resources.memory_tight()
