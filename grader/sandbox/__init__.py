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

import contextlib
import os
import signal
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from secrets import randbelow

from grader.sandbox.environment import SANDBOX_ID_VAR, scrubbed_environment
from grader.sandbox.home_tmpfs import mount_home, release_home
from grader.sandbox.host import (
    DEFAULT_SECRETS,
    OWN_UIDS,
    PACKAGE_ROOT,
    _needed_paths,
    _readable_by_others,
    _user_tasks,
    namespace_flags,
    unprivileged_ids,
    unsupported_reason,
)
from grader.sandbox.limits import GIB, HOME_SIZE, MIB, TMP_SIZE, Limits
from grader.sandbox.reaping import (
    _children,
    _kill_carrying,
    _wait_dead,
    kill_all_started,
    kill_group,
    release_all_started,
    started,
)
from grader.sandbox.view import ETC_ENTRIES, view_plan
from grader.settings import SETTINGS

#: The public API, re-exported from the modules that hold it (``grader.sandbox.X``).
__all__ = ["BASE_LAYERS", "DEFAULT_SECRETS", "ETC_ENTRIES", "HOME_SIZE", "OUTSIDE_OPTIONS",
           "OWN_UIDS", "PACKAGE_ROOT", "SANDBOX_ID_VAR", "TMP_SIZE", "Limits",
           "Sandbox", "kill_all_started", "kill_group", "mount_home", "namespace_flags",
           "release_all_started", "scrubbed_environment", "started", "unprivileged_ids",
           "unsupported_reason"]

#: The layers every sandbox has.
BASE_LAYERS = ["separate process", "own session", "scrubbed environment",
               "fresh temp dir as cwd and HOME", "process group and stragglers killed at the end"]

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
        started().add(self.id, self.home)

    def user(self) -> tuple[int, int, str] | None:
        """(uid, gid, name) the sandbox runs as, or None (no user switch on this host).

        With ``own_user`` (check workers) and no ``CAPGRADE_SANDBOX_USER`` chosen,
        a uid of its own from ``OWN_UIDS``, in nobody's group: the process limit
        (``RLIMIT_NPROC``) counts a user's processes machine-wide, so sandboxes
        sharing ``nobody`` would share it, and one student's fork bomb could keep
        a submission graded beside it from starting.
        """
        ids = unprivileged_ids()
        if ids is None or not self.own_user or SETTINGS.sandbox_user is not None:
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
        if not SETTINGS.sandbox_home_quota:
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
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(child, signal.SIGKILL)
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

