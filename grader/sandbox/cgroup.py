"""One memory cgroup per sandbox: its processes, and the tmpfs pages they write, under one limit.

A resource limit (``RLIMIT_AS``) bounds each process alone: a submission that
forks through libc (past the worker's audit hook) gets the limit once per
child. Where the host lets the grader make cgroups (root, cgroup v1 with the
memory controller, or v2 with it delegated), every sandbox gets a group of its
own, ``capgrade-<sandbox id>``, made inside the grader's own memory cgroup so
that the grader's limits still hold above it:

- ``create`` makes it with ``memory.limit_in_bytes`` (v1; and
  ``memory.memsw.limit_in_bytes``, where swap is accounted, at the same value)
  or ``memory.max`` (v2; ``memory.swap.max`` 0), the sandbox's memory limit;
- ``join`` moves the calling process in: the sandbox's first process, on the
  host, before it enters its namespaces and drops its privileges, so every
  process of the sandbox is born inside and none can leave (the group's files
  are root's);
- ``remove`` kills whatever is still inside, keeps its final counters and
  removes the group, when the sandbox is killed.

Whose memory ran out: a kill at the *sandbox's* limit is the student's outcome
("your code used more than N GiB"); only the host or the grader's own container
running out is the grader's. ``events(sandbox_id)`` reads the group's own
counters (kept after the group is gone, for a harness that reads them after the
kill) and ``killed_by_own_limit(before, after)`` compares two readings.
``/proc/vmstat``'s ``oom_kill`` counts every kill on the machine, and v2's
``memory.events`` of the grader's group its descendants': ask this module first.

Where no group can be made, ``parent()`` says why and the sandbox records that
it has none (``Sandbox.layers``); nothing else changes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from grader.settings import SETTINGS

PREFIX = "capgrade-"
_PROBE = PREFIX + "probe-"


@dataclass(frozen=True)
class Hierarchy:
    """Where the memory controller is, and the grader's own group in it."""

    version: int  # 1 or 2
    own: Path  # the grader's own memory cgroup folder


@dataclass(frozen=True)
class MemoryEvents:
    """A sandbox group's own memory counters (compare two readings).

    ``oom_kills``: its processes killed by an out-of-memory killer, whichever
    limit ran out (its own, a parent's, the whole machine's). ``limit_hits``:
    times its *own* limit was reached (v2: ``oom`` in ``memory.events.local``,
    an out-of-memory condition in this group itself; v1, which has no such
    counter: ``failcnt`` of its memory and memory+swap limits, plus the times
    this process found its peak usage at the limit, ``_v1_hits``).
    """

    oom_kills: int
    limit_hits: int


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _unescape(field: str) -> str:
    """A mountinfo path field: spaces, tabs, newlines and backslashes come octal-escaped."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        code = field[i + 1:i + 4]
        if field[i] == "\\" and len(code) == 3 and all(c in "01234567" for c in code):
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts() -> list[tuple[str, str, str, str, str]]:
    """(root, mount point, fs type, source, super options) of each mount this process sees."""
    found = []
    for line in (_read(Path("/proc/self/mountinfo")) or "").splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        found.append((_unescape(fields[3]), _unescape(fields[4]), tail[0], _unescape(tail[1]),
                      tail[2]))
    return found


def _own_groups() -> dict[str, str]:
    groups: dict[str, str] = {}
    for line in (_read(Path("/proc/self/cgroup")) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                groups[controller] = parts[2]
    return groups


def _inside(mount_point: str, mount_root: str, group: str) -> Path:
    """The folder of ``group`` (a /proc/self/cgroup path) under a mount of ``mount_root``."""
    group, mount_root = group.rstrip("/") or "/", mount_root.rstrip("/") or "/"
    if mount_root != "/" and (group == mount_root or group.startswith(mount_root + "/")):
        group = group[len(mount_root):] or "/"
    return Path(mount_point) / group.lstrip("/")


def hierarchy() -> Hierarchy | None:
    """The memory controller's hierarchy and the grader's group in it, or None."""
    groups = _own_groups()
    for root, point, fstype, _, options in mounts():
        if fstype == "cgroup" and "memory" in options.split(",") and "memory" in groups:
            own = _inside(point, root, groups["memory"])
            if own.is_dir():
                return Hierarchy(1, own)
    for root, point, fstype, _, _ in mounts():
        if fstype == "cgroup2" and "" in groups:
            own = _inside(point, root, groups[""])
            if "memory" in (_read(Path(point) / "cgroup.controllers") or "").split() \
                    and own.is_dir():
                return Hierarchy(2, own)
    return None


def _enabled(folder: Path) -> bool:
    return "memory" in (_read(folder / "cgroup.subtree_control") or "").split()


def _v2_parent(own: Path) -> Path:
    """Where v2 sandbox groups can live: the grader's group, else beside it.

    A v2 group with processes in it cannot give its children a controller (the
    "no internal processes" rule): unless memory is already delegated below the
    grader's group, its parent (which has memory enabled, or the grader's group
    would have no memory limit files) takes the sandbox groups instead.
    """
    if _enabled(own):
        return own
    with contextlib.suppress(OSError):
        (own / "cgroup.subtree_control").write_text("+memory")
    if _enabled(own):
        return own
    if _enabled(own.parent) and (own.parent / "cgroup.procs").exists():
        return own.parent
    raise OSError(f"memory is not delegated below {own} (and it has processes)")


@functools.lru_cache(maxsize=1)
def _parent() -> tuple[Hierarchy | None, Path | None, str]:
    if not SETTINGS.sandbox_cgroup:
        return None, None, "turned off (CAPGRADE_SANDBOX_CGROUP=0)"
    found = hierarchy()
    if found is None:
        return None, None, "no memory cgroup controller on this host"
    try:
        parent = found.own if found.version == 1 else _v2_parent(found.own)
        probe = parent / f"{_PROBE}{os.getpid()}-{threading.get_ident()}"
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        return found, None, f"cannot make one ({exc.strerror or exc})"
    return found, parent, ""


def parent() -> tuple[Path | None, str]:
    """(the folder sandbox groups are made in, '') or (None, why there are none here)."""
    _, folder, why = _parent()
    return folder, why


def path(sandbox_id: str) -> Path | None:
    """Where the sandbox's group is (or would be) on this host; None without cgroups."""
    folder, _ = parent()
    return None if folder is None else folder / f"{PREFIX}{sandbox_id}"


