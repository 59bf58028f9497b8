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
- a home with a quota (root on Linux): a size-capped tmpfs (``Limits.home_size``)
  mounted on the home folder on the host before the sandbox starts, so the
  harness still copies the submission in and reads what it wrote; when the
  sandbox is killed, its contents go back to the folder on disk (regular files,
  folders and links, at most the cap) and the tmpfs is unmounted;
- a memory cgroup of its own (``grader.sandbox.cgroup``; root, cgroup v1 or v2):
  every process of the sandbox, and the tmpfs pages they write, under one
  limit (``Limits.memory``), which children forked through libc cannot escape
  as they escape a per-process limit; removed when the sandbox is killed, its
  out-of-memory counters kept (``cgroup.events``): a kill by this limit is the
  student's outcome, not the grader's;
- namespaces (``unshare``; as root, or where unprivileged user namespaces are
  allowed): a network namespace whose only interface is a downed loopback; IPC
  and UTS namespaces (System V shared memory, semaphores and message queues,
  POSIX message queues: its own, gone with it); a PID namespace, so the host's
  processes are invisible and everything the student started dies with the
  sandbox; and a mount namespace whose view of the file system is an
  ALLOWLIST: the operating system (``SYSTEM_DIRS``: /usr, /lib*, /bin, /sbin,
  /dev, /proc, /sys), the few entries of /etc and /var that the loader and
  libraries read (``ETC_ENTRIES``, ``VAR_ENTRIES``), and Python, the venv,
  torch and grader/ (``_needed_paths``), read-only; every other top-level
  folder (/home, /root, /srv, /opt, /mnt, /media, the rest of /var and /etc, a
  checkout's secrets) is a fresh empty tmpfs with only those entries bound
  back; /tmp, /var/tmp and /dev/shm are private size-capped tmpfs
  (``Limits.tmp_size``), with the sandbox's own home bound back in;
- an unprivileged user when the grader runs as root and its files are
  world-readable: ``nobody``, or for check workers a uid of their own
  (``Sandbox.user``);
- on a student laptop without any of that: the same verdicts, fewer layers,
  and the result says so. The worker also refuses sockets and signals to other
  processes itself (an audit hook), which stops ordinary code there too.

``Sandbox.plan`` prepares the host side (the home's tmpfs, the cgroup) as well
as the command; ``Sandbox.kill`` undoes it. What a sandbox planned but never
killed left behind is undone when the process exits (``release_all_started``).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from secrets import randbelow

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
SANDBOX_ID_VAR = "CAPGRADE_SANDBOX_ID"
GIB = 1 << 30
MIB = 1 << 20
#: Default caps of the RAM-backed folders a sandbox may write: each private /tmp,
#: /var/tmp and /dev/shm, and its home (``CAPGRADE_SANDBOX_TMP_SIZE`` / ``_HOME_SIZE``).
TMP_SIZE = 256 * MIB
HOME_SIZE = 512 * MIB
#: Files and folders each of those tmpfs may hold (each costs kernel memory).
TMPFS_INODES = 65536
#: The empty tmpfs that covers a folder: only mount points in it, nothing to write.
COVER_OPTIONS = "size=1m,nr_inodes=4096"
#: The source name of a sandbox home's tmpfs on the host (``mount_home``).
HOME_SOURCE = "capgrade-home"

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
    #: Bytes each private /tmp, /var/tmp and /dev/shm tmpfs holds at most.
    tmp_size: int = field(default_factory=lambda: _env_int("CAPGRADE_SANDBOX_TMP_SIZE", TMP_SIZE))
    #: Bytes the home holds at most (its quota), where its tmpfs can be mounted.
    home_size: int = field(default_factory=lambda: _env_int("CAPGRADE_SANDBOX_HOME_SIZE",
                                                            HOME_SIZE))

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
    base = ("--net", "--ipc", "--uts", "--mount", "--pid", "--fork", "--kill-child",
            "--mount-proc")
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


#: Top-level folders a sandbox keeps seeing whole, read-only (the operating system).
SYSTEM_DIRS = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "dev", "proc", "sys"}
#: Folders a sandbox gets a fresh private tmpfs of (``Limits.tmp_size``), its home bound back.
PRIVATE_TMP = ("/tmp", "/var/tmp", "/dev/shm")
#: What a sandbox sees of /etc (whatever of it exists): what the dynamic loader, the
#: user and host lookups, locale, time zone, file types and fonts read, a system
#: Python's own configuration, the alternatives that system commands and libraries
#: resolve through, Jupyter's and IPython's system-wide settings. Measured (strace of
#: a worker importing torch and of a kernel with matplotlib): ld.so.cache,
#: nsswitch.conf, passwd, localtime, mime.types, fonts.
ETC_ENTRIES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "ld.so.preload",
               "passwd", "group", "nsswitch.conf", "hosts", "host.conf", "gai.conf",
               "protocols", "services", "localtime", "timezone", "locale.alias", "locale.conf",
               "mime.types", "fonts", "alternatives", "os-release", "mtab",
               "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}",
               "jupyter", "ipython")
