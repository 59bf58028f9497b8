"""TRUSTED side: one request and its reply over a worker's pipes, watched by the harness.

``Channel.reply`` is the one loop that waits for a reply: under the calibrated
timeout, waiting on for a call that other processes starved (``Watch.timed_out``),
and ending in a decoded ``Reply`` or one of the ``Ended`` exceptions below, which
say how it ended without deciding whose fault that was: the caller does, with its
``Watch`` (the student's check worker and the grader's loss-file reader read the
same evidence differently).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from grader.harness.outcome import GraderLimit, WorkerFailure
from grader.protocol import MessageTooLarge, ProtocolError, Reply, Request, receive
from grader.sandbox import forkserver, resources

#: CPU seconds a worker uses of its own, beside its calls (starting, importing torch).
STARTUP_CPU = 60.0


class Ended(Exception):
    """The wait for a reply ended without one."""


class TimedOut(Ended):
    """No reply in the time the watch allows: ``failure`` is its verdict (maybe a GraderLimit)."""

    def __init__(self, failure: WorkerFailure):
        super().__init__(str(failure))
        self.failure = failure


class Died(Ended):
    """The pipe closed: the worker is gone, with exit status ``code``."""

    def __init__(self, code: int, cause: BaseException | None):
        super().__init__(f"exit status {code}")
        self.code, self.signum, self.cause = code, exit_signal(code), cause


class TooLarge(Ended):
    """The reply is over a cap of ``grader.protocol.WIRE`` (the pipe is unusable now)."""

    def __init__(self, cause: MessageTooLarge):
        super().__init__(str(cause))
        self.cause = cause


class Garbled(Ended):
    """A reply came that is not plain data."""

    def __init__(self, cause: ProtocolError):
        super().__init__(str(cause))
        self.cause = cause


class Channel:
    """A worker's request and reply pipes, and the process at their other end."""

    def __init__(self, requests: Connection, replies: Connection,
                 proc: subprocess.Popen | forkserver.ForkedProcess):
        self.requests, self.replies, self.proc = requests, replies, proc
        #: When the last wait for a reply began (a starved call's wait begins again).
        self.since = time.monotonic()

    def send(self, request: Request) -> None:
        self.requests.send_bytes(request.encode())

    def reply(self, timeout: float, scale: float, doing: str, watch: Watch) -> Reply:
        """The reply to the request just sent, waiting ``timeout`` calibrated seconds.

        A call starved by other processes is waited for longer (``Watch.timed_out``).
        Raises ``TimedOut``, ``Died``, ``TooLarge`` or ``Garbled``.
        """
        wait = timeout
        while True:
            self.since = time.monotonic()
            cause: BaseException | None = None
            try:
                ready = self.replies.poll(wait * scale)
                data = receive(self.replies) if ready else None  # refused unread past the cap
            except MessageTooLarge as exc:
                raise TooLarge(exc) from None
            except (EOFError, OSError) as exc:
                data, cause = b"", exc
            if data is None:
                more = watch.timed_out(wait, scale, doing)
                if isinstance(more, float):  # starved by other processes: its CPU time is due
                    wait = more / scale
                    continue
                raise TimedOut(more)
            if not data:
                raise Died(self.proc.wait(timeout=5), cause)
            try:
                return Reply.decode(data)
            except MessageTooLarge as exc:
                raise TooLarge(exc) from None
            except ProtocolError as exc:
                raise Garbled(exc) from None


def death(code: int | None) -> str:
    """'killed by signal SIGSEGV', 'exited with code 3', or '' (still running, or exit 0)."""
    if not code:
        return ""
    signum = exit_signal(code)
    return f"killed by signal {signal_name(signum)}" if signum else f"exited with code {code}"


def exit_signal(code: int) -> int:
    """The signal that ended a worker, or 0 (its sandbox's init reports signal N as 128 + N)."""
    return -code if code < 0 else code - 128 if code > 128 else 0


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


class Watch:
    """What the harness itself saw of a request, to tell afterwards whose fault a failure was.

    Only this accounting (the clock, the sandbox tree's schedstat and CPU times,
    the host's OOM counters) ever makes a failure the grader's: never what the
    worker sends, nor a signal or an exit code it could have given itself.
    """

    def __init__(self, proc: Any, memory_events: Callable[[], dict[str, int]] | None = None,
                 oom_since: dict[str, int] | None = None, granted: list[float] | None = None):
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
        #: CPU seconds the grader's calls were promised in all: the worker's own ledger
        #: (``Worker.granted``), shared by the watches of all its calls.
        self._granted = granted if granted is not None else [0.0]

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
