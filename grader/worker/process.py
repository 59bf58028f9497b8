"""The worker: the only process that imports and runs student code.

UNTRUSTED side. Started by the harness (``python -m grader.worker.process``, inside
``grader.sandbox``) with two pipe file descriptors. It imports torch and the
grader's worker modules, then waits for its first request (``grader.protocol``):
so a worker can be started ahead of time (batch grading keeps one warm) and the
submission handed to it later. ``Op.IMPORT`` imports the submission with the
grader's ImageEncoder (``grader.worker.loader``); then each ``Op.CALL`` runs
``grader.worker.probes.NAME(module, **params)``, its inputs built here
(``grader.worker.values``), and replies with plain data. ``Op.READ_LOSS_FILE``
parses a hand-in's loss file in a worker that imports no student code. It never
judges anything: the harness does.

It is two processes. The *broker* holds the harness's pipes and never runs
student code; it forks the *student process* before the submission is
imported, relays requests to it over pipes of its own, and forwards only
replies that decode as plain data. So student code cannot write to the
channel the harness reads, and the broker is not ptrace-able by it
(``PR_SET_DUMPABLE`` 0). The student process also refuses sockets, new
processes and signals to other processes (an audit hook, which Python offers
no way to remove): "no network" and "no fork bomb" hold even on a host
without namespaces, for all but code that calls libc directly.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import traceback
from multiprocessing.connection import Connection
from typing import NoReturn

from grader.contract import MODULE_NAME as STUDENT_MODULE
from grader.protocol import (
    BROKEN_ENVIRONMENT,
    TOO_LARGE,
    ErrorInfo,
    MessageTooLarge,
    Op,
    ProtocolError,
    Reply,
    Request,
    receive,
)
from grader.settings import SETTINGS

OUTPUT_CAP = 20_000  # characters of student stdout/stderr kept per request


class CappedText(io.TextIOBase):
    """A text sink that keeps the first ``cap`` characters and counts the rest."""

    def __init__(self, cap: int = OUTPUT_CAP):
        self.cap, self.kept, self.dropped = cap, 0, 0
        self.parts: list[str] = []

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        text = str(text)
        room = self.cap - self.kept
        if room > 0:
            self.parts.append(text[:room])
            self.kept += min(room, len(text))
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def getvalue(self) -> str:
        value = "".join(self.parts)
        if self.dropped:
            value += f"\n[... {self.dropped} more characters of output dropped]"
        return value


def describe_exception(exc: BaseException, student_file: str) -> ErrorInfo:
    """Exception type, message and the frames that are in the student's own file.

    ``grader_encoder`` says the error passed through the grader's ImageEncoder (which
    replaces the provided one while grading), so the feedback can say so.
    """
    from grader.contract import STUB_MARKER
    from grader.course import encoder
    from grader.worker.probe_support import NotImplementedYet

    tb = traceback.extract_tb(exc.__traceback__)
    codes, link = [], exc.__traceback__
    while link is not None:  # one per summary, in the same order
        codes.append(link.tb_frame.f_code)
        link = link.tb_next
    frames = [
        {"line": f.lineno, "function": f.name, "code": (f.line or "").strip(),
         "qualname": getattr(code, "co_qualname", f.name)}
        for f, code in zip(tb, codes, strict=False) if f.filename == student_file
    ]
    try:
        message = str(exc)[:2000]
    except Exception:
        message = "<unprintable message>"
    through_encoder = any(os.path.abspath(f.filename) == os.path.abspath(encoder.__file__)
                          for f in tb) or "ImageEncoder" in message
    return ErrorInfo(
        type=type(exc).__name__,
        message=message,
        frames=frames[-8:],
        not_implemented=(isinstance(exc, NotImplementedError) and STUB_MARKER in message)
        or isinstance(exc, NotImplementedYet),
        grader_encoder=through_encoder,
    )


def read_loss_file(path: str, max_bytes: int) -> dict[str, list[float]]:
    """A hand-in's loss histories as plain numbers (torch's weights_only unpickler, here only).

    A file that cannot be used replies an error of type ``LossFileError`` whose message
    says why, in the student's terms.
    """
    from grader.worker.lossfile_reader import load_loss_file

    return load_loss_file(path, max_bytes=max_bytes)


def serve(requests: Connection, replies: Connection) -> None:
    import torch

    from grader.worker import probes
    from grader.worker.forbidden import ForbiddenMonitor
    from grader.worker.loader import load_submission
    from grader.worker.values import from_wire, to_wire

    try:
        first = Request.decode(requests.recv_bytes())
    except EOFError:
        return  # a warm worker nobody needed
    if first.op not in (Op.IMPORT, Op.READ_LOSS_FILE):
        raise SystemExit(f"capgrade worker: the first request must be an import, not {first!r}")
    student_file = os.path.abspath(first.path)
    # One thread by default: workers run side by side in batch grading, and OpenMP
    # spin-waiting under contention slows small ops by orders of magnitude.
    torch.set_num_threads(int(SETTINGS.worker_threads))
    # Full-precision matmuls on CUDA too, so tolerances hold on every device.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    def run(fn, *args, **kwargs) -> Reply:
        out = CappedText()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                value = fn(*args, **kwargs)
            return Reply(True, to_wire(value), output=out.getvalue())
        except BaseException as exc:  # SystemExit and KeyboardInterrupt included
            return Reply(False, error=describe_exception(exc, student_file),
                         output=out.getvalue())

    if first.op is Op.READ_LOSS_FILE:  # no student code in this worker, ever
        max_bytes = int(first.params.get("max_bytes", 20_000_000))
        replies.send_bytes(_encoded(run(read_loss_file, student_file, max_bytes)))
        return
    monitor = ForbiddenMonitor(student_file)
    monitor.install()
    result = run(load_submission, student_file, allow_imagenet=False)
    module = sys.modules.get(STUDENT_MODULE) if result.ok else None
    result.value = None
    replies.send_bytes(_encoded(result))

    while True:
        try:
            request = Request.decode(requests.recv_bytes())
        except EOFError:
            return
        if request.op is Op.USAGE:
            reply = Reply(True, monitor.report())
        elif request.op is Op.CALL and module is not None:
            probe = probes.PROBES.get(request.probe)
            if probe is None:
                reply = Reply(False, error=ErrorInfo.grader_side(
                    "ProbeError", f"unknown probe {request.probe!r}"))
            else:
                reply = run(_call, probe, module, request.params, from_wire)
        else:
            reply = Reply(False, error=ErrorInfo.grader_side(
                "ProbeError", f"bad op {request.op.value!r}"))
        replies.send_bytes(_encoded(reply))


def _call(probe, module, params, from_wire):
    """Build the inputs the request describes, then run the probe on them."""
    return probe(module, **from_wire(params))


def _encoded(reply: Reply) -> bytes:
    try:
        return reply.encode()
    except Exception as exc:  # e.g. a value the codec cannot store
        return Reply(False, output=reply.output, error=ErrorInfo.grader_side(
            "UnserializableResult", str(exc)[:500])).encode()


#: Audit events the student process refuses (see the module docstring).
_REFUSED = {
    "socket.connect": "network connections", "socket.bind": "network sockets",
    "socket.sendto": "network connections", "socket.sendmsg": "network connections",
    "os.fork": "new processes", "os.forkpty": "new processes", "os.posix_spawn": "new processes",
    "os.exec": "new programs", "os.system": "new programs", "subprocess.Popen": "new programs",
    "pty.spawn": "new programs",
}


def install_guards() -> None:
    """Refuse sockets, new processes and signals to other processes from now on."""
    me = os.getpid()

    def guard(event: str, args: tuple) -> None:
        what = _REFUSED.get(event)
        if what is None and event in ("os.kill", "os.killpg") and args and args[0] not in (0, me):
            what = "signals to other processes"
        if what is not None:
            raise PermissionError(f"capgrade: {what} are not allowed while grading ({event})")

    sys.addaudithook(guard)


def _undumpable() -> None:
    """Keep same-user processes (the student's) from ptrace-ing or reading our memory."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # AttributeError: not Linux
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4


def broker(requests: Connection, replies: Connection, to_student: Connection,
           from_student: Connection) -> bool:
    """Relay requests to the student process and its replies, checked, to the harness.

    Returns True when the student process went away, False when the harness did.
    """
    try:  # the import request: every later request follows a reply
        to_student.send_bytes(requests.recv_bytes())
    except (EOFError, OSError):
        return False
    while True:
        try:
            data = receive(from_student)  # never more than the harness would accept
        except MessageTooLarge as exc:  # the student's outcome; that pipe is closed now
            replies.send_bytes(Reply(False, error=ErrorInfo(TOO_LARGE, str(exc))).encode())
            return False  # so the student process is killed: it may be stuck writing the rest
        except (EOFError, OSError):
            return True  # the student process died: the harness sees our EOF and says so
        try:
            Reply.decode(data)  # a well-formed reply only, or nothing goes through
        except MessageTooLarge as exc:
            data = Reply(False, error=ErrorInfo(TOO_LARGE, str(exc))).encode()
        except ProtocolError as exc:
            data = Reply(False, error=ErrorInfo.grader_side(
                "ProtocolError", f"the worker sent a reply that is not plain data "
                f"({str(exc)[:200]})")).encode()
        replies.send_bytes(data)
        try:
            request = requests.recv_bytes()
        except (EOFError, OSError):
            return False
        try:
            to_student.send_bytes(request)
        except OSError:
            return True


def environment_problem() -> str | None:
    """Why torch and torchvision cannot be imported together here (the harness adds the fix).

    A pair built for each other is needed (PyPI's torchvision beside another
    build of torch fails with "operator torchvision::nms does not exist"): that
    is the installation's fault, so it must never read as the submission's.
    """

    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except Exception as exc:  # ImportError, RuntimeError, OSError (a missing .so) alike
        from grader import installed_versions

        found = installed_versions(("torch", "torchvision"))
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        reason = f"{type(exc).__name__}: {first}"
        return (f"the Python environment is broken, not your code: {' and '.join(found)} "
                f"cannot be imported together ({reason})")
    return None


def preload() -> str | None:
    """Import everything a worker needs before any submission: torch and the worker's code.

    A fork server (``grader.sandbox.forkserver``) does this once and forks
    workers that have it all already. A torch/torchvision pair that does not
    import is returned (``environment_problem``), not raised: ``run`` given it
    answers every request with it, so the harness reports the environment.
    """
    problem = environment_problem()
    if problem is not None:
        return problem
    import torch  # noqa: F401 - imported once, before the fork, and shared

    # Everything importing a submission needs, so a warm worker has it all loaded.
    from grader import contract, protocol  # noqa: F401
    from grader.course import encoder  # noqa: F401
    from grader.worker import forbidden, probes  # noqa: F401
    return None


def _refuse_all(requests: Connection, replies: Connection, problem: str) -> None:
    """Answer every request with the environment's problem until the harness hangs up."""
    while True:
        try:
            requests.recv_bytes()
        except (EOFError, OSError):
            return
        replies.send_bytes(Reply(False, error=ErrorInfo.grader_side(
            BROKEN_ENVIRONMENT, problem)).encode())


def run(request_fd: int, reply_fd: int, problem: str | None = None) -> NoReturn:
    """Be the broker on these pipes and fork the student process; exit as it did.

    ``problem``: what ``preload`` found wrong with the environment, if anything.
    """
    if problem is not None:  # no student code runs: every request gets the problem
        _refuse_all(Connection(request_fd, writable=False), Connection(reply_fd, readable=False),
                    problem)
        os._exit(0)
    down_read, down_write = os.pipe()
    up_read, up_write = os.pipe()
    student = os.fork()
    if student == 0:
        for fd in (request_fd, reply_fd, down_write, up_read):
            os.close(fd)
        install_guards()
        serve(Connection(down_read, writable=False),
              Connection(up_write, readable=False))
    else:
        for fd in (down_read, up_write):
            os.close(fd)
        _undumpable()
        student_gone = broker(
            Connection(request_fd, writable=False), Connection(reply_fd, readable=False),
            Connection(down_write, readable=False), Connection(up_read, writable=False))
        if not student_gone:
            os.kill(student, 9)
        _, status = os.waitpid(student, 0)
        # Exit as the student process did, so the harness can say how it ended.
        os._exit(os.waitstatus_to_exitcode(status) % 256 if os.WIFEXITED(status)
                 else 128 + os.WTERMSIG(status))
    # Skip interpreter teardown: student objects' __del__ must not run after us.
    sys.stdout.flush()
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--request-fd", type=int, required=True)
    parser.add_argument("--reply-fd", type=int, required=True)
    args = parser.parse_args()
    run(args.request_fd, args.reply_fd, preload())


if __name__ == "__main__":
    main()
