"""The wall: the limits every process running student code starts under (no torch, no grading).

One place for them, so the check worker and the notebook kernel are confined
alike. Each layer is applied when the host allows it, and the layers actually
active are recorded in every result (``Sandbox.layers``):

- always: a separate process in its own session, a scrubbed environment, a
  fresh temp dir as cwd and HOME, and at the end the process group killed and
  every process still carrying the sandbox's id hunted down;
- resource limits (Linux): address space, CPU seconds, processes, file size,
  open files, no core files. No address-space limit with CUDA, whose driver
  reserves huge virtual ranges;
- namespaces (``unshare``; as root, or where unprivileged user namespaces are
  allowed): a network namespace whose only interface is a downed loopback; a
  mount namespace in which the secret paths (``reference/``, the hidden
  expected values) are covered by an empty read-only tmpfs; a PID namespace,
  so the host's processes are invisible and everything the student started
  dies with the sandbox;
- an unprivileged user when the grader runs as root and its files are
  world-readable: ``nobody``, or for check workers a uid of their own
  (``Sandbox.user``);
- on a student laptop without any of that: the same verdicts, fewer layers,
  and the result says so. The worker also refuses sockets and signals to other
  processes itself (an audit hook), which stops ordinary code there too.
"""

from __future__ import annotations

import functools
import os
import pwd
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from secrets import randbelow

PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent


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
SANDBOX_ID_VAR = "CAPGRADE_SANDBOX_ID"
GIB = 1 << 30

#: (id, home) of the sandboxes this process created: tests look for their leftovers.
STARTED: list[tuple[str, Path]] = []

#: The layers every sandbox has.
BASE_LAYERS = ["separate process", "own session", "scrubbed environment",
               "fresh temp dir as cwd and HOME", "process group and stragglers killed at the end"]


def _env_int(name: str, default: int) -> int:
    try:
        return int(float(os.environ.get(name, default)))
    except ValueError:
        return default


@dataclass
class Limits:
    """Resource limits of one sandbox; ``CAPGRADE_SANDBOX_MEMORY`` / ``_CPU`` override."""

    memory: int = field(default_factory=lambda: _env_int("CAPGRADE_SANDBOX_MEMORY", 10 * GIB))
    cpu_seconds: int = field(default_factory=lambda: _env_int("CAPGRADE_SANDBOX_CPU", 1800))
    processes: int = 256  # threads count as processes
    file_size: int = 256 * 1024 * 1024
    open_files: int = 1024

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


def scrubbed_environment(home: str | Path, **extra: str) -> dict[str, str]:
    """The only variables student code sees; ``home`` is its cwd, HOME and TMPDIR."""
    threads = os.environ.get("CAPGRADE_WORKER_THREADS", "1")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "TMPDIR": str(home),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(PACKAGE_ROOT),
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        # One thread by default: workers run side by side in batch grading, and the
        # grader's re-run of a notebook's training must use the notebook's count.
        "OMP_NUM_THREADS": threads,
        "CAPGRADE_WORKER_THREADS": threads,
        # Where the grader's encoder looks for already-downloaded weights.
        "TORCH_HOME": str(torch_home()),
    }
    env.update(extra)
    return env


@functools.lru_cache(maxsize=1)
def namespace_flags() -> tuple[str, ...] | None:
    """``unshare`` options that work on this host (tried once), or None."""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None \
            or os.environ.get("CAPGRADE_SANDBOX_NAMESPACES", "1") == "0":
        return None
    base = ("--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc")
    flags = base if os.geteuid() == 0 else ("--user", "--map-root-user", *base)
    try:
        done = subprocess.run(["unshare", *flags, "true"], capture_output=True, timeout=20)
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


#: Top-level folders a sandbox keeps seeing (the operating system); /tmp becomes private.
SYSTEM_DIRS = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "dev", "proc",
               "sys", "var", "boot", "tmp"}


def _outermost(paths: Iterable[Path]) -> list[str]:
    """The paths, without those inside another one of them."""
    unique = sorted({Path(p).resolve() for p in paths})
    return [str(p) for p in unique if not any(q in p.parents for q in unique)]


def view_plan(keep: Iterable[Path]) -> tuple[list[str], list[str], list[str]]:
    """How the mount namespace shows only the system, Python, the venv and grader/.

    Returns (``--reveal`` specs: every other top-level folder covered by an empty
    tmpfs with the ``keep`` paths inside it bound back; top-level files to blank;
    the ``keep`` paths under /tmp, for the private /tmp).
    """
    keep = [Path(p).resolve() for p in keep]
    reveals, files = [], []
    for top in sorted(Path("/").iterdir()):
        if top.name in SYSTEM_DIRS or top.is_symlink():
            continue
        if top.is_dir():
            if top in keep:
                continue
            inside = _outermost(p for p in keep if top in p.parents)
            reveals.append(":".join([str(top), *inside]))
        elif top.is_file():
            files.append(str(top))
    tmp = Path("/tmp").resolve()
    return reveals, files, _outermost(p for p in keep if tmp in p.parents)


@functools.lru_cache(maxsize=1)
def unprivileged_ids() -> tuple[int, int, str] | None:
    """(uid, gid, name) to run student code as, when the grader is root and that can work."""
    if os.geteuid() != 0 or os.environ.get("CAPGRADE_SANDBOX_USER") == "":
        return None
    name = os.environ.get("CAPGRADE_SANDBOX_USER", "nobody")
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


