"""The worker: the only process that imports and runs student code.

Started by the harness (``python -m grader.worker``) with two pipe file
descriptors. It imports the submission, swaps in the grader's ImageEncoder,
then answers requests ``{"op": "call", "probe": NAME, "params": {...}}`` by
running ``grader.probes.NAME(module, **params)`` and replying with plain data
(see ``grader.protocol``). It never judges anything: the harness does.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import traceback
from multiprocessing.connection import Connection
from types import ModuleType
from typing import Any

OUTPUT_CAP = 20_000  # characters of student stdout/stderr kept per request
STUDENT_MODULE = "rnn_lstm_captioning"


class CappedText(io.TextIOBase):
    """A text sink that keeps the first ``cap`` characters and counts the rest."""

    def __init__(self, cap: int = OUTPUT_CAP):
        self.cap, self.parts, self.kept, self.dropped = cap, [], 0, 0

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


def describe_exception(exc: BaseException, student_file: str) -> dict[str, Any]:
    """Exception type, message and the frames that are in the student's own file."""
    from grader.stubgen import STUB_MARKER

    frames = [
        {"line": f.lineno, "function": f.name, "code": (f.line or "").strip()}
        for f in traceback.extract_tb(exc.__traceback__)
        if f.filename == student_file
    ]
    try:
        message = str(exc)[:2000]
    except Exception:
        message = "<unprintable message>"
    return {
        "type": type(exc).__name__,
        "message": message,
        "frames": frames[-8:],
        "not_implemented": isinstance(exc, NotImplementedError) and STUB_MARKER in message,
    }


def import_submission(path: str) -> ModuleType:
    """Import the student's file as ``rnn_lstm_captioning`` and swap in our encoder."""
    import importlib.util

    from grader import encoder

    spec = importlib.util.spec_from_file_location(STUDENT_MODULE, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} is not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[STUDENT_MODULE] = module
    spec.loader.exec_module(module)
    # Verdicts must not depend on which weights a machine happens to have cached.
    encoder.ALLOW_IMAGENET = False
    module.ImageEncoder = encoder.ImageEncoder
    return module


def serve(path: str, requests: Connection, replies: Connection) -> None:
    import torch

    from grader import probes, protocol
    from grader.forbidden import ForbiddenMonitor

    student_file = os.path.abspath(path)
    # One thread by default: workers run side by side in batch grading, and OpenMP
    # spin-waiting under contention slows small ops by orders of magnitude.
    torch.set_num_threads(int(os.environ.get("CAPGRADE_WORKER_THREADS", "1")))
    # Full-precision matmuls on CUDA too, so tolerances hold on every device.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    monitor = ForbiddenMonitor(student_file)
    monitor.install()

    def run(fn, *args, **kwargs) -> dict[str, Any]:
        out = CappedText()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                value = fn(*args, **kwargs)
            return {"ok": True, "value": protocol.plain(value), "output": out.getvalue()}
        except BaseException as exc:  # SystemExit and KeyboardInterrupt included
            return {"ok": False, "error": describe_exception(exc, student_file),
                    "output": out.getvalue()}

    result = run(import_submission, student_file)
    module = sys.modules.get(STUDENT_MODULE) if result["ok"] else None
    result["value"] = None
    replies.send_bytes(protocol.encode(result))

    while True:
        try:
            request = protocol.decode(requests.recv_bytes())
        except EOFError:
            return
        op = request.get("op")
        if op == "usage":
            reply = {"ok": True, "value": monitor.report(), "output": ""}
        elif op == "call" and module is not None:
            probe = probes.PROBES.get(request["probe"])
            if probe is None:
                reply = {"ok": False, "error": {"type": "ProbeError", "message":
                         f"unknown probe {request['probe']!r}", "frames": [],
                         "not_implemented": False}, "output": ""}
            else:
                reply = run(probe, module, **request.get("params", {}))
        else:
            reply = {"ok": False, "error": {"type": "ProbeError", "message": f"bad op {op!r}",
                     "frames": [], "not_implemented": False}, "output": ""}
        try:
            data = protocol.encode(reply)
        except Exception as exc:  # e.g. a value torch.save cannot store
            data = protocol.encode({"ok": False, "output": reply.get("output", ""), "error": {
                "type": "UnserializableResult", "message": str(exc)[:500], "frames": [],
                "not_implemented": False}})
        replies.send_bytes(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("submission")
    parser.add_argument("--request-fd", type=int, required=True)
    parser.add_argument("--reply-fd", type=int, required=True)
    args = parser.parse_args()
    requests = Connection(args.request_fd, writable=False)
    replies = Connection(args.reply_fd, readable=False)
    serve(args.submission, requests, replies)
    # Skip interpreter teardown: student objects' __del__ must not run after us.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
