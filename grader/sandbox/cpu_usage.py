"""A sandbox's CPU usage as the harness reads it from /proc: its process tree's scheduler time.

Read without privileges and without touching the sandbox; ``None`` where the host
keeps no schedstat. ``grader.sandbox.resources`` judges these readings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


@dataclass(frozen=True)
class CpuUsage:
    """Scheduler time of a sandbox's process tree (ns), as the harness reads it from /proc.

    ``running``: on a CPU; ``waiting``: runnable but waiting for one (schedstat counts
    only runnable time: a sleeping or blocked task adds to neither). Both are sums
    over every task. ``busiest``: the CPU time of the one process that used most
    (``RLIMIT_CPU`` counts per process, dead threads included); ``cpus``: how many
    CPUs the tree's tasks may run on (the union of their affinity masks, capped by
    a CPU quota); 0 where unknown. A difference (``after - before``) keeps the
    later reading's ``busiest`` and ``cpus``.
    """

    running: int = 0
    waiting: int = 0
    busiest: int = 0
    cpus: float = 0.0
    #: CPU time every process on the machine used (``/proc/stat``, busy), or -1 unknown: the
    #: tree cannot have waited for others longer than others ran.
    machine: int = -1

    def __sub__(self, other: CpuUsage) -> CpuUsage:
        machine = self.machine - other.machine if min(self.machine, other.machine) >= 0 else -1
        return CpuUsage(self.running - other.running, self.waiting - other.waiting,
                        self.busiest, self.cpus, machine)


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        if current in found:
            continue
        found.append(current)
        for task in (_safe_listdir(f"/proc/{current}/task") or [str(current)]):
            todo.extend(int(c) for c in (_read(Path(f"/proc/{current}/task/{task}/children"))
                                         or "").split())
    return found


def _safe_listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _uid(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _sandbox_processes(pid: int) -> list[int]:
    """``pid``, its descendants, and every process of a sandbox's own user id.

    A sandbox's processes are its descendants where a PID namespace holds them
    (orphans go to its init). Without one, a double fork leaves the tree; where
    the sandbox runs as a uid of its own (``grader.sandbox.OWN_UIDS``) every
    process of that uid is still counted as the sandbox's, so a student's stray
    processes never count as "other processes" that starved it.
    """
    from grader.sandbox.host import OWN_UIDS

    found = _descendants(pid)
    own = {u for u in map(_uid, found) if u is not None and u in OWN_UIDS}
    if own:
        known = set(found)
        for entry in _safe_listdir("/proc"):
            if entry.isdigit() and int(entry) not in known and _uid(int(entry)) in own:
                found.append(int(entry))
    return found


def _cpu_list(text: str) -> set[int]:
    """'0-2,5' -> {0, 1, 2, 5}."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        first, _, last = part.partition("-")
        if first.isdigit() and (not last or last.isdigit()):
            cpus.update(range(int(first), int(last or first) + 1))
    return cpus


_TICK_NS = 1e9 / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)


def tree_usage(pid: int | None) -> CpuUsage | None:
    """Scheduler time of the sandbox led by ``pid`` (see ``_sandbox_processes``); None without
    schedstat.

    A process's running time is the larger of its live threads' schedstat and its own
    CPU time (dead threads included), plus what its reaped children used: a
    student's children that spin and exit before the harness looks still count.
    """
    from grader.sandbox.resources import cpu_quota

    if pid is None:
        return None
    running = waiting = busiest = 0
    allowed: set[int] = set()
    seen = False
    for process in _sandbox_processes(pid):
        threads = 0
        for task in _safe_listdir(f"/proc/{process}/task"):
            fields = (_read(Path(f"/proc/{process}/task/{task}/schedstat")) or "").split()
            if len(fields) >= 2:
                threads += int(fields[0])
                waiting += int(fields[1])
                seen = True
            for line in (_read(Path(f"/proc/{process}/task/{task}/status")) or "").splitlines():
                if line.startswith("Cpus_allowed_list:"):
                    allowed |= _cpu_list(line.split(":", 1)[1])
        stat = (_read(Path(f"/proc/{process}/stat")) or "").rpartition(")")[2].split()
        own = children = 0
        if len(stat) > 14 and all(f.isdigit() for f in stat[11:15]):
            own = int((int(stat[11]) + int(stat[12])) * _TICK_NS)
            children = int((int(stat[13]) + int(stat[14])) * _TICK_NS)
        busiest = max(busiest, own, threads)
        running += max(threads, own) + children
    if not seen:
        return None
    quota = cpu_quota()
    cpus = float(len(allowed)) if allowed else 0.0
    if cpus and quota:
        cpus = min(cpus, quota)
    return CpuUsage(running, waiting, busiest, cpus, machine_busy())


def machine_busy() -> int:
    """Nanoseconds of CPU time the whole machine has been busy since boot, or -1."""
    fields = (_read(Path("/proc/stat")) or "").split("\n", 1)[0].split()
    if len(fields) < 6 or fields[0] != "cpu" or not all(f.isdigit() for f in fields[1:]):
        return -1
    values = [int(f) for f in fields[1:]]
    return int((sum(values[:8]) - values[3] - values[4]) * _TICK_NS)
