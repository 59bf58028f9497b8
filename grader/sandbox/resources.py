"""What the host gives a grading run, and whether it ran out: memory, CPU share, OOM kills.

The grader's limits must never cost a student points. A sandboxed process
killed by the host's out-of-memory killer, or kept from the CPU time its
timeout promises by other processes, failed because of the machine it was
graded on, not because of its code. But only the harness's own accounting says
so: a signal the student's code can send itself (SIGXCPU), waiting for the
sandbox's own processes, sleeping, or a call that spins whenever it runs are
the student's. This module reads what Linux exposes to tell those apart
(cgroup v1 and v2, with or without a cgroup namespace, as in Docker; ``/proc``:
schedstat, stat) and decides (``timeout_verdict``, ``could_reach_cpu_limit``,
``memory_kill``); it answers ``None`` where the host does not say. Reading these
files never needs torch or privileges.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from grader.sandbox.cpu_usage import CpuUsage, _read
from grader.sandbox.cpu_usage import tree_usage as tree_usage  # read as resources.tree_usage
from grader.settings import SETTINGS

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: Exit signals of a sandboxed process that may mean the host's limits (never on their own).
SIGKILL = int(signal.SIGKILL)
SIGXCPU = int(getattr(signal, "SIGXCPU", 24))


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
    if SETTINGS.parallel_trainings is not None:
        return SETTINGS.parallel_trainings
    if memory_tight():
        return 1
    return max(1, min(3, int(available_cpus())))


def memory_tight() -> bool:
    """Whether this run's memory limit holds only one training's worker at a time
    (``SIDE_BY_SIDE_MEMORY``): then the overfit checks also free the function checks'
    worker before a training and before its verification (measured in a 1 GiB
    container: that worker, at ~500 MB after a training, beside the verifier's,
    was killed for memory)."""
    limit = memory_limit()
    return limit is not None and limit < SIDE_BY_SIDE_MEMORY


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


def memory_kill(before: dict[str, int], own_before: dict[str, int] | None = None,
                own_after: dict[str, int] | None = None) -> str | None:
    """Whose out-of-memory kill a SIGKILL since ``before`` (``oom_kills()``) was.

    ``own_before``/``own_after``: the counters of the sandbox's OWN memory cgroup
    before the call and after the kill, as ``grader.sandbox.cgroup.counters`` gives
    them (``{"oom": times its own limit was reached, "oom_kill": its processes
    killed}``). Its own limit reached and one of its processes killed: the student's
    code used more memory than the sandbox allows, "sandbox" (note that the host's
    counters, ``/proc/vmstat`` and the grader's own groups, count that kill too).
    Any other OOM kill (the host's or the grading container's killer; or, where the
    host shows no counter, any SIGKILL under a memory limit) is the grader's:
    "host". None: not a memory kill.
    """
    if own_before is not None and own_after is not None:
        hit = own_after.get("oom", 0) > own_before.get("oom", 0)
        killed = own_after.get("oom_kill", 0) > own_before.get("oom_kill", 0)
        if hit and (killed or "oom_kill" not in own_after):
            return "sandbox"
    return "host" if killed_for_memory(before) else None


# -- whose fault a timeout was ------------------------------------------------------------

#: A call that got all but this share of its CPU budget used it up (the spin loop's reply
#: races the harness's reading by a few milliseconds).
SPENT_SLACK = 0.03
#: A timed-out call counts as held back by the machine only when, for at least this share
#: of the time, it was running or waiting for a CPU that other processes held (not
#: sleeping, not blocked, not waiting for its own processes).
RUNNABLE_SHARE = 0.75
#: How long a starved call may wait in all, in multiples of its timeout, for the CPU time
#: its timeout promises; past that it is the grader's limit ("time").
OVERTIME_CAP = 4.0


def waited_for_others(used: CpuUsage, wall: float) -> float:
    """Seconds the tree waited for a CPU while it did not use all the CPUs it may run on.

    The tree's own tasks, runnable together on fewer CPUs than there are tasks (four
    busy children pinned to one CPU), wait for each other: that waiting is not the
    machine's doing. It can only be the machine's up to the CPU capacity the tree left
    unused in ``wall`` seconds: ``cpus * wall - running``, and no more than the other
    processes of the machine actually ran (``CpuUsage.machine``): a fork bomb's hundreds
    of tasks queue for CPUs while the machine sits idle, which is not starvation.
    """
    cpus = used.cpus or available_cpus()
    unused = max(0.0, cpus * wall - used.running / 1e9)
    if used.machine >= 0:  # what every other process ran: the most it could have held back
        unused = min(unused, max(0.0, (used.machine - used.running) / 1e9))
    return max(0.0, min(used.waiting / 1e9, unused))


def timeout_verdict(used: CpuUsage | None, budget: float, wall: float | None = None,
                    scale: float = 1.0) -> str:
    """What a call still running after ``wall`` seconds came to, by the harness's accounting.

    ``budget`` is the CPU time its timeout promises (the calibrated timeout, seconds
    on a full core); ``scale`` is ``timeout_scale()`` (``wall`` defaults to the
    timeout, ``budget * scale``); ``used`` the tree's usage since the call was sent.

    - ``"spent"``: it had its whole CPU budget and did not finish: the student's timeout.
    - ``"idle"``: it was not runnable for much of the time (sleeping, blocked, waiting
      only for its own processes): even every CPU second it waited for would not have
      made up its budget. The student's timeout.
    - ``"starved"``: other processes held the CPUs it waited for: give it more time
      (up to ``OVERTIME_CAP`` timeouts); still short of its budget then, the grader's.
    - ``"unknown"``: the host does not say (no schedstat): a plain timeout, as ever.
    """
    if used is None:
        return "unknown"
    wall = budget * scale if wall is None else wall
    running = used.running / 1e9
    if running >= budget * (1 - SPENT_SLACK):
        return "spent"
    entitled = wall / max(scale, 1.0)  # the CPU seconds one full core gives in ``wall``
    if running + waited_for_others(used, wall) < RUNNABLE_SHARE * entitled:
        return "idle"
    return "starved"


def starved(usage: CpuUsage | None, calibrated: float, wall: float | None = None,
            scale: float = 1.0) -> bool:
    """Whether a timed-out call that cannot be given more time (a notebook cell) was held
    back by other processes (``timeout_verdict``) from more than a tenth of its budget."""
    return timeout_verdict(usage, calibrated, wall, scale) == "starved" and \
        usage is not None and usage.running < 0.9 * calibrated * 1e9


def more_time(used: CpuUsage, budget: float, wall: float, scale: float = 1.0) -> float:
    """Seconds more a starved call should get: what its budget still needs at its CPU share
    so far (with a margin), at least half a second or a twentieth of its timeout, never
    past ``OVERTIME_CAP`` timeouts in all (0 there)."""
    running = used.running / 1e9
    share = max(running / max(wall, 1e-3), 0.02)
    need = 1.1 * (budget - running) / share + 0.2
    return max(0.0, min(max(need, 0.5, 0.05 * budget * scale),
                        OVERTIME_CAP * budget * scale - wall))


# -- whose fault a kill was ---------------------------------------------------------------


def could_reach_cpu_limit(before: CpuUsage | None, elapsed: float, limit: float) -> bool:
    """Whether one of the tree's processes can have used ``limit`` CPU seconds by now.

    ``RLIMIT_CPU`` sends SIGXCPU when a process's own CPU time reaches it. Read
    ``elapsed`` seconds ago, the busiest process had used ``before.busiest``; since
    then it cannot have gained more than ``elapsed`` seconds per CPU it could use (its
    affinity then, or all this run may use: it may widen its affinity). Below that, a
    SIGXCPU was not the limit's: the process sent it itself (``os.kill``, libc
    ``kill``), or one of its own processes did. No reading: nothing shows the limit
    was reached (False).
    """
    if before is None:
        return False
    cpus = max(before.cpus, available_cpus(), 1.0)
    return before.busiest / 1e9 + elapsed * cpus >= limit


def describe_host() -> str:
    """'768 MiB of memory, 0.5 CPU': the limits a grading run found, for messages."""
    limit = memory_limit()
    memory = f"{limit / 2**20:.0f} MiB of memory" if limit else "no memory limit"
    cpus = available_cpus()
    return f"{memory}, {cpus:g} CPU"
