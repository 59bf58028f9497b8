"""A fork server: Python, torch and the worker's code imported once, each worker forked from it.

Starting a worker used to cost a fresh Python importing torch and torchvision
(3 s of CPU, most of a quick check run). The fork server pays that once per
grading process (or notebook kernel session) and forks every worker from that
state. It never imports or runs student code, never judges, and holds nothing
secret: its environment is the scrubbed one every sandbox gets.

Each fork then enters its sandbox the way ``unshare`` + ``grader.sandbox.launch``
enter it for an exec'd worker, before any student code exists: its own
session, the sandbox's environment and home, new network, mount and PID
namespaces (``unshare(2)``; a user namespace where not root), ``/proc``
remounted, the same mounts, limits and user switch (``launch.enter``), a
PID-namespace init, then the worker (``grader.worker.process.run``), which
installs its audit hook and forks the student process. So every worker still
starts from the same pristine state and dies with its submission; the
harness's ``Sandbox`` records the same layers.

Wire: a Unix ``SOCK_SEQPACKET`` pair. The harness sends ``{"spawn": spec}`` with
the worker's pipes and stderr file as ``SCM_RIGHTS``; the server answers
``{"spawned": pid}`` and, whenever a child ends, ``{"exit": pid, "code": N}``
(``subprocess`` return-code convention), since only it can reap them.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn

from grader import sandbox

#: The environment variable the fork server starts with, rewritten in place in each
#: fork (``_stamp_environ``): ``/proc/PID/environ`` shows the block the exec made.
PLACEHOLDER_ID = "0" * 32
READY_TIMEOUT = 180.0
MESSAGE = 1 << 16

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, \
    0x40000000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE = 1, 4


class ForkServerError(RuntimeError):
    """The fork server could not start or answer: the grader's problem, never the student's."""


# -- harness side (trusted; never imports torch) -------------------------------------------


class ForkedProcess:
    """A worker forked by the server, with the part of ``subprocess.Popen`` the harness uses."""

    def __init__(self, server: ForkServer, pid: int):
        self.server, self.pid, self.returncode = server, pid, None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.exit_code(self.pid, 0.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self.server.exit_code(self.pid, timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0.0)
        return self.returncode


class ForkServer:
    """The harness's handle on one fork server process."""

    def __init__(self, env: dict[str, str]):
        self.env = dict(env)
        self.tmp = tempfile.TemporaryDirectory(prefix="capgrade-forkserver-")
        os.chmod(self.tmp.name, 0o711)
        self.log = open(Path(self.tmp.name) / "stderr.log", "w+b")  # noqa: SIM115
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "grader.sandbox.forkserver", "--fd", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self.log, cwd=self.tmp.name, start_new_session=True,
            env={**self.env, "HOME": self.tmp.name, "TMPDIR": self.tmp.name,
                 sandbox.SANDBOX_ID_VAR: PLACEHOLDER_ID})
        theirs.close()
        self.sock = ours
        self.lock = threading.Lock()
        self.ready = False
        self.exits: dict[int, int] = {}
        self.forks = 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until the server has imported everything (it starts in the background)."""
        with self.lock:
            if not self.ready:
                self._expect("ready", timeout)
                self.ready = True

    def spawn(self, spec: dict[str, Any], fds: list[int]) -> ForkedProcess:
        """Fork a worker that enters the sandbox ``spec`` describes and serves on ``fds``."""
        self.wait_ready()
        with self.lock:
            try:
                socket.send_fds(self.sock, [json.dumps({"spawn": spec}).encode()], fds)
            except OSError as exc:
                raise ForkServerError(f"the fork server is gone ({exc}){self._tail()}") from None
            reply = self._expect("spawned", 30.0)
        self.forks += 1
        return ForkedProcess(self, int(reply["spawned"]))

    def exit_code(self, pid: int, timeout: float | None) -> int | None:
        """The child's return code once the server reaped it, waiting up to ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            while pid not in self.exits:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not self._read(left):
                    if not self.alive() or self.sock.fileno() < 0:
                        # Its children die with it (PR_SET_PDEATHSIG): report a kill.
                        self.exits.setdefault(pid, -signal.SIGKILL)
                        break
                    if left is not None and left <= 0:
                        return None
            return self.exits.pop(pid)

    def _expect(self, key: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            message = self._read(max(0.0, deadline - time.monotonic()), want=key)
            if message is not None and message is not True:
                return message
            if not self.alive() and message is None:
                raise ForkServerError(f"the fork server exited with code {self.proc.poll()}"
                                      f"{self._tail()}")
            if time.monotonic() >= deadline:
                raise ForkServerError(f"the fork server did not answer in {timeout:g} s "
                                      f"(waiting for {key!r}){self._tail()}")

    def _read(self, timeout: float | None, want: str | None = None) -> Any:
        """One message: exits are filed; returns True for one, the message for ``want``.

        None when nothing came in ``timeout`` or the server is gone.
        """
        if self.sock.fileno() < 0:
            return None
        ready = selectors.DefaultSelector()
        ready.register(self.sock, selectors.EVENT_READ)
        try:
            if not ready.select(timeout):
                return None
        finally:
            ready.close()
        data = self.sock.recv(MESSAGE)
        if not data:
            self.sock.close()
            return None
        message = json.loads(data)
        if "exit" in message:
            self.exits[int(message["exit"])] = int(message["code"])
            return True
        if "error" in message:
            raise ForkServerError(f"the fork server could not start a worker: "
                                  f"{message['error']}")
        if want is not None and want in message:
            return message
        return True

    def _tail(self, chars: int = 600) -> str:
        self.log.flush()
        self.log.seek(max(0, os.fstat(self.log.fileno()).st_size - chars))
        text = self.log.read().decode(errors="replace").strip()
        return f"; its last words: {text}" if text else ""

    def close(self) -> None:
        """Stop the server (its idle state only: workers are the harness's to kill)."""
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.proc.poll() is None:
            sandbox.kill_group(self.proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.log.close()
        self.tmp.cleanup()


_SERVER: ForkServer | None = None
_SERVER_LOCK = threading.Lock()


def enabled() -> bool:
    """On unless ``CAPGRADE_FORKSERVER=0`` or it failed here (then each worker is a new Python)."""
    return not _DISABLED and os.environ.get("CAPGRADE_FORKSERVER", "1") != "0" \
        and sys.platform.startswith("linux") and hasattr(socket, "send_fds")


def failed() -> bool:
    """The server failed: stop it; after a second failure use none in this process.

    Returns whether fork servers are now off here (workers start as a new Python).
    """
    global _DISABLED, _FAILURES
    _FAILURES += 1
    _DISABLED = _FAILURES >= 2
    shutdown()
    return _DISABLED


_FAILURES = 0


_DISABLED = False


def server_environment() -> dict[str, str]:
    """What the server imports torch under: a sandbox's scrubbed variables, no home yet."""
    env = sandbox.scrubbed_environment("/nonexistent")
    for name in ("HOME", "TMPDIR"):
        env.pop(name)
    return env


def get() -> ForkServer:
    """This process's fork server, started (not waited for) if there is none or it died."""
    global _SERVER
    env = server_environment()
    with _SERVER_LOCK:
        if _SERVER is not None and (not _SERVER.alive() or _SERVER.env != env):
            _SERVER.close()
            _SERVER = None
        if _SERVER is None:
            _SERVER = ForkServer(env)
        return _SERVER


def running() -> bool:
    return _SERVER is not None and _SERVER.alive()


def shutdown() -> None:
    """Stop this process's fork server, if any: its torch must not sit beside a notebook's."""
    global _SERVER
    with _SERVER_LOCK:
        if _SERVER is not None:
            _SERVER.close()
            _SERVER = None


atexit.register(shutdown)


# -- server side (imports torch; never student code) --------------------------------------


def serve(fd: int) -> None:
    from grader.worker import process

    process.preload()
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
                    pid = _spawn(json.loads(data)["spawn"], fds, own)
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


def _spawn(spec: dict[str, Any], fds: list[int], own: tuple[int, ...]) -> int:
    if len(fds) != 3:
        raise ValueError(f"a worker needs 3 file descriptors, got {len(fds)}")
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            _become_worker(spec, fds, own, parent)
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
                   server: int) -> NoReturn:
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
    _fresh_state()
    args = launch.parser().parse_args(spec["launch"])
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
        process.run(requests, replies)

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
    harness finds a sandbox's stragglers by that id (``sandbox._kill_carrying``).
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