#: What a sandbox sees of /var: the system's font cache (matplotlib's fc-list reads it;
#: without it fonts are scanned again). Python and torch read nothing there.
VAR_ENTRIES = ("cache/fontconfig",)


def _outermost(paths: Iterable[Path]) -> list[str]:
    """The paths, without those inside another one of them."""
    unique = sorted({Path(p).resolve() for p in paths})
    return [str(p) for p in unique if not any(q in p.parents for q in unique)]


def _private_tmp() -> list[Path]:
    return [Path(t).resolve() for t in PRIVATE_TMP]


def _allowed_system_entries() -> list[Path]:
    """The ``ETC_ENTRIES`` and ``VAR_ENTRIES`` this host has (links kept as links)."""
    found = []
    for top, names in (("/etc", ETC_ENTRIES), ("/var", VAR_ENTRIES)):
        for name in names:
            entry = Path(top).resolve() / name
            if entry.exists() or entry.is_symlink():
                found.append(entry)
    return found


def view_plan(keep: Iterable[Path]) -> tuple[list[str], list[str], list[str]]:
    """How the mount namespace shows only the allowlist: the system, Python, the venv, grader/.

    Returns (``--reveal`` specs: every top-level folder but ``SYSTEM_DIRS`` and
    /tmp covered by an empty tmpfs with the ``keep`` paths (and the allowed
    entries of /etc and /var) inside it bound back; top-level files to blank;
    the ``keep`` paths inside a ``PRIVATE_TMP`` folder, bound back into its
    private tmpfs).
    """
    keep = [Path(p).resolve() for p in keep]
    private = _private_tmp()

    def in_private(p: Path) -> bool:
        return any(t == p or t in p.parents for t in private)

    allowed = _allowed_system_entries()
    reveals, files = [], []
    for top in sorted(Path("/").iterdir()):
        if top.name in SYSTEM_DIRS or top.is_symlink() or top in private:
            continue
        if top.is_dir():
            if top in keep:
                continue
            inside = _outermost(p for p in keep if top in p.parents and not in_private(p))
            inside += [str(p) for p in allowed if top in p.parents and not any(
                Path(q) == p or Path(q) in p.parents for q in inside)]
            reveals.append(":".join([str(top), *inside]))
        elif top.is_file():
            files.append(str(top))
    return reveals, files, _outermost(p for p in keep if in_private(p))


