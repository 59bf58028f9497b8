"""Resource limits: what one sandbox may use (``Limits``) and how the launcher sets them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from grader.settings import SETTINGS

try:  # POSIX only: the package must still import on Windows, to say what is missing there
    import resource
except ImportError:  # pragma: no cover - exercised by tests/test_install.py in a subprocess
    resource = None  # type: ignore[assignment]

GIB = 1 << 30
MIB = 1 << 20
#: Default caps of the RAM-backed folders a sandbox may write: each private /tmp,
#: /var/tmp and /dev/shm, and its home (``CAPGRADE_SANDBOX_TMP_SIZE`` / ``_HOME_SIZE``).
TMP_SIZE = 256 * MIB
HOME_SIZE = 512 * MIB
#: Files and folders each of those tmpfs may hold (each costs kernel memory).
TMPFS_INODES = 65536


@dataclass
class Limits:
    """Resource limits of one sandbox; ``CAPGRADE_SANDBOX_MEMORY`` / ``_CPU`` override."""

    memory: int = field(default_factory=lambda: SETTINGS.sandbox_memory(10 * GIB))
    cpu_seconds: int = field(default_factory=lambda: SETTINGS.sandbox_cpu(1800))
    processes: int = 256  # threads count as processes
    file_size: int = 256 * 1024 * 1024
    open_files: int = 1024
    #: Bytes each private /tmp, /var/tmp and /dev/shm tmpfs holds at most.
    tmp_size: int = field(default_factory=lambda: SETTINGS.sandbox_tmp_size(TMP_SIZE))
    #: Bytes the home holds at most (its quota), where its tmpfs can be mounted.
    home_size: int = field(default_factory=lambda: SETTINGS.sandbox_home_size(HOME_SIZE))

    def pairs(self, cuda: bool, processes: int | None) -> list[str]:
        pairs = [f"cpu={self.cpu_seconds}", f"fsize={self.file_size}",
                 f"nofile={self.open_files}", "core=0"]
        if not cuda:
            pairs.append(f"as={self.memory}")
        if processes is not None:
            pairs.append(f"nproc={processes}")
        return pairs

    def describe(self, cuda: bool, processes: bool) -> str:
        parts = [] if cuda else [f"address space {self.memory / GIB:g} GiB"]
        parts += [f"CPU {self.cpu_seconds} s"]
        parts += [f"{self.processes} processes"] if processes else []
        parts += [f"files {self.file_size >> 20} MiB", f"{self.open_files} open files",
                  "no core files"]
        return "resource limits (" + ", ".join(parts) + ")"



_LIMITS = {} if resource is None else {
    "as": resource.RLIMIT_AS, "cpu": resource.RLIMIT_CPU, "nproc": resource.RLIMIT_NPROC,
    "fsize": resource.RLIMIT_FSIZE, "nofile": resource.RLIMIT_NOFILE,
    "core": resource.RLIMIT_CORE}


def apply_limits(pairs: Iterable[str]) -> None:
    """Set ``name=value`` resource limits on this process (never above the current hard one)."""
    for pair in pairs:
        name, _, value = pair.partition("=")
        which = _LIMITS[name]
        soft = int(value)
        _, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        # CPU: the soft limit sends SIGXCPU, the hard one a second later SIGKILL.
        new_hard = soft + 1 if name == "cpu" else soft
        if hard != resource.RLIM_INFINITY:
            new_hard = min(new_hard, hard)
        resource.setrlimit(which, (soft, new_hard))

