"""What this host offers a sandbox, and what a sandbox must and must not see of it.

Probed once per process (``namespace_flags``, ``unprivileged_ids``: the host does
not change under a running grader; ``functools.lru_cache`` is the explicit,
clearable holder of both), found without importing torch (the harness never does).
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from grader.settings import SETTINGS

try:  # POSIX only: the package must still import on Windows, to say what is missing there
    import pwd
    import resource
except ImportError:  # pragma: no cover - exercised by tests/test_install.py in a subprocess
    pwd = resource = None  # type: ignore[assignment]

PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent


def unsupported_reason() -> str | None:
    """Why student code cannot be run in a worker on this host (None on Linux and macOS).

    The worker forks its student process and talks over inherited pipe file
    descriptors, and the sandbox needs ``pwd`` and ``resource``: none of that
    exists on native Windows, where WSL 2 gives a Linux that has it all.
    """
    missing = [name for name, module in (("pwd", pwd), ("resource", resource))
               if module is None]
    missing += [f"os.{name}" for name in ("fork", "geteuid") if not hasattr(os, name)]
    if not missing:
        return None
    return (f"this system lacks {', '.join(missing)}, which the grader's sandboxed worker "
            "needs to run your code (Linux or macOS). On Windows, install WSL 2 "
            "(`wsl --install` in PowerShell), then follow the Linux steps of "
            "docs/student-guide.md inside Ubuntu")


def project_secrets() -> tuple[Path, ...]:
    """What a sandbox must not see of a source checkout: everything but grader/ and the venv.

    ``reference/`` holds the solution and the hidden values, ``tests/`` other
    full solutions, ``.git`` the history of all of them. An installed package
    (no ``pyproject.toml`` beside it) has none of these.
    """
    if not (PACKAGE_ROOT / "pyproject.toml").is_file():
        return ()
    keep = {"grader"}
    for path in (Path(sys.prefix).resolve(), Path(sys.executable).resolve()):
        if PACKAGE_ROOT in path.parents:
            keep.add(path.relative_to(PACKAGE_ROOT).parts[0])
    return tuple(sorted(p for p in PACKAGE_ROOT.iterdir() if p.name not in keep))



#: The instructors' secrets: hidden from every sandbox where the host allows it.
DEFAULT_SECRETS = project_secrets()


@functools.lru_cache(maxsize=1)
def namespace_flags() -> tuple[str, ...] | None:
    """``unshare`` options that work on this host (tried once), or None."""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None \
            or not SETTINGS.sandbox_namespaces:
        return None
    base = ("--net", "--ipc", "--uts", "--mount", "--pid", "--fork", "--kill-child",
            "--mount-proc")
    flags = base if os.geteuid() == 0 else ("--user", "--map-root-user", *base)
    try:
        done = subprocess.run(["unshare", *flags, "true"], capture_output=True, timeout=20,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return flags if done.returncode == 0 else None


def _traversable(directory: Path) -> bool:
    return bool(directory.stat().st_mode & stat.S_IXOTH)


def _readable_by_others(path: Path) -> bool:
    """True if a user with no special rights can reach and read ``path``."""
    path = path.resolve()
    if not all(_traversable(d) for d in reversed(path.parents)):
        return False
    return bool(path.stat().st_mode & stat.S_IROTH)


def torch_home() -> Path:
    """torch.hub's cache root, found the way torch finds it, without importing torch."""
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(cache).expanduser() / "torch"


def _torch_dir() -> Path:
    """Where torch is installed (found without importing it: the harness never does)."""
    import importlib.util

    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        raise RuntimeError("torch is not installed: the worker needs it")
    return Path(spec.origin).resolve().parent


def _needed_paths() -> list[Path]:
    """All a sandbox may see outside the system folders: Python, the venv, torch, grader/.

    Plus any other site-packages on ``sys.path`` (one a ``.pth`` file adds, a
    user site): the worker imports its dependencies from there too.
    """
    sites = [Path(p).resolve() for p in sys.path
             if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]
    return [Path(sys.executable).resolve(), Path(sys.base_prefix).resolve(),
            Path(sys.prefix).resolve(), PACKAGE_ROOT / "grader",
            _torch_dir(), *sites]



@functools.lru_cache(maxsize=1)
def unprivileged_ids() -> tuple[int, int, str] | None:
    """(uid, gid, name) to run student code as, when the grader is root and that can work."""
    if pwd is None or os.geteuid() != 0 or SETTINGS.sandbox_user == "":
        return None
    name = SETTINGS.sandbox_user or "nobody"
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    needed = _needed_paths()
    if namespace_flags() is not None:
        # Inside the namespaces the folders above these are open tmpfs: only they count.
        usable = all(p.stat().st_mode & stat.S_IROTH for p in needed)
    else:
        usable = all(_readable_by_others(p) for p in needed)
    return (entry.pw_uid, entry.pw_gid, name) if usable else None


#: User ids for sandboxes of their own: far above any account's, a random one each.
OWN_UIDS = range(2_000_000_000, 2_100_000_000)


def _user_tasks() -> int:
    """Processes and threads of the current user: RLIMIT_NPROC counts them all."""
    uid, count = os.getuid(), 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{pid}/task"))
            except OSError:
                pass
    return count

