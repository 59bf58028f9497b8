"""The fork server process: imports torch and the worker once, forks each worker into its sandbox.

Started by the harness (``grader.sandbox.forkserver``, which documents the
design and the wire). It never imports or runs student code. Each fork leaves
the server behind (its channel closed, the sandbox's environment, session and
home), joins the sandbox's memory cgroup on the host (``launch.outside``),
enters the sandbox as ``unshare`` + ``grader.sandbox.launch`` would for an
exec'd worker (``unshare(2)`` with the same namespaces: mount, network, IPC,
UTS, PID, and a user namespace where not root), and becomes the worker
(``grader.worker.process.run``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import selectors
import signal
import socket
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

from grader import sandbox
from grader.sandbox.forkserver import MESSAGE, PLACEHOLDER_ID

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, \
    0x40000000
CLONE_NEWUTS, CLONE_NEWIPC = 0x04000000, 0x08000000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE = 1, 4


def serve(fd: int) -> None:
    """Import everything once, say ready, then fork a worker per request and report exits."""
    from grader.sandbox import launch  # noqa: F401 - each fork uses it
    from grader.worker import process

    problem = process.preload()
    channel = socket.socket(fileno=fd)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    os.set_blocking(wake_read, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_write)
    events = selectors.DefaultSelector()
    events.register(channel, selectors.EVENT_READ)
    events.register(wake_read, selectors.EVENT_READ)
    channel.send(json.dumps({"ready": os.getpid()}).encode())
    own = (fd, wake_read, wake_write)
    while True:
        for key, _ in events.select():
            if key.fileobj is channel:
                data, fds, _, _ = socket.recv_fds(channel, MESSAGE, 8)
                if not data:
                    return  # the harness is gone; our children die with us
                try:
                    pid = _spawn(json.loads(data)["spawn"], fds, own, problem)
                    channel.send(json.dumps({"spawned": pid}).encode())
                except Exception as exc:  # a bad spec or fork failure: say so, go on
                    channel.send(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
                finally:
                    for received in fds:
                        os.close(received)
            else:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_read, 512)
            _reap(channel)


def _reap(channel: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        channel.send(json.dumps({"exit": pid,
                                 "code": os.waitstatus_to_exitcode(status)}).encode())


def _spawn(spec: dict[str, Any], fds: list[int], own: tuple[int, ...],
           problem: str | None) -> int:
    if len(fds) != 3:
        raise ValueError(f"a worker needs 3 file descriptors, got {len(fds)}")
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            _become_worker(spec, fds, own, parent, problem)
        except BaseException:
            with contextlib.suppress(Exception):
                os.write(2, traceback.format_exc().encode()[-4000:])
        os._exit(70)
    return pid


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _die_with_parent(parent: int | None) -> None:
    """SIGKILL when the parent dies (a PID namespace's init sees no parent: ``None``)."""
    _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if parent is not None and os.getppid() != parent:  # it died before the line above
        os._exit(70)


def _close_all_but(keep: set[int]) -> None:
    """Close every other descriptor, as an exec with ``close_fds`` would have."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _become_worker(spec: dict[str, Any], fds: list[int], own: tuple[int, ...],
                   server: int, problem: str | None) -> NoReturn:
    """In the fork: leave everything of the server behind, enter the sandbox, serve."""
    from grader.sandbox import launch

    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for fd in own:
        os.close(fd)  # the server's channel must be out of the student's reach
    _die_with_parent(server)
    requests, replies, stderr = fds
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(stderr, 2)
    _close_all_but({0, 1, 2, requests, replies})
    os.setsid()
    os.environ.clear()
    os.environ.update(spec["env"])
    _stamp_environ(spec["env"][sandbox.SANDBOX_ID_VAR])
    started_in = os.getcwd()
    os.chdir(spec["cwd"])
    if sys.path and sys.path[0] == started_in:  # ``python -m`` put the server's cwd first
        sys.path[0] = spec["cwd"]
    args = launch.parser().parse_args(spec["launch"])
    launch.outside(args)  # on the host, as root: into its cgroup before anything else
    _fresh_state()
    flags = spec.get("unshare")
    if flags is not None:
        _unshare(flags)
        init = os.fork()  # the first child in the new PID namespace is its pid 1
        if init != 0:
            _wait_and_exit(init)  # as ``unshare --fork --kill-child`` does
        _die_with_parent(None)
        if "--mount" in flags:  # (no process may start before this one: it is pid 1)
            launch.make_private()
            launch.mount_proc()
    launch.enter(args)
    # A user switch clears the parent-death signal: set again, the sandbox still dies with
    # the server (whose death the harness sees), never outliving what could report its end.
    _die_with_parent(None)
    # It also leaves the process undumpable (its /proc files root's): set it back, as the
    # exec after ``launch`` would; the broker hides itself again.
    _libc().prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    _derived_from_environment()
    sys.stdout.flush()

    def worker() -> NoReturn:
        from grader.worker import process

        sys.argv = [process.__file__, "--request-fd", str(requests), "--reply-fd", str(replies)]
        process.run(requests, replies, problem)

    if os.getpid() == 1:
        launch.init(worker)
    worker()


def _wait_and_exit(child: int) -> NoReturn:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a kernel interrupt is for the worker
    while True:
        pid, status = os.waitpid(child, 0)
        if pid == child:
            os._exit(os.waitstatus_to_exitcode(status) % 256 if os.WIFEXITED(status)
                     else 128 + os.WTERMSIG(status))


def _unshare(flags: list[str]) -> None:
    """``unshare(2)`` with what ``unshare(1)``'s ``flags`` ask for (user namespace mapped)."""
    uid, gid = os.getuid(), os.getgid()
    bits = CLONE_NEWNS if "--mount" in flags else 0
    bits |= CLONE_NEWNET if "--net" in flags else 0
    bits |= CLONE_NEWIPC if "--ipc" in flags else 0
    bits |= CLONE_NEWUTS if "--uts" in flags else 0
    bits |= CLONE_NEWPID if "--pid" in flags else 0
    bits |= CLONE_NEWUSER if "--user" in flags else 0
    if _libc().unshare(bits) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"unshare failed: {os.strerror(errno)}")
    if bits & CLONE_NEWUSER:  # --map-root-user
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"0 {uid} 1")
        Path("/proc/self/gid_map").write_text(f"0 {gid} 1")


