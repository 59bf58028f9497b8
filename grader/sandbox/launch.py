"""The first code to run in a new sandbox: hide secrets, set limits, drop root, exec.

``python -m grader.sandbox.launch [options] -- COMMAND...`` runs inside the
namespaces ``grader.sandbox`` opened with ``unshare``, still as root there, and
does what only root can before any student code exists: it covers each secret
directory with an empty read-only tmpfs (``/dev/null`` over a secret file),
re-exposes only the needed entries of closed directories (a pyenv Python under
``/root``), sets the resource limits, hands the sandbox's temp dir to the
unprivileged user, drops to that user for good and execs COMMAND (the worker
or the notebook kernel), staying behind as the PID namespace's init. These
mounts exist only in the sandbox's namespace.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

from grader.sandbox import apply_limits

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18


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


def reveal(blocked: str, entries: list[str], mode: str = "755") -> None:
    """Cover ``blocked`` with a fresh tmpfs holding only ``entries``, bound back in place.

    Each entry is held open (``O_PATH``) while ``blocked`` is covered, then bound
    back from that descriptor: no stash folder is needed.
    """
    held = [(entry, os.open(entry, os.O_PATH)) for entry in entries]
    _mount("capgrade-open", blocked, "tmpfs", 0, f"mode={mode}")
    for entry, fd in held:
        if os.path.isdir(f"/proc/{os.getpid()}/fd/{fd}"):
            os.makedirs(entry, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(entry), exist_ok=True)
            open(entry, "a").close()
        _mount(f"/proc/{os.getpid()}/fd/{fd}", entry, None, MS_BIND | MS_REC)
        os.close(fd)


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
    parser.add_argument("--keep-tmp", action="append", default=[], metavar="PATH",
                        help="a path under /tmp bound back into the private /tmp")
    parser.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--chown", action="append", default=[],
                        help="a path the unprivileged user must own (its temp dir)")
    parser.add_argument("--uid", type=int, default=None)
    parser.add_argument("--gid", type=int, default=None)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    return parser


def enter(args: argparse.Namespace) -> None:
    """Mounts, ownership, limits, then the unprivileged user for good: the sandbox's inside.

    Shared by both ways a sandbox starts: this module run by ``unshare`` before
    an exec, and a child of the fork server (``grader.sandbox.forkserver``).
    """
    try:
        for spec in args.reveal:
            blocked, *entries = spec.split(":")
            reveal(blocked, entries)
        if args.private_tmp:
            for shared in ("/var/tmp", "/dev/shm"):
                if os.path.isdir(shared):
                    _mount("capgrade-tmp", shared, "tmpfs", 0, "mode=1777")
            reveal("/tmp", args.keep_tmp, mode="1777")
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


def main(argv: list[str] | None = None) -> None:
    cli = parser()
    args = cli.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        cli.error("no command to run")
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
