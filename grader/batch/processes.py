"""The batch's processes: stopping a pool process cleanly, and finding and killing every
process below the coordinator (Linux ``/proc``), so no process a batch started outlives it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from typing import Any


def _stop_on_terminate() -> None:
    """In a pool process: Ctrl-C is the coordinator's to handle; SIGTERM (the coordinator
    stopping the batch) kills this process's sandboxes and fork server, then exits.

    Ctrl-C reaches the terminal's whole process group; a grading process that took it as
    its own KeyboardInterrupt would report it as the submission's result and go on
    grading. A no-op handler (not SIG_IGN) is reset to the default in every program this
    process starts, so the students' code still sees an ordinary SIGINT.
    """
    from grader import sandbox
    from grader.sandbox import forkserver

    def stop(signum: int, frame: Any) -> None:
        import threading

        from grader.batch.grading import process_workers

        # A cleanup stuck on a lock the interrupted code holds must not keep us alive.
        threading.Timer(3.0, os._exit, (128 + signum,)).start()
        for cleanup in (sandbox.kill_all_started, process_workers().close, forkserver.shutdown):
            with contextlib.suppress(Exception):  # best effort: the coordinator kills the rest
                cleanup()
        os._exit(128 + signum)

    signal.signal(signal.SIGINT, lambda signum, frame: None)
    signal.signal(signal.SIGTERM, stop)


PR_SET_CHILD_SUBREAPER = 36


def _subreaper(on: bool) -> None:
    """Linux: orphans of our descendants (a fork server whose pool process was killed) are
    re-parented to this process, not to init, so an interrupt can find and kill them."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) of every process /proc shows."""
    table = {}
    for name in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        table[int(name)] = (int(fields[1]), fields[0])
    return table


def descendants(pid: int | None = None) -> set[int]:
    """Every live (not zombie) process below ``pid`` (default: this process), by /proc."""
    pid = os.getpid() if pid is None else pid
    table = _process_table()
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, _) in table.items():
            if ppid == parent and child not in found:
                found.add(child)
                frontier.append(child)
    return {p for p in found if table[p][1] != "Z"}


def kill_descendants(grace: float = 5.0, spare: frozenset[int] = frozenset()) -> None:
    """SIGKILL every process below this one until none is left (or ``grace`` runs out);
    reap the ones that are our children. Orphans come back to us (``_subreaper``)."""
    deadline = time.monotonic() + grace
    killed: set[int] = set()
    while time.monotonic() < deadline:
        pids = descendants() - spare
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except OSError:
                pass
        time.sleep(0.05)
    for pid in killed:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
