"""The first code to run in a new sandbox: its cgroup, its view of the files, limits, no root.

``python -m grader.sandbox.launch [options] -- COMMAND...`` does what only root
can before any student code exists, in two steps:

- ``outside``, on the host, when ``grader.sandbox`` asks for it (a cgroup, a
  home quota): joins the sandbox's memory cgroup (every later process of the
  sandbox is born in it), mounts the home's size-capped tmpfs again if a
  restart finds it gone, then execs ``unshare`` (``--unshare=FLAGS``) and this
  module again, without these options;
- ``enter``, inside the namespaces ``unshare`` opened, still as root there: it
  covers every top-level folder but the system's with an empty tmpfs holding
  only the allowed entries, bound back read-only (``--reveal``: Python, the
  venv, grader/, what the loader reads of /etc; a pyenv Python under
  ``/root``), drops the mounts of other sandboxes' homes, gives /tmp, /var/tmp
  and /dev/shm a private size-capped tmpfs with the sandbox's home bound back,
  mounts the IPC namespace's own POSIX message queues on /dev/mqueue, covers
  each secret with an empty read-only tmpfs (``/dev/null`` over a file), sets
  the resource limits, hands the sandbox's temp dir to the unprivileged user,
  drops to that user for good and execs COMMAND (the worker or the notebook
  kernel), staying behind as the PID namespace's init. These mounts exist only
  in the sandbox's namespace.

A fork of the fork server (``grader.worker.forkserver``) runs the same two
steps, around its own ``unshare(2)``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from grader.sandbox.home_tmpfs import HOME_SOURCE
from grader.sandbox.limits import TMPFS_INODES, apply_limits
from grader.sandbox.view import COVER_OPTIONS, PRIVATE_TMP

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME = 32, 1024, 2048
MS_BIND, MS_REC, MS_PRIVATE, MS_RELATIME = 4096, 16384, 1 << 18, 1 << 21
MNT_DETACH = 2
#: statvfs flags -> the mount flags a read-only bind remount must keep (else EPERM in a
#: user namespace, where they are locked).
_KEPT_FLAGS = {os.ST_NOSUID: MS_NOSUID, os.ST_NODEV: MS_NODEV, os.ST_NOEXEC: MS_NOEXEC,
               os.ST_NOATIME: MS_NOATIME, os.ST_NODIRATIME: MS_NODIRATIME,
               getattr(os, "ST_RELATIME", 4096): MS_RELATIME}


def _mount(source: str | None, target: str, fstype: str | None = None, flags: int = 0,
           data: str | None = None) -> None:
    """``mount(2)`` itself: some 40 mounts per sandbox, without a ``mount`` process each."""
    libc = ctypes.CDLL(None, use_errno=True)

    def arg(text: str | None) -> bytes | None:
        return text.encode() if text is not None else None

    if libc.mount(arg(source), arg(target), arg(fstype), ctypes.c_ulong(flags),
                  arg(data)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source or ''} on {target}: {os.strerror(errno)}")


def unmount(target: str) -> None:
    """``umount2(target, MNT_DETACH)``: gone from the tree now, freed when no longer used."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(target.encode(), MNT_DETACH) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"umount {target}: {os.strerror(errno)}")


