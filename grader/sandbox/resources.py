"""What the host gives a grading run, and whether it ran out: memory, CPU share, OOM kills.

The grader's limits must never cost a student points. A sandboxed process
killed by the kernel's out-of-memory killer, kept waiting for a CPU by a
quota, or stopped by the CPU-time limit failed because of the machine it was
graded on, not because of its code. This module reads what Linux exposes to
tell those apart (cgroup v1 and v2, with or without a cgroup namespace, as
in Docker; ``/proc``), and answers ``None`` where the host does not say.
Reading these files never needs torch or privileges.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: Exit signals of a sandboxed process that mean the host's limits, not the student's code.
SIGKILL = int(signal.SIGKILL)
SIGXCPU = int(getattr(signal, "SIGXCPU", 24))


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _own_cgroups() -> dict[str, str]:
    """controller -> this process's cgroup path ('' key: the v2 unified hierarchy)."""
    groups: dict[str, str] = {}
    for line in (_read(Path("/proc/self/cgroup")) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                groups[controller] = parts[2]
    return groups


def _chain(controller: str) -> list[Path]:
    """The cgroup folders whose limits apply to this process, innermost first.

    Under a cgroup namespace (Docker) the process's own group is the mount's
    root, so the root folder is always included.
    """
    groups = _own_cgroups()
    if controller in groups:
        base, relative = CGROUP_ROOT / controller, groups[controller]
    elif "" in groups:
        base, relative = CGROUP_ROOT, groups[""]
    else:
        return []
    if not base.is_dir():
        return []
    folders, path = [], Path(relative.lstrip("/"))
    while True:
        folder = base / path
        if folder.is_dir():
            folders.append(folder)
        if path == Path("."):
            break
        path = path.parent
    return folders


def _number(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.split()[0] if text.split() else ""
    return int(text) if text.isdigit() else None


def memory_limit() -> int | None:
    """Bytes of memory this process's cgroups allow (the smallest), or None when unlimited."""
    limits = []
    for folder in _chain("memory"):
        for name in ("memory.limit_in_bytes", "memory.max"):
            value = _number(_read(folder / name))
            if value is not None and value < 1 << 60:  # v1 writes "unlimited" as ~2**63
                limits.append(value)
    return min(limits) if limits else None


def cpu_quota() -> float | None:
    """CPUs this process's cgroups allow (quota / period, the smallest), or None."""
    quotas = []
    for folder in _chain("cpu"):
        quota = _number(_read(folder / "cpu.cfs_quota_us"))
        period = _number(_read(folder / "cpu.cfs_period_us"))
        if quota is None:  # v2: "max 100000" or "50000 100000"
            fields = (_read(folder / "cpu.max") or "").split()
            if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
                quota, period = int(fields[0]), int(fields[1])
        if quota and period:
            quotas.append(quota / period)
    return min(quotas) if quotas else None


def available_cpus() -> float:
    """The CPUs a grading run can use: the affinity mask, capped by a cgroup quota."""
    try:
        cores = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cores = float(os.cpu_count() or 1)
    quota = cpu_quota()
    return min(cores, quota) if quota else cores


def parallel_trainings() -> int:
    """How many of the grader's own trainings (the overfit checks) may run at once.

    A single submission's run has the machine's cores to itself: its trainings
    run side by side, one thread and one sandboxed worker each (threads would
    not do: OpenMP's spin-waiting turns two such runs on one machine into
    timeouts). Batch grading sets ``CAPGRADE_PARALLEL_TRAININGS=1``: there the
    submissions themselves run side by side. A cgroup's CPU quota counts
    (Gradescope's half CPU: one at a time), and so does its memory: each
    training's worker holds its own copy of what it touches, which a 1 GiB
    container cannot hold three times beside the fork server (measured: two
    out-of-memory kills), so under ``SIDE_BY_SIDE_MEMORY`` they run in turn.
    """
    value = os.environ.get("CAPGRADE_PARALLEL_TRAININGS")
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            pass
    limit = memory_limit()
    if limit is not None and limit < SIDE_BY_SIDE_MEMORY:
        return 1
    return max(1, min(3, int(available_cpus())))


#: The memory limit under which a run's trainings go one at a time.
SIDE_BY_SIDE_MEMORY = 4 << 30


def timeout_scale() -> float:
    """How much longer than calibrated a timeout should be here (2 at half a CPU).

    Timeouts are calibrated on at least one full core; on a fractional quota
    (Gradescope's default is half a CPU) the same work takes proportionally
    longer, and timing it out would blame the student for the machine.
    """
    return max(1.0, 1.0 / max(available_cpus(), 0.05))


def oom_kills() -> dict[str, int]:
    """Every out-of-memory-kill counter this host lets us read (compare two readings)."""
    counters: dict[str, int] = {}
    for line in (_read(Path("/proc/vmstat")) or "").splitlines():
        if line.startswith("oom_kill "):
            counters["vmstat"] = int(line.split()[1])
    for folder in _chain("memory"):
        for name in ("memory.oom_control", "memory.events"):
            for line in (_read(folder / name) or "").splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and value.strip().isdigit():
                    counters[f"{folder}/{name}"] = int(value)
    return counters


def ran_out_of_memory(before: dict[str, int], after: dict[str, int] | None = None) -> bool | None:
    """Whether an OOM kill happened between two readings; None when the host shows none."""
    after = oom_kills() if after is None else after
    shared = set(before) & set(after)
    if not shared:
        return None
    return any(after[k] > before[k] for k in shared)


def killed_for_memory(before: dict[str, int]) -> bool:
    """Whether a SIGKILL since ``before`` was most likely the out-of-memory killer's.

    Yes when an OOM-kill counter went up; where the host shows no counter, yes
    under a memory limit (the only SIGKILL the grader does not send itself there).
    """
    found = ran_out_of_memory(before)
    return found if found is not None else memory_limit() is not None


@dataclass(frozen=True)
class CpuUsage:
    """Scheduler time of a process tree: on a CPU, and runnable but waiting for one (ns)."""

    running: int = 0
    waiting: int = 0

    def __sub__(self, other: CpuUsage) -> CpuUsage:
        return CpuUsage(self.running - other.running, self.waiting - other.waiting)


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
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


def tree_usage(pid: int | None) -> CpuUsage | None:
    """Scheduler time of ``pid``, its threads and descendants; None without schedstat."""
    if pid is None:
        return None
    running = waiting = 0
    seen = False
    for process in _descendants(pid):
        for task in _safe_listdir(f"/proc/{process}/task"):
            fields = (_read(Path(f"/proc/{process}/task/{task}/schedstat")) or "").split()
            if len(fields) >= 2:
                running += int(fields[0])
                waiting += int(fields[1])
                seen = True
    return CpuUsage(running, waiting) if seen else None


def starved(usage: CpuUsage | None, calibrated: float) -> bool:
    """Whether a timed-out call was held back by the machine rather than by its code.

    True when it spent more time waiting for a CPU than on one, and less time
    on one than the calibrated timeout: it never got the CPU time the timeout
    promises. A loop that ran (or code that sleeps, or is blocked) is not.
    """
    if usage is None:
        return False
    return usage.waiting > usage.running and usage.running < calibrated * 1e9


def describe_host() -> str:
    """'768 MiB of memory, 0.5 CPU': the limits a grading run found, for messages."""
    limit = memory_limit()
    memory = f"{limit / 2**20:.0f} MiB of memory" if limit else "no memory limit"
    cpus = available_cpus()
    return f"{memory}, {cpus:g} CPU"