@functools.lru_cache(maxsize=1)
def unprivileged_ids() -> tuple[int, int, str] | None:
    """(uid, gid, name) to run student code as, when the grader is root and that can work."""
    if pwd is None or os.geteuid() != 0 or os.environ.get("CAPGRADE_SANDBOX_USER") == "":
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
    #: Its memory cgroup once ``plan`` made one (``grader.sandbox.cgroup``), else None.
    cgroup: Path | None = None
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
        With a cgroup or a home quota, ``launch`` starts first, on the host (it
        joins the cgroup, mounts the home's tmpfs again after a restart), then
        execs ``unshare`` and itself again inside the namespaces.
        """
        flags, options = self.plan(chown)
        launch = [sys.executable, "-m", "grader.sandbox.launch"]
        outside = [o for o in options if o.startswith(OUTSIDE_OPTIONS)]
        if flags is None:
            return [*launch, *options, "--", *argv]
        if outside:
            return [*launch, *options, f"--unshare={','.join(flags)}", "--", *argv]
        return ["unshare", *flags, *launch, *options, "--", *argv]

    def plan(self, chown: Iterable[Path] = (), forked: bool = False
             ) -> tuple[tuple[str, ...] | None, list[str]]:
        """(``unshare`` flags or None, ``grader.sandbox.launch`` options); records the layers.

        Also prepares the host side, before anything of the sandbox runs: its
        home's tmpfs is mounted (the harness copies the submission in after the
        start) and its cgroup made. ``kill`` undoes both.

        ``forked``: the process will be a fork of the fork server rather than a new
        Python (``grader.sandbox.forkserver``); the same layers, entered the same way.
        """
        from grader.sandbox import cgroup

        chown = list(chown)
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
        home = Path(os.path.realpath(self.home))
        launch = [f"--limit={p}" for p in pairs] + [f"--home={home}"]
        launch += [f"--writable={p}" for p in (home, *chown)]
        if ids is not None:
            launch += [f"--uid={ids[0]}", f"--gid={ids[1]}"]
            launch += [f"--chown={p}" for p in (self.home, *chown)]
        quota = self._mount_home()
        if quota is None:
            launch.append(f"--home-size={self.limits.home_size}")
            self.layers.append(f"home: a tmpfs of {self.limits.home_size / MIB:g} MiB of its own "
                               "(its quota; what it wrote goes back to the grader's folder at "
                               "the end)")
        else:
            self.layers.append(f"home on the host's disk: no quota ({quota})")
        self.cgroup, why = self._make_cgroup(cgroup)
        if self.cgroup is not None:
            launch += [f"--cgroup={self.cgroup}", f"--cgroup-memory={self.limits.memory}"]
            self.layers.append(f"memory cgroup of its own (all its processes and their files in "
                               f"memory, together: {self.limits.memory / GIB:g} GiB, swap "
                               "included)")
        else:
            self.layers.append(f"no memory cgroup of its own ({why}): each process's memory "
                               "is limited alone, not their sum")
        if flags is not None:
            reveals, files, tmp_keep = view_plan([self.home, *chown, *_needed_paths()])
            launch += [f"--reveal={r}" for r in reveals]
            launch += ["--private-tmp", f"--tmp-size={self.limits.tmp_size}",
                       *(f"--keep-tmp={e}" for e in tmp_keep)]
            launch += [f"--hide={s}" for s in [*files, *secrets]]
            if "--ipc" in flags:
                launch.append("--mqueue")
            self.layers += [f"private /tmp, /var/tmp and /dev/shm (a tmpfs of "
                            f"{self.limits.tmp_size / MIB:g} MiB each)",
                            "network namespace (no interface up)",
                            "IPC namespace (System V shared memory, semaphores and message "
                            "queues, POSIX message queues: its own, gone with it)",
                            "UTS namespace (host name of its own)",
                            "mount namespace (an allowlist, read-only: the system folders, "
                            "what the loader and libraries read of /etc, Python, the venv and "
                            "grader/; every other folder empty, secrets covered)",
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

    def _mount_home(self) -> str | None:
        """Mount the home's tmpfs on the host (once); None when it is there, else why not."""
        if not sys.platform.startswith("linux"):
            return "not Linux"
        if os.geteuid() != 0:
            return "only root can mount its tmpfs"
        if os.environ.get("CAPGRADE_SANDBOX_HOME_QUOTA", "1") == "0":
            return "turned off (CAPGRADE_SANDBOX_HOME_QUOTA=0)"
        try:
            mount_home(self.home, self.limits.home_size)
        except OSError as exc:
            return f"no tmpfs could be mounted on it: {exc.strerror or exc}"
        return None

    def _make_cgroup(self, cgroup) -> tuple[Path | None, str]:
        try:
            made = cgroup.create(self.id, self.limits.memory)
        except OSError as exc:
            return None, f"none could be made: {exc.strerror or exc}"
        return (made, "") if made is not None else (None, cgroup.parent()[1])

    def kill(self, pid: int | None) -> None:
        """Kill the sandbox led by ``pid``, wait until its processes are gone, then ``release``.

        The PID namespace's init (``pid``'s child) is killed first: the kernel
        then kills and reaps everything in the namespace before that init
        counts as dead, so nothing is left holding the sandbox user's process
        quota when the next sandbox starts. Then the process group, then any
        process that still carries this sandbox's id, then everything in its
        cgroup (no process can leave it).
        """
        from grader.sandbox import cgroup

        if pid is not None:
            inits = _children(pid)
            for child in inits:
                try:
                    os.kill(child, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            _wait_dead(inits, seconds=10.0)
            kill_group(pid)
            _kill_carrying({self.id})
        cgroup.kill_all(self.id)
        self.release()

    def release(self, keep_home: bool = True) -> None:
        """Undo what ``plan`` prepared on the host (call with the sandbox's processes dead).

        The home's tmpfs: its contents copied back into the folder on disk
        (``keep_home``; what the harness reads there afterwards, a notebook's
        files) and unmounted. The cgroup: its counters kept (``cgroup.events``),
        removed. A later start (a notebook's kernel replaced) prepares both again.
        """
        from grader.sandbox import cgroup

        with contextlib.suppress(OSError):
            release_home(self.home, keep=keep_home)
        cgroup.remove(self.id)


#: ``launch`` options for its first step, on the host (see ``launch.outside``).
OUTSIDE_OPTIONS = ("--home-size=", "--cgroup=", "--cgroup-memory=")


def kill_all_started() -> None:
    """SIGKILL every process of every sandbox this process started (an emergency stop).

    Their homes' tmpfs and cgroups go too (nothing is copied back).
    """
    _kill_carrying({i for i, _ in STARTED})
    release_all_started()


def release_all_started() -> None:
    """Kill what is left of every sandbox this process planned, unmount homes, remove cgroups.

    At exit (and in ``kill_all_started``): a sandbox planned and never killed (a
    start that failed, a caller that only wanted the layers) must not leave a
    mounted tmpfs or a cgroup behind.
    """
    from grader.sandbox import cgroup

    mounted = _home_mounts()
    for sandbox_id, home in list(STARTED):
        group = cgroup.path(sandbox_id)
        if group is not None and group.is_dir():
            cgroup.remove(sandbox_id)
        if os.path.realpath(home) in mounted:
            with contextlib.suppress(OSError):
                release_home(home, keep=False)


atexit.register(release_all_started)


# -- the home's tmpfs, on the host ----------------------------------------------------------


def _home_mounts() -> set[str]:
    """Mount points of sandbox homes' tmpfs that this process sees."""
    from grader.sandbox.cgroup import mounts

    return {point for _, point, fstype, source, _ in mounts()
            if fstype == "tmpfs" and source == HOME_SOURCE}


def mount_home(home: str | Path, size: int) -> None:
    """Mount a tmpfs of ``size`` bytes on the folder ``home`` (root), unless one is there.

    What the folder holds moves into the tmpfs (the notebook runner copies the
    submission in before the sandbox exists; a kernel restarted finds its
    files). Owner and mode are the folder's; no setuid files, no devices.
    Raises OSError when it cannot be mounted.
    """
    from grader.sandbox import launch

    home = os.path.realpath(home)
    if home in _home_mounts():
        return
    st = os.lstat(home)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(20, "not a folder", home)
    options = (f"size={size},nr_inodes={TMPFS_INODES},mode={st.st_mode & 0o7777:o},"
               f"uid={st.st_uid},gid={st.st_gid}")
    disk = os.open(home, os.O_RDONLY | os.O_DIRECTORY)  # still reachable under the mount
    try:
        present = os.listdir(disk)
        launch._mount(HOME_SOURCE, home, "tmpfs", launch.MS_NOSUID | launch.MS_NODEV, options)
        if present:
            below = f"/proc/self/fd/{disk}"
            _copy_tree(below, home, size, TMPFS_INODES)
            for name in present:
                _remove(os.path.join(below, name))
    finally:
        os.close(disk)


def release_home(home: str | Path, keep: bool = True) -> None:
    """Unmount the home's tmpfs, its contents first copied back to the folder (``keep``)."""
    from grader.sandbox import launch

    home = os.path.realpath(home)
    if home not in _home_mounts():
        return
    staging = None
    if keep:
        staging = tempfile.mkdtemp(prefix=".capgrade-home-", dir=os.path.dirname(home))
        _copy_tree(home, staging, _mounted_size(home), TMPFS_INODES)
    while home in _home_mounts():
        launch.unmount(home)
    if staging is not None:
        for name in os.listdir(staging):
            _remove(os.path.join(home, name))
            os.rename(os.path.join(staging, name), os.path.join(home, name))
        os.rmdir(staging)


def _mounted_size(path: str) -> int:
    """Bytes the file system at ``path`` holds at most."""
    info = os.statvfs(path)
    return info.f_blocks * info.f_frsize


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


#: How deep ``_copy_tree`` follows folders.
COPY_DEPTH = 32


def _copy_tree(source: str, dest: str, size: int, entries: int) -> None:
    """Regular files, folders and links (as links) under ``source`` into the folder ``dest``.

    Owners kept, modes without setuid, setgid or sticky bits; at most ``size``
    bytes of files and ``entries`` entries, ``COPY_DEPTH`` folders deep; the rest
    (and pipes, sockets, devices) left out. Never follows a link: the tree may
    be a student's.
    """
    todo = [(source, dest, 0)]
    while todo:
        src, dst, depth = todo.pop()
        try:
            listing = list(os.scandir(src))
        except OSError:
            continue
        for entry in listing:
            if entries <= 0:
                return
            entries -= 1
            target = os.path.join(dst, entry.name)
            try:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(entry.path), target)
                elif stat.S_ISDIR(st.st_mode):
                    if depth >= COPY_DEPTH:
                        continue
                    os.mkdir(target, 0o700)
                    todo.append((entry.path, target, depth + 1))
                elif stat.S_ISREG(st.st_mode) and st.st_size <= size:
                    size -= st.st_size
                    _copy_file(entry.path, target, st.st_size)
                else:
                    continue
                os.lchown(target, st.st_uid, st.st_gid)
                if not stat.S_ISLNK(st.st_mode):
                    os.chmod(target, st.st_mode & 0o777)
            except OSError:
                continue


def _copy_file(source: str, dest: str, length: int) -> None:
    src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        dst = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            while length > 0:
                chunk = memoryview(os.read(src, min(length, 1 << 20)))
                if not chunk:
                    break
                length -= len(chunk)
                while chunk:
                    chunk = chunk[os.write(dst, chunk):]
        finally:
            os.close(dst)
    finally:
        os.close(src)


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