def _stamp_environ(sandbox_id: str) -> None:
    """Write this sandbox's id over the placeholder in the environment block the kernel shows.

    ``/proc/PID/environ`` is the block the exec made, not ``os.environ``: the
    harness finds a sandbox's stragglers by that id (``grader.sandbox.reaping._kill_carrying``).
    """
    marker = f"{sandbox.SANDBOX_ID_VAR}={PLACEHOLDER_ID}".encode()
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    start, end = int(fields[47]), int(fields[48])  # env_start, env_end (fields 50, 51)
    with open("/proc/self/mem", "r+b", buffering=0) as mem:
        mem.seek(start)
        block = mem.read(end - start)
        at = block.find(marker)
        if at < 0 or len(sandbox_id) != len(PLACEHOLDER_ID):
            raise RuntimeError("the fork server's environment has no sandbox-id placeholder")
        mem.seek(start + at + len(marker) - len(PLACEHOLDER_ID))
        mem.write(sandbox_id.encode())


def _derived_from_environment() -> None:
    """What imports derived from the environment and user, derived again for this sandbox."""
    import tempfile

    tempfile.tempdir = None  # cached by the server's first gettempdir(): TMPDIR is new
    cache = sys.modules.get("torch._inductor.runtime.cache_dir_utils")
    if cache is not None:  # torch sets it at import, from TMPDIR and the user's name
        cache.cache_dir()


def _fresh_state() -> None:
    """What a new Python would have drawn itself: fresh seeds for torch, random and numpy.

    A new process seeds each of them from the OS; a fork would otherwise share
    the server's seeds with every other fork.
    """
    import random

    random.seed()
    if "torch" in sys.modules:
        sys.modules["torch"].seed()
    with contextlib.suppress(ImportError):
        import numpy

        numpy.random.seed()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fd", type=int, required=True)
    serve(parser.parse_args().fd)
    os._exit(0)


if __name__ == "__main__":
    main()
