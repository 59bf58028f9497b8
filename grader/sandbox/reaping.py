"""Ending sandboxes: killing their processes, and the registry of those this process started.

The registry (``started()``) is process-wide on purpose: what a sandbox planned
on the host (a home's tmpfs, a cgroup) must be undone at exit even when no
object that planned it is left (``release_all_started``, registered with
``atexit``), the emergency stop (``kill_all_started``) needs every id, and tests
look there for leftovers.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from grader.sandbox.environment import SANDBOX_ID_VAR
from grader.sandbox.home_tmpfs import _home_mounts, release_home
from grader.settings import SETTINGS


class StartedSandboxes:
    """(id, home) of the sandboxes this process created, oldest first (one holder per process).

    A read-only sequence to its readers (``len``, index, slice, iteration);
    ``Sandbox`` adds itself when it is made.
    """

    def __init__(self) -> None:
        self._entries: list[tuple[str, Path]] = []

    def add(self, sandbox_id: str, home: Path) -> None:
        self._entries.append((sandbox_id, home))

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index):
        return self._entries[index]

    def __iter__(self) -> Iterator[tuple[str, Path]]:
        return iter(list(self._entries))


def started() -> StartedSandboxes:
    """(id, home) of the sandboxes this process created: tests look for their leftovers."""
    return SETTINGS.one(StartedSandboxes)


def kill_all_started() -> None:
    """SIGKILL every process of every sandbox this process started (an emergency stop).

    Their homes' tmpfs and cgroups go too (nothing is copied back).
    """
    _kill_carrying({i for i, _ in started()})
    release_all_started()


def release_all_started() -> None:
    """Kill what is left of every sandbox this process planned, unmount homes, remove cgroups.

    At exit (and in ``kill_all_started``): a sandbox planned and never killed (a
    start that failed, a caller that only wanted the layers) must not leave a
    mounted tmpfs or a cgroup behind.
    """
    from grader.sandbox import cgroup

    mounted = _home_mounts()
    for sandbox_id, home in list(started()):
        group = cgroup.path(sandbox_id)
        if group is not None and group.is_dir():
            cgroup.remove(sandbox_id)
        if os.path.realpath(home) in mounted:
            with contextlib.suppress(OSError):
                release_home(home, keep=False)


atexit.register(release_all_started)


def _kill_carrying(ids: set[str]) -> None:
    """SIGKILL every process whose environment carries one of these sandbox ids."""
    markers = {f"{SANDBOX_ID_VAR}={i}".encode() for i in ids}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") and markers else []:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                found = bool(markers & set(f.read().split(b"\0")))
        except OSError:
            continue
        if found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry), signal.SIGKILL)



def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _wait_dead(pids: list[int], seconds: float) -> None:
    """Until each of ``pids`` is a zombie or gone (a dead init's namespace is empty)."""
    deadline = time.monotonic() + seconds
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                break
            if state in ("Z", "X"):
                break
            time.sleep(0.02)


def kill_group(pid: int | None) -> None:
    """SIGKILL the process group led by ``pid`` (started with start_new_session)."""
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
