"""A fork server: Python, torch and the worker's code imported once, each worker forked from it.

This module is the harness's side (it never imports torch); the server itself
is ``grader.worker.forkserver``.

Starting a worker used to cost a fresh Python importing torch and torchvision
(3 s of CPU, most of a quick check run). The fork server pays that once per
grading process (or notebook kernel session) and forks every worker from that
state. It never imports or runs student code, never judges, and holds nothing
secret: its environment is the scrubbed one every sandbox gets.

Each fork then enters its sandbox the way ``unshare`` + ``grader.sandbox.launch``
enter it for an exec'd worker, before any student code exists: its own
session, the sandbox's environment and home, its memory cgroup joined on the
host (``launch.outside``: the harness made it, and mounted the home's tmpfs,
in ``Sandbox.plan``), new network, IPC, UTS, mount and PID namespaces
(``unshare(2)``; a user namespace where not root), ``/proc`` remounted, the
same mounts, limits and user switch (``launch.enter``), a PID-namespace init,
then the worker (``grader.worker.process.run``), which installs its audit hook
and forks the student process. So every worker still starts from the same
pristine state and dies with its submission: nothing it wrote (files, System V
or POSIX IPC, the server's state, which it never touches) reaches the next
fork; the harness's ``Sandbox`` records the same layers.

Wire: a Unix ``SOCK_SEQPACKET`` pair. The harness sends ``{"spawn": spec}`` with
the worker's pipes and stderr file as ``SCM_RIGHTS``; the server answers
``{"spawned": pid}`` and, whenever a child ends, ``{"exit": pid, "code": N}``
(``subprocess`` return-code convention), since only it can reap them.
"""

from __future__ import annotations

import atexit
import contextlib
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
from pathlib import Path
from typing import Any

from grader import sandbox
from grader.settings import SETTINGS

#: The environment variable the fork server starts with, rewritten in place in each
#: fork (``_stamp_environ``): ``/proc/PID/environ`` shows the block the exec made.
PLACEHOLDER_ID = "0" * 32
READY_TIMEOUT = 180.0
MESSAGE = 1 << 16



class ForkServerError(RuntimeError):
    """The fork server could not start or answer: the grader's problem, never the student's."""


# -- harness side (trusted; never imports torch) -------------------------------------------


class ForkedProcess:
    """A worker forked by the server, with the part of ``subprocess.Popen`` the harness uses."""

    def __init__(self, server: ForkServer, pid: int):
        self.server, self.pid = server, pid
        self.returncode: int | None = None

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
            [sys.executable, "-m", "grader.worker.forkserver", "--fd", str(theirs.fileno())],
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
            if message is None and (self.sock.fileno() < 0 or not self.alive()):
                code = self.proc.poll()
                how = "closed its channel" if code is None else f"exited with code {code}"
                raise ForkServerError(f"the fork server {how}{self._tail()}")
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


class ServerHolder:
    """This process's one fork server, and whether fork servers failed here.

    Process-wide on purpose: every worker this grading process starts forks from the
    same server (torch imported once is the point of it), and it dies with the process
    (``atexit``). The lock guards replacing it from the threads a batch run grades in.
    """

    def __init__(self) -> None:
        self.server: ForkServer | None = None
        self.lock = threading.Lock()
        #: Failures seen so far; after the second, ``disabled`` (workers start as a new Python).
        self.failures = 0
        self.disabled = False


def holder() -> ServerHolder:
    """This process's one ``ServerHolder`` (kept on ``grader.settings.SETTINGS``)."""
    return SETTINGS.one(ServerHolder)


def enabled() -> bool:
    """On unless ``CAPGRADE_FORKSERVER=0`` or it failed here (then each worker is a new Python)."""
    return not holder().disabled and SETTINGS.forkserver \
        and sys.platform.startswith("linux") and hasattr(socket, "send_fds")


def failed() -> bool:
    """The server failed: stop it; after a second failure use none in this process.

    Returns whether fork servers are now off here (workers start as a new Python).
    """
    held = holder()
    held.failures += 1
    held.disabled = held.failures >= 2
    shutdown()
    return held.disabled


def server_environment() -> dict[str, str]:
    """What the server imports torch under: a sandbox's scrubbed variables, no home yet."""
    env = sandbox.scrubbed_environment("/nonexistent")
    for name in ("HOME", "TMPDIR"):
        env.pop(name)
    return env


def get() -> ForkServer:
    """This process's fork server, started (not waited for) if there is none or it died."""
    env = server_environment()
    held = holder()
    with held.lock:
        if held.server is not None and (not held.server.alive() or held.server.env != env):
            held.server.close()
            held.server = None
        if held.server is None:
            held.server = ForkServer(env)
        return held.server


def running() -> bool:
    server = holder().server
    return server is not None and server.alive()


def shutdown() -> None:
    """Stop this process's fork server, if any: its torch must not sit beside a notebook's."""
    held = holder()
    with held.lock:
        if held.server is not None:
            held.server.close()
            held.server = None


atexit.register(shutdown)