@dataclass
class Sandbox:
    """How to start one confined process: the command line, its environment and its layers."""

    home: Path
    secrets: tuple[Path, ...] = DEFAULT_SECRETS
    cuda: bool = False
    limits: Limits = field(default_factory=Limits)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    layers: list[str] = field(default_factory=list)
    #: Run as a user id no other process has (see ``OWN_UIDS``), not the shared ``nobody``.
    own_user: bool = False
    _uid: int | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        STARTED.append((self.id, self.home))

    def user(self) -> tuple[int, int, str] | None:
        """(uid, gid, name) the sandbox runs as, or None (no user switch on this host).

        With ``own_user`` (check workers) and no ``CAPGRADE_SANDBOX_USER`` chosen,
        a uid of its own from ``OWN_UIDS``, in nobody's group: the process limit
        (``RLIMIT_NPROC``) counts a user's processes machine-wide, so sandboxes
        sharing ``nobody`` would share it, and one student's fork bomb could keep
        a submission graded beside it from starting.
        """
        ids = unprivileged_ids()
        if ids is None or not self.own_user or "CAPGRADE_SANDBOX_USER" in os.environ:
            return ids
        if self._uid is None:
            self._uid = OWN_UIDS.start + randbelow(len(OWN_UIDS))
        return (self._uid, ids[1], "of its own (a uid no other process has)")

    def environment(self, **extra: str) -> dict[str, str]:
        return scrubbed_environment(self.home, **{SANDBOX_ID_VAR: self.id, **extra})

    def command(self, argv: list[str], chown: Iterable[Path] = ()) -> list[str]:
        """``argv`` wrapped in the layers this host allows (see ``grader.sandbox.launch``).

        ``chown``: more paths (besides ``home``) the unprivileged user must own.
        """
        flags, launch = self.plan(chown)
        launch = [sys.executable, "-m", "grader.sandbox.launch", *launch]
        if flags is not None:
            launch = ["unshare", *flags, *launch]
        return [*launch, "--", *argv]

    def plan(self, chown: Iterable[Path] = (), forked: bool = False
             ) -> tuple[tuple[str, ...] | None, list[str]]:
        """(``unshare`` flags or None, ``grader.sandbox.launch`` options); records the layers.

        ``forked``: the process will be a fork of the fork server rather than a new
        Python (``grader.sandbox.forkserver``); the same layers, entered the same way.
        """
        self.layers = list(BASE_LAYERS)
        if forked:
            self.layers.append("forked from the grader's fork server (Python and torch "
                               "preloaded, no student code), then confined")
        secrets = [str(p) for p in self.secrets if p.exists()]
        ids = self.user()
        flags = namespace_flags()
        linux = sys.platform.startswith("linux")
        if ids is not None:
            processes = self.limits.processes  # counted for that user alone
        elif linux and os.geteuid() != 0:
            processes = _user_tasks() + self.limits.processes
        else:
            processes = None  # root ignores RLIMIT_NPROC
        pairs = self.limits.pairs(self.cuda, processes) if linux else []
        if pairs:
            self.layers.append(self.limits.describe(self.cuda, processes is not None))
        launch = [f"--limit={p}" for p in pairs]
        if ids is not None:
            launch += [f"--uid={ids[0]}", f"--gid={ids[1]}"]
            launch += [f"--chown={p}" for p in (self.home, *chown)]
        if flags is not None:
            reveals, files, tmp_keep = view_plan([self.home, *chown, *_needed_paths()])
            launch += [f"--reveal={r}" for r in reveals]
            launch += ["--private-tmp", *(f"--keep-tmp={e}" for e in tmp_keep)]
            launch += [f"--hide={s}" for s in [*files, *secrets]]
            self.layers += ["private /tmp, /var/tmp and /dev/shm",
                            "network namespace (no interface up)",
                            "mount namespace (only the system, Python, the venv and grader/ "
                            "visible; secrets covered)",
                            "PID namespace (host processes invisible; all die with it)"]
        else:
            self.layers.append("no namespaces on this host: sockets, new processes and signals "
                               "refused by an audit hook instead")
        if ids is not None:
            self.layers.append(f"unprivileged user {ids[2]}")
        elif os.geteuid() == 0:
            self.layers.append("runs as root: no unprivileged user can start this Python "
                               "(CAPGRADE_SANDBOX_USER, or open its folders to others)")
        else:
            self.layers.append("same user as the grader (not root: no user switch)")
        visible = [s for s in secrets if flags is None and (ids is None or _readable_by_others(
            Path(s)))]
        if visible:
            self.layers.append("WARNING: secrets readable from the sandbox: " + ", ".join(visible))
        return flags, launch

    def kill(self, pid: int | None) -> None:
        """Kill the sandbox led by ``pid``, and wait until its processes are gone.

        The PID namespace's init (``pid``'s child) is killed first: the kernel
        then kills and reaps everything in the namespace before that init
        counts as dead, so nothing is left holding the sandbox user's process
        quota when the next sandbox starts. Then the process group, then any
        process that still carries this sandbox's id.
        """
        if pid is None:
            return
        inits = _children(pid)
        for child in inits:
            try:
                os.kill(child, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        _wait_dead(inits, seconds=10.0)
        kill_group(pid)
        _kill_carrying({self.id})


def kill_all_started() -> None:
    """SIGKILL every process of every sandbox this process started (an emergency stop)."""
    _kill_carrying({i for i, _ in STARTED})


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
            try:
                os.kill(int(entry), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


_LIMITS = {"as": resource.RLIMIT_AS, "cpu": resource.RLIMIT_CPU,
           "nproc": resource.RLIMIT_NPROC, "fsize": resource.RLIMIT_FSIZE,
           "nofile": resource.RLIMIT_NOFILE, "core": resource.RLIMIT_CORE}


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
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