def create(sandbox_id: str, memory: int) -> Path | None:
    """The sandbox's group, limited to ``memory`` bytes (made if it is not there yet); or None.

    None when the host gives no cgroups (``parent`` says why); OSError when it
    does but this one cannot be made or limited.
    """
    group = path(sandbox_id)
    return None if group is None else ensure(group, memory)


def ensure(group: Path, memory: int) -> Path:
    """``group`` (a folder ``path`` gave), made if it is not there, limited to ``memory`` bytes."""
    fresh = not group.is_dir()
    if fresh:
        group.mkdir()
    try:
        if (group / "memory.limit_in_bytes").exists():  # v1
            memsw = group / "memory.memsw.limit_in_bytes"  # there where swap is accounted
            try:
                (group / "memory.limit_in_bytes").write_text(str(memory))
            except OSError:  # above the memory+swap limit it had: that one first
                memsw.write_text(str(memory))
                (group / "memory.limit_in_bytes").write_text(str(memory))
            if memsw.exists():
                memsw.write_text(str(memory))
        else:
            (group / "memory.max").write_text(str(memory))
            if (group / "memory.swap.max").exists():
                (group / "memory.swap.max").write_text("0")
    except OSError:
        if fresh:
            with contextlib.suppress(OSError):
                group.rmdir()
        raise
    return group


def join(group: Path, pid: int | None = None) -> None:
    """Move ``pid`` (default: the calling process, with all its threads) into ``group``."""
    (group / "cgroup.procs").write_text(str(pid if pid is not None else os.getpid()))


def processes(sandbox_id: str) -> list[int]:
    """Host pids of the processes in the sandbox's group (none when there is no group)."""
    group = path(sandbox_id)
    text = _read(group / "cgroup.procs") if group is not None else None
    return [int(p) for p in (text or "").split()]


def limit(sandbox_id: str) -> int | None:
    """The group's memory limit in bytes, or None (no group)."""
    group = path(sandbox_id)
    if group is None:
        return None
    for name in ("memory.limit_in_bytes", "memory.max"):
        text = (_read(group / name) or "").strip()
        if text.isdigit():
            return int(text)
    return None


def _counter(text: str | None, key: str) -> int:
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


#: v1: how close to its limit a group's peak must be to count as having reached it.
AT_LIMIT = 2 << 20


@dataclass
class _Seen:
    """What this process saw of its groups that their files do not keep (one per process:
    counters are asked for by id after a group's removal; a v1 hit counts once seen)."""

    #: v1: limit hits seen by ``_events`` (a peak at the limit, then reset), by group folder.
    hits: dict[str, int] = field(default_factory=dict)
    #: Final counters of the groups removed so far, by sandbox id (the newest ones).
    final: dict[str, MemoryEvents] = field(default_factory=dict)