def make_private() -> None:
    """``unshare(1)``'s default propagation: no mount made in here shows outside."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)


def mount_proc() -> None:
    """A ``/proc`` of this PID namespace (``unshare --mount-proc``), for its pid 1 to call."""
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def hide(path: str) -> None:
    """Make ``path`` look empty (and unwritable) inside this mount namespace."""
    if os.path.isdir(path):
        _mount("capgrade-hidden", path, "tmpfs", MS_RDONLY, "size=4k,mode=000")
    else:
        _mount("/dev/null", path, None, MS_BIND)


def _read_only(path: str) -> None:
    """Remount the bind mount at ``path`` read-only, keeping its other flags (best effort)."""
    try:
        current = os.statvfs(path).f_flag
    except OSError:
        return
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY
    for bit, flag in _KEPT_FLAGS.items():
        if current & bit:
            flags |= flag
    # A host that refuses it: the unprivileged user cannot write there anyway.
    with contextlib.suppress(OSError):
        _mount(None, path, None, flags)


def reveal(blocked: str, entries: list[str], mode: str = "755", options: str = COVER_OPTIONS,
           flags: int = 0, writable: tuple[str, ...] = ()) -> None:
    """Cover ``blocked`` with a fresh tmpfs holding only ``entries``, bound back in place.

    Each entry is held open (``O_PATH``) while ``blocked`` is covered, then bound
    back from that descriptor: no stash folder is needed. A link is made again
    as a link. Entries are read-only, but for those that are or hold a
    ``writable`` path (the sandbox's home).
    """
    held: list[tuple[str, int | str]] = []  # (entry, its O_PATH descriptor or its link)
    for entry in entries:
        if os.path.islink(entry):
            held.append((entry, os.readlink(entry)))
        else:
            held.append((entry, os.open(entry, os.O_PATH)))
    _mount("capgrade-open", blocked, "tmpfs", flags, f"mode={mode},{options}")
    for entry, fd in held:
        os.makedirs(os.path.dirname(entry), exist_ok=True)
        if isinstance(fd, str):
            os.symlink(fd, entry)
            continue
        if os.path.isdir(f"/proc/{os.getpid()}/fd/{fd}"):
            os.makedirs(entry, exist_ok=True)
        else:
            open(entry, "a").close()
        _mount(f"/proc/{os.getpid()}/fd/{fd}", entry, None, MS_BIND | MS_REC)
        os.close(fd)
        if not any(w == entry or w.startswith(entry.rstrip("/") + "/") for w in writable):
            _read_only(entry)


def drop_foreign_homes(own: str | None) -> None:
    """Detach the mounts of other sandboxes' homes (their tmpfs on the host) from this view.

    They would be covered anyway (private /tmp); detached, a sandbox's home is
    freed when that sandbox ends, not when the last sandbox started beside it does.
    """
    from grader.sandbox.cgroup import mounts

    for _, point, fstype, source, _ in reversed(mounts()):
        if fstype == "tmpfs" and source == HOME_SOURCE and point != own:
            with contextlib.suppress(OSError):
                unmount(point)


def drop_to(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid:  # pragma: no cover - the kernel refused
        raise SystemExit("capgrade sandbox: could not drop privileges")


def _chown_tree(path: str, uid: int, gid: int) -> None:
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), uid, gid)
    os.lchown(path, uid, gid)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hide", action="append", default=[], help="a secret path")
    parser.add_argument("--reveal", action="append", default=[], metavar="DIR:ENTRY[:ENTRY]")
    parser.add_argument("--private-tmp", action="store_true",
                        help="cover /tmp, /var/tmp and /dev/shm with fresh tmpfs")
    parser.add_argument("--tmp-size", type=int, default=None,
                        help="bytes each private /tmp, /var/tmp and /dev/shm holds at most")
    parser.add_argument("--keep-tmp", action="append", default=[], metavar="PATH",
                        help="a path under /tmp, /var/tmp or /dev/shm bound back into its tmpfs")
    parser.add_argument("--mqueue", action="store_true",
                        help="mount the IPC namespace's own message queues on /dev/mqueue")
    parser.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--chown", action="append", default=[],
                        help="a path the unprivileged user must own (its temp dir)")
    parser.add_argument("--writable", action="append", default=[],
                        help="a path that stays writable (its home): never remounted read-only")
    parser.add_argument("--home", default=None, help="the sandbox's home")
    parser.add_argument("--uid", type=int, default=None)
    parser.add_argument("--gid", type=int, default=None)
    # The first step, on the host (``outside``):
    parser.add_argument("--home-size", type=int, default=None,
                        help="the home is a tmpfs of this many bytes (mounted if it is not)")
    parser.add_argument("--cgroup", default=None, help="the sandbox's memory cgroup, to join")
    parser.add_argument("--cgroup-memory", type=int, default=None,
                        help="its limit in bytes (the cgroup is made again if it is gone)")
    parser.add_argument("--unshare", default=None, metavar="FLAG,FLAG",
                        help="then exec unshare with these flags, and this module inside")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    return parser


def outside(args: argparse.Namespace) -> None:
    """On the host, as root, before any namespace: join the cgroup, make sure of the home.

    Shared by both ways a sandbox starts, like ``enter``. ``grader.sandbox``
    prepared both already (``Sandbox.plan``); a notebook kernel restarted after
    ``Sandbox.kill`` finds them gone and makes them again, here.
    """
    from grader import sandbox
    from grader.sandbox import cgroup

    if args.cgroup is not None:
        try:
            group = cgroup.ensure(Path(args.cgroup), args.cgroup_memory) \
                if args.cgroup_memory is not None else Path(args.cgroup)
            cgroup.join(group)
        except OSError as exc:
            raise SystemExit(f"capgrade sandbox: could not join its cgroup: {exc}") from None
    if args.home_size is not None and args.home is not None:
        try:
            sandbox.mount_home(args.home, args.home_size)
            # Started in the home before the tmpfs was there (a restart): the cwd is still
            # the folder on disk beneath it. Entered again, it is the tmpfs.
            os.chdir(os.getcwd())
        except OSError as exc:
            raise SystemExit(f"capgrade sandbox: its home's tmpfs: {exc}") from None


def enter(args: argparse.Namespace) -> None:
    """Mounts, ownership, limits, then the unprivileged user for good: the sandbox's inside.

    Shared by both ways a sandbox starts: this module run by ``unshare`` before
    an exec, and a child of the fork server (``grader.sandbox.forkserver``).
    """
    writable = tuple(os.path.realpath(w) for w in args.writable)
    try:
        if args.private_tmp:
            drop_foreign_homes(os.path.realpath(args.home) if args.home else None)
        covered = []
        for spec in args.reveal:
            blocked, *entries = spec.split(":")
            reveal(blocked, entries, writable=writable)
            covered.append(blocked)
        if args.private_tmp:
            size = f"size={args.tmp_size}," if args.tmp_size is not None else ""
            for shared in PRIVATE_TMP:
                if not os.path.isdir(shared):
                    if os.path.dirname(shared) not in covered:
                        continue  # not there, and not in a tmpfs of ours to make it in
                    os.makedirs(shared)
                keep = [e for e in args.keep_tmp if e == shared or e.startswith(shared + "/")]
                reveal(shared, keep, mode="1777", options=f"{size}nr_inodes={TMPFS_INODES}",
                       flags=MS_NOSUID | MS_NODEV, writable=writable)
        if args.mqueue and os.path.isdir("/dev/mqueue"):
            _mount("mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        for path in args.hide:
            if os.path.exists(path):
                hide(path)
    except OSError as exc:
        raise SystemExit(f"capgrade sandbox: mount failed: {exc}") from None
    gid = args.gid if args.gid is not None else args.uid
    if args.uid is not None:
        for path in args.chown:
            _chown_tree(path, args.uid, gid)
    apply_limits(args.limit)
    if args.uid is not None:
        drop_to(args.uid, gid)


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    """(options, COMMAND) of ``[options] -- COMMAND``."""
    if "--" not in argv:
        return argv, []
    at = argv.index("--")
    return argv[:at], argv[at + 1:]


def main(argv: list[str] | None = None) -> None:
    from grader.sandbox import OUTSIDE_OPTIONS

    argv = sys.argv[1:] if argv is None else argv
    options, command = _split(argv)
    cli = parser()
    args = cli.parse_args(options)
    if not command:
        cli.error("no command to run")
    outside(args)
    if args.unshare is not None:  # the inside step, in the namespaces, without these options
        inside = [o for o in options if not o.startswith((*OUTSIDE_OPTIONS, "--unshare="))]
        sys.stdout.flush()
        os.execvp("unshare", ["unshare", *args.unshare.split(","), sys.executable, "-m",
                              "grader.sandbox.launch", *inside, "--", *command])
    enter(args)
    sys.stdout.flush()
    if os.getpid() == 1:
        # A host pid means nothing in here; ipykernel would take its absence for a dead parent.
        os.environ.pop("JPY_PARENT_PID", None)
        init(lambda: os.execvp(command[0], command))
    os.execvp(command[0], command)


def init(start: Callable[[], object]) -> NoReturn:
    """Stay as the PID namespace's init: ``start()`` runs as pid 2; reap, exit with its status.

    The kernel ignores signals sent to its init from inside, so the worker must
    not be pid 1 or a student's ``os.kill(os.getpid(), 9)`` would do nothing.
    """
    child = os.fork()
    if child == 0:
        try:
            start()  # execs, or runs the worker and leaves with os._exit
        finally:
            os._exit(70)
    # A kernel interrupt is SIGINT to the whole process group: it is for the child.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        pid, status = os.wait()
        if pid == child:
            os._exit(os.waitstatus_to_exitcode(status) % 256 if os.WIFEXITED(status)
                     else 128 + os.WTERMSIG(status))


if __name__ == "__main__":
    main()
