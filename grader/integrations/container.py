"""Run a command under a grading container's limits: memory, a CPU quota, no namespaces.

Gradescope's default autograder container has 768 MB and half a CPU, and its
Docker refuses the namespaces capgrade's sandbox would use. A trial run under
the same limits (``capgrade gradescope --trial SUB --memory 768M --cpus 0.5``)
tells an instructor before the deadline which setting the assignment needs.
The limits are a fresh cgroup (v1 or v2), which needs root; where the host
does not allow one, the command still runs and the report says the limits were
not applied.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from grader.settings import NAMESPACES

CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)?\s*$", re.IGNORECASE)


def parse_memory(text: str) -> int:
    """'768M', '1.5G', '1536MiB', '805306368' -> bytes (powers of 1024, as Docker reads them)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a memory size: {text!r} (examples: 768M, 1.5G, 4096M)")
    number, unit = float(match.group(1)), match.group(2).upper()
    return int(number * 1024 ** "KMGT".find(unit) * 1024) if unit else int(number)


@dataclass
class LimitedRun:
    """How a command ran under the limits."""

    returncode: int
    wall: float
    applied: bool  # False: the host gave no cgroup, the command ran without limits
    why_not: str = ""  # why the limits were not applied
    memory: int | None = None  # the limit, bytes
    cpus: float | None = None
    peak: int | None = None  # the cgroup's peak memory (page cache included), bytes
    oom_kills: int = 0  # processes the kernel killed for memory in the cgroup
    cold: bool = False  # the page cache was dropped first, as in a fresh container

    def describe(self) -> str:
        if not self.applied:
            return f"limits NOT applied ({self.why_not}); wall {self.wall:.0f} s"
        mem = f"{self.memory / 2**20:.0f} MiB" if self.memory else "no memory limit"
        cpus = f"{self.cpus:g} CPU" if self.cpus else "all CPUs"
        peak = f"peak {self.peak / 2**20:.0f} MiB" if self.peak is not None else "peak unknown"
        cache = "cold page cache" if self.cold else "warm page cache (peak understated)"
        return (f"{mem}, {cpus}, {cache}: wall {self.wall:.0f} s, {peak} (page cache "
                f"included), {self.oom_kills} out-of-memory kill(s)")


class _Group:
    """One fresh cgroup: v1 (a memory and a cpu folder) or v2 (one folder)."""

    def __init__(self, memory: int | None, cpus: float | None):
        name = f"capgrade-trial-{uuid.uuid4().hex[:8]}"
        self.v1 = (CGROUP_ROOT / "memory").is_dir() and (CGROUP_ROOT / "cpu").is_dir()
        if self.v1:
            self.folders = [CGROUP_ROOT / "memory" / name, CGROUP_ROOT / "cpu" / name]
        else:
            self.folders = [CGROUP_ROOT / name]
        for folder in self.folders:
            folder.mkdir()
        try:
            self._limit(memory, cpus)
        except OSError:
            self.remove()
            raise

    def _write(self, folder: Path, name: str, value: str) -> None:
        (folder / name).write_text(value)

    def _limit(self, memory: int | None, cpus: float | None) -> None:
        quota = int(cpus * PERIOD_US) if cpus else None
        if self.v1:
            mem, cpu = self.folders
            if memory:
                self._write(mem, "memory.limit_in_bytes", str(memory))
            if quota:
                self._write(cpu, "cpu.cfs_period_us", str(PERIOD_US))
                self._write(cpu, "cpu.cfs_quota_us", str(quota))
        else:
            (folder,) = self.folders
            if memory:
                self._write(folder, "memory.max", str(memory))
                if (folder / "memory.swap.max").exists():
                    self._write(folder, "memory.swap.max", "0")
            if quota:
                self._write(folder, "cpu.max", f"{quota} {PERIOD_US}")

    def enter(self) -> None:
        """Move the calling process in (run in the child before exec)."""
        for folder in self.folders:
            (folder / ("tasks" if self.v1 else "cgroup.procs")).write_text(str(os.getpid()))

    def peak(self) -> int | None:
        for name in ("memory.max_usage_in_bytes", "memory.peak"):
            path = self.folders[0] / name
            if path.exists():
                return int(path.read_text().split()[0])
        return None

    def oom_kills(self) -> int:
        for name in ("memory.oom_control", "memory.events"):
            path = self.folders[0] / name
            if path.exists():
                for line in path.read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        return 0

    def remove(self) -> None:
        for folder in self.folders:
            for _ in range(50):  # the last processes may take a moment to leave
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


def _host_oom_kills() -> int:
    """The kernel's count of out-of-memory kills on this host (``/proc/vmstat``), or 0."""
    try:
        for line in Path("/proc/vmstat").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def cgroups_usable() -> str:
    """'' when this host lets us make a limited cgroup, else why not."""
    try:
        _Group(64 << 20, 0.5).remove()
    except OSError as exc:
        return f"no cgroup could be made here ({exc.strerror or exc})"
    return ""


def drop_page_cache() -> bool:
    """Evict clean cached files (root only), so a run loads its libraries as a fresh one does.

    A cgroup is charged for the file pages its processes read in; pages already
    cached (torch's libraries, from an earlier run) are charged to whoever read
    them first, so a warm trial would understate the memory a container needs.
    """
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def run_limited(argv: list[str], env: dict[str, str], memory: int | None = None,
                cpus: float | None = None, cold: bool = False, quiet: bool = False
                ) -> LimitedRun:
    """Run ``argv`` in a fresh cgroup with these limits and no sandbox namespaces.

    ``cold``: drop the page cache first (see ``drop_page_cache``); ``quiet``: discard
    the command's standard output.
    """
    env = {**env, NAMESPACES: "0"}  # as in Gradescope's Docker
    group, why_not = None, ""
    if memory or cpus:
        try:
            group = _Group(memory, cpus)
        except OSError as exc:
            why_not = (f"no cgroup could be made here ({exc.strerror or exc}); run as root on "
                       "Linux with the memory and cpu controllers")
    cold = cold and group is not None and drop_page_cache()
    host_kills = _host_oom_kills()
    start = time.monotonic()
    done = subprocess.run(argv, env=env, check=False,
                          stdout=subprocess.DEVNULL if quiet else None,
                          preexec_fn=group.enter if group is not None else None)
    wall = time.monotonic() - start
    if group is None:
        return LimitedRun(done.returncode, wall, applied=False,
                          why_not=why_not or "no limit asked for", memory=memory, cpus=cpus)
    try:
        # cgroup v1 counts a kill only in the victim's own group: a sandbox's group inside
        # this one would hide it, so the host's count since the start counts too.
        kills = max(group.oom_kills(), _host_oom_kills() - host_kills)
        return LimitedRun(done.returncode, wall, applied=True, memory=memory, cpus=cpus,
                          peak=group.peak(), oom_kills=kills, cold=cold)
    finally:
        group.remove()