def _seen() -> _Seen:
    return SETTINGS.one(_Seen)


def _number(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isdigit() else None


def _v1_hits(group: Path) -> int:
    """Times a v1 group reached its own limit, as far as this process has seen.

    ``failcnt`` should count them, but some kernels leave it at 0 (6.18 does,
    measured); so the peak (``max_usage_in_bytes``, memory and memory+swap) is
    read too: one at the limit is one more hit, and is reset to the current
    usage so that the next one counts again.
    """
    hits = sum(_number(_read(group / f"memory.{n}failcnt")) or 0 for n in ("", "memsw."))
    for kind in ("", "memsw."):
        peak = _number(_read(group / f"memory.{kind}max_usage_in_bytes"))
        limit = _number(_read(group / f"memory.{kind}limit_in_bytes"))
        if peak is not None and limit is not None and peak >= limit - AT_LIMIT:
            _seen().hits[str(group)] = _seen().hits.get(str(group), 0) + 1
            for reset in ("", "memsw."):
                with contextlib.suppress(OSError):
                    (group / f"memory.{reset}max_usage_in_bytes").write_text("0")
            break
    return hits + _seen().hits.get(str(group), 0)


def _events(group: Path) -> MemoryEvents | None:
    if not group.is_dir():
        return None
    if (group / "memory.oom_control").exists():  # v1
        return MemoryEvents(_counter(_read(group / "memory.oom_control"), "oom_kill"),
                            _v1_hits(group))
    local = _read(group / "memory.events.local") or _read(group / "memory.events")
    return MemoryEvents(_counter(_read(group / "memory.events"), "oom_kill"),
                        _counter(local, "oom"))


#: How many removed groups' final counters ``_seen().final`` keeps.
_FINAL_KEPT = 4096


def events(sandbox_id: str) -> MemoryEvents | None:
    """The sandbox group's counters now, or as they were when it was removed; None: no group."""
    group = path(sandbox_id)
    now = _events(group) if group is not None else None
    return now if now is not None else _seen().final.get(sandbox_id)


def oom_kills(sandbox_id: str) -> int | None:
    """Processes of this sandbox the out-of-memory killer has killed; None without its group."""
    found = events(sandbox_id)
    return None if found is None else found.oom_kills


def killed_by_own_limit(before: MemoryEvents | None, after: MemoryEvents | None) -> bool:
    """Between the two readings, a kill at the sandbox's own limit (the student's outcome)."""
    if before is None or after is None:
        return False
    return after.oom_kills > before.oom_kills and after.limit_hits > before.limit_hits


def kill_all(sandbox_id: str, seconds: float = 10.0) -> bool:
    """SIGKILL everything in the sandbox's group until it is empty; True when it is."""
    group = path(sandbox_id)
    if group is None or not group.is_dir():
        return True
    if (group / "cgroup.kill").exists():  # v2, Linux 5.14: atomically, forks included
        with contextlib.suppress(OSError):
            (group / "cgroup.kill").write_text("1")
    deadline = time.monotonic() + seconds
    while True:
        pids = processes(sandbox_id)
        if not pids:
            return True
        if time.monotonic() > deadline:
            return False
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def remove(sandbox_id: str, seconds: float = 5.0) -> bool:
    """Kill what is left in the sandbox's group, keep its counters, remove it; True when gone."""
    group = path(sandbox_id)
    if group is None or not group.is_dir():
        return True
    kill_all(sandbox_id)
    final = _events(group)
    seen = _seen()
    seen.hits.pop(str(group), None)
    if final is not None:
        seen.final[sandbox_id] = final
        while len(seen.final) > _FINAL_KEPT:
            del seen.final[next(iter(seen.final))]
    deadline = time.monotonic() + seconds
    while True:
        try:
            group.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            kill_all(sandbox_id, 0.5)
            time.sleep(0.02)


def counters(sandbox_id: str) -> dict[str, int]:
    """``events`` as ``{"oom": limit hits, "oom_kill": kills}``, {} without a group.

    The shape ``grader.sandbox.resources.memory_kill`` compares; it still answers after
    the sandbox was killed and its group removed, with the counters the group ended with.
    """
    found = events(sandbox_id)
    return {} if found is None else {"oom": found.limit_hits, "oom_kill": found.oom_kills}
