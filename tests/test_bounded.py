"""Bounded on the trusted side: hostile replies are refused before the harness decodes them.

Crafted bytes go through the harness's real reading and decoding path
(``Submission._receive``: ``grader.protocol.receive``, ``Reply.decode``) with no
sandbox: a reply over a cap is the student's outcome (the check fails with a
message that says what was too large), and the harness's memory stays bounded
(peak RSS measured in a subprocess that does only the harness's side). One slow
test grades a submission whose function returns 600 MB.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import threading
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import pytest

from grader import protocol
from grader.harness.channel import Channel
from grader.harness.client import Submission
from grader.harness.judging import CheckFailure, require_ok
from grader.protocol import TOO_LARGE, WIRE, MessageTooLarge, Reply
from tests.conftest import REFERENCE

ROOT = Path(__file__).resolve().parent.parent
#: The most the harness may grow while receiving a hostile reply.
GROWTH_LIMIT_MB = 150


# -- crafting replies ---------------------------------------------------------------------


def craft(structure: str, tensors: dict[str, dict] | None = None, body: bytes = b"") -> bytes:
    """A safetensors message whose JSON structure and tensor entries are given verbatim."""
    header = {"__metadata__": {"capgrade": structure}, **(tensors or {})}
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


REPLY_OF_ARRAY = '{"ok": true, "value": {"__array__": "a0"}, "output": "", "error": null}'


class _Proc:
    """Stands in for the worker process: alive, exits with 1 when waited for."""

    pid = None

    def poll(self):
        return None

    def wait(self, timeout=None):
        return 1


class _Watch:
    """Stands in for the client's watch on the worker: every question answered with None."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


_WATCH = _Watch()


def reading(feed) -> Submission:
    """A Submission whose reply pipe is fed by ``feed(connection)`` in a thread (no worker)."""
    sub = Submission(REFERENCE)
    read_fd, write_fd = os.pipe()
    sub.proc, sub._stderr = _Proc(), None
    sub._channel = Channel(None, Connection(read_fd, writable=False), sub.proc)
    sender = Connection(write_fd, readable=False)

    def run():
        try:
            feed(sender)
        except OSError:  # the harness stopped reading: what a refused sender sees
            pass
        finally:
            sender.close()

    threading.Thread(target=run, daemon=True).start()
    return sub


def sending(data: bytes):
    return lambda sender: sender.send_bytes(data)


def receive(sub: Submission):
    return sub._receive(10, "running rnn_step_forward", _WATCH)


def assert_refused(outcome, *words: str) -> None:
    assert not outcome.ok
    assert outcome.error.type == TOO_LARGE, outcome.error
    for word in words:
        assert word in outcome.error.message, outcome.error.message
    with pytest.raises(CheckFailure) as failed:  # the student's outcome: the check fails
        require_ok(outcome, "rnn_step_forward")
    assert failed.value.message == f"rnn_step_forward: {outcome.error.message}"


# -- the reply as a whole -------------------------------------------------------------------


def test_an_over_long_reply_is_refused_after_its_length_prefix_and_the_worker_closed():
    def claim_600_mb(sender):  # multiprocessing's framing: a 4-byte big-endian length, data
        os.write(sender.fileno(), struct.pack("!i", 600_000_000) + b"\0" * 1000)

    sub = reading(claim_600_mb)
    connection = sub._channel.replies
    outcome = receive(sub)
    assert_refused(outcome, "larger than 64 MB", "the most one reply may hold")
    assert connection.closed  # CPython closes a read-only connection it refused
    assert sub.proc is None  # and the worker was stopped: the next call starts a fresh one


def test_a_reply_over_the_byte_limit_is_refused_before_decoding():
    size = 70_000_000
    data = craft(REPLY_OF_ARRAY, {"a0": {"dtype": "U8", "shape": [size],
                                         "data_offsets": [0, size]}}, bytes(size))
    assert len(data) > WIRE.message_bytes
    with pytest.raises(MessageTooLarge, match="is 70 MB; the most one reply may hold is 64 MB"):
        Reply.decode(data)


# -- the JSON structure -------------------------------------------------------------------


def test_json_amplification_is_refused_before_it_is_parsed():
    # 45 MB of empty lists became 2.2 GB of Python lists in the harness.
    amplifier = "[" + ",".join(["[]"] * 4_000_000) + "]"  # 12 MB: over the header's cap
    sub = reading(sending(craft(amplifier)))
    assert_refused(receive(sub), "is 12 MB; the most it may hold is 10 MB")
    # Under the header's cap, the structure's own caps: characters, then values.
    with pytest.raises(MessageTooLarge, match="take 4,500,001 characters"):
        Reply.decode(craft("[" + ",".join(["[]"] * 1_500_000) + "]"))
    many = '{"ok": true, "value": [' + ",".join(["[]"] * 300_000) + '], "output": ""}'
    with pytest.raises(MessageTooLarge, match="more than 250,000 values"):
        Reply.decode(craft(many))


def test_deep_nesting_is_refused_before_it_is_parsed():
    deep = '{"ok": true, "value": ' + "[" * 40 + "]" * 40 + "}"
    sub = reading(sending(craft(deep)))
    assert_refused(receive(sub), "41 levels deep", "the most one reply may nest is 32")
    # Brackets inside strings are text, not nesting.
    fine = '{"ok": true, "value": "' + "[" * 1000 + '\\" {{", "output": ""}'
    assert Reply.decode(craft(fine)).value == "[" * 1000 + '" {{'


def test_a_long_string_is_refused():
    text = '{"ok": true, "value": null, "output": "' + "y" * 200_000 + '"}'
    with pytest.raises(MessageTooLarge, match="a text of 200,000 characters"):
        Reply.decode(craft(text))


# -- tensors --------------------------------------------------------------------------------


def test_tensor_shapes_are_held_to_the_byte_budget_before_loading():
    # The header claims 150M float32 values (600 MB); only 16 bytes follow.
    claim = {"a0": {"dtype": "F32", "shape": [150_000_000],
                    "data_offsets": [0, 600_000_000]}}
    sub = reading(sending(craft(REPLY_OF_ARRAY, claim, bytes(16))))
    assert_refused(receive(sub), "600 MB of tensors", "64 MB")
    # Shapes whose product overflows 64 bits are plain integers here.
    huge = {"a0": {"dtype": "F64", "shape": [2 ** 40, 2 ** 40], "data_offsets": [0, 8]}}
    with pytest.raises(MessageTooLarge, match="of tensors"):
        Reply.decode(craft(REPLY_OF_ARRAY, huge, bytes(8)))


def test_too_many_tensors_are_refused():
    entries = {f"a{i}": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}
               for i in range(WIRE.arrays + 1)}
    with pytest.raises(MessageTooLarge, match="10,001 tensors"):
        Reply.decode(craft(REPLY_OF_ARRAY.replace("a0", "a1"), entries))


def test_legitimate_large_replies_are_read_and_tensors_not_copied():
    # The overfit probe's largest: loss histories and ~2M float32 trained parameters.
    parameters = [np.ones((1000, 1000), np.float32), np.ones((1000, 1000), np.float32)]
    value = {"losses": [float(i) / 7 for i in range(10_000)], "seconds": 1.5,
             "parameters": parameters}
    data = Reply(True, value, output="x" * 20_000).encode()
    reply = receive(reading(sending(data)))
    assert reply.ok and reply.output == "x" * 20_000
    assert reply.value["losses"] == value["losses"]
    got = reply.value["parameters"]
    assert [a.shape for a in got] == [(1000, 1000)] * 2 and all((a == 1).all() for a in got)
    assert not got[0].flags.writeable  # a read-only view of the received bytes


# -- texts the harness keeps ----------------------------------------------------------------


def test_error_texts_are_cut_on_the_trusted_side():
    frames = [{"line": i, "function": "f" * 5_000, "code": "c" * 10_000} for i in range(50)]
    frames.append({"code": "x = 1"})  # no line, no function: filled in, not a KeyError later
    error = {"type": "E" * 5_000, "message": "m" * 90_000, "frames": frames,
             "not_implemented": False, "grader_encoder": False, "stage": ""}
    data = protocol.encode({"ok": False, "value": None, "output": "o" * 90_000,
                            "error": error})
    outcome = receive(reading(sending(data)))
    err = outcome.error
    assert len(err.message) <= protocol.ERROR_MESSAGE_CAP and "more characters cut" in err.message
    assert len(err.type) <= protocol.ERROR_TYPE_CAP
    assert len(err.frames) == protocol.MAX_FRAMES
    assert all(len(f["code"]) <= protocol.FRAME_CODE_CAP for f in err.frames)
    assert err.frames[-1] == {"line": 0, "function": "", "code": "x = 1", "qualname": ""}
    assert len(outcome.output) <= protocol.REPLY_OUTPUT_CAP
    with pytest.raises(CheckFailure) as failed:
        require_ok(outcome, "rnn_step_forward")
    assert len(failed.value.message) < 5_000


# -- the worker's side (best effort: an honest worker says why in the same words) ----------


def test_the_worker_refuses_huge_tensors_before_copying_them():
    import torch

    from grader.worker.values import to_wire

    huge = torch.zeros(1).expand(17_000_000)  # 68 MB as a contiguous copy, none allocated
    with pytest.raises(MessageTooLarge, match="68 MB of tensors"):
        to_wire([torch.ones(3), huge])
    reply = Reply.decode(Reply(True, [0.5] * 300_000, output="printed").encode())
    assert not reply.ok and reply.error.type == TOO_LARGE and reply.output == "printed"
    assert "more than 250,000 values" in reply.error.message


# -- the harness's memory while receiving (a subprocess that does only the harness's side) --

_WRITER = textwrap.dedent('''
    import json, os, struct, sys
    from multiprocessing.connection import Connection
    fd, kind = int(sys.argv[1]), sys.argv[2]
    try:
        if kind == "amplification":  # 45 MB of empty JSON lists
            structure = "[" + ",".join(["[]"] * 15_000_000) + "]"
            raw = json.dumps({"__metadata__": {"capgrade": structure}}).encode()
            Connection(fd, readable=False).send_bytes(struct.pack("<Q", len(raw)) + raw)
        else:  # a 600 MB float32 tensor, streamed in multiprocessing's framing
            meta = '{"ok": true, "value": {"__array__": "a0"}, "output": "", "error": null}'
            raw = json.dumps({"__metadata__": {"capgrade": meta}, "a0": {
                "dtype": "F32", "shape": [150_000_000],
                "data_offsets": [0, 600_000_000]}}).encode()
            head = struct.pack("<Q", len(raw)) + raw
            os.write(fd, struct.pack("!i", len(head) + 600_000_000) + head)
            chunk, left = memoryview(bytes(1 << 20)), 600_000_000
            while left:
                left -= os.write(fd, chunk[:min(left, len(chunk))])
    except BrokenPipeError:  # refused: the harness stopped reading
        pass
''')

_HARNESS = textwrap.dedent('''
    import json, os, subprocess, sys
    from multiprocessing.connection import Connection
    from grader.harness.channel import Channel
    from grader.harness.client import Submission

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))

    class Proc:
        pid = None
        def poll(self): return None
        def wait(self, timeout=None): return 1

    class Watch:
        def __getattr__(self, name): return lambda *args, **kwargs: None

    read_fd, write_fd = os.pipe()
    writer = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(write_fd), sys.argv[2]],
                              pass_fds=(write_fd,))
    os.close(write_fd)
    sub = Submission(sys.argv[3])
    sub.proc, sub._stderr = Proc(), None
    sub._channel = Channel(None, Connection(read_fd, writable=False), sub.proc)
    watch = Watch()
    # ru_maxrss would carry the parent's (pytest's) peak across the exec: VmHWM, reset here.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status("VmRSS")
    try:
        outcome = sub._receive(120, "running rnn_step_forward", watch)
        said = {"ok": outcome.ok, "type": outcome.error.type, "message": outcome.error.message}
    except Exception as exc:
        said = {"raised": repr(exc)[:300]}
    peak = status("VmHWM")
    writer.wait()
    print(json.dumps({"growth_mb": (peak - base) / 1024, "base_mb": base / 1024, **said}))
''')


def harness_growth(kind: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _HARNESS, _WRITER, kind, str(REFERENCE)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind, words", [
    ("amplification", "tensors) is 45 MB; the most it may hold is 10 MB"),
    ("tensor", "larger than 64 MB"),
])
def test_harness_memory_stays_bounded_while_receiving_hostile_replies(kind, words):
    measured = harness_growth(kind)
    print(f"{kind}: harness peak RSS growth {measured['growth_mb']:.1f} MB "
          f"(base {measured['base_mb']:.1f} MB)")
    assert measured.get("type") == TOO_LARGE and words in measured["message"], measured
    assert measured["growth_mb"] < GROWTH_LIMIT_MB, measured


# -- end to end -----------------------------------------------------------------------------

_GRADE = textwrap.dedent('''
    import json, sys
    from grader.harness.engine import run_checks

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status("VmRSS")
    result = run_checks(sys.argv[1], only="rnn_step_forward_public or word_embedding_public")
    peak = status("VmHWM")
    print(json.dumps({"growth_mb": (peak - base) / 1024, "base_mb": base / 1024,
                      "checks": {c.id: [c.status, c.message] for c in result.checks}}))
''')


@pytest.mark.slow
def test_a_function_returning_600_mb_fails_its_check_and_the_harness_stays_small(tmp_path):
    from tests.hostile import Hostile

    case = Hostile("return_600_mb", "return a 600 MB tensor", "reference",
                   "the reply's byte limit (grader.protocol.WIRE), on both sides",
                   in_function="return torch.ones(150_000_000), None")
    path = case.write(tmp_path)
    done = subprocess.run([sys.executable, "-c", _GRADE, str(path)], capture_output=True,
                          text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"harness peak RSS growth {measured['growth_mb']:.1f} MB "
          f"(base {measured['base_mb']:.1f} MB)")
    checks = measured["checks"]
    attacked, honest = checks["rnn_step_forward_public"], checks["word_embedding_public"]
    assert attacked[0] == "failed", attacked
    assert "600 MB of tensors" in attacked[1] and "64 MB" in attacked[1], attacked
    assert honest[0] == "passed", honest
    assert measured["growth_mb"] < GROWTH_LIMIT_MB, measured


@pytest.mark.slow
def test_a_module_that_rewrites_the_workers_encoder_is_still_refused_by_the_broker(tmp_path):
    """The student process shares an interpreter with the worker's encoder and its caps: both
    are the student's to rewrite. The broker, which runs no student code, refuses the
    reply after its length prefix, and the check fails as the student's."""
    from grader.harness.engine import run_checks
    from tests.hostile import Hostile

    case = Hostile(
        "rewrite_the_encoder", "send 100 MB of bytes past the worker's own caps", "reference",
        "the broker's receive cap (grader.protocol.receive)",
        in_function=("import grader.protocol as _wire\n"
                     "_wire.Reply.encode = lambda self: bytes(100 << 20)"))
    result = run_checks(case.write(tmp_path),
                        only="rnn_step_forward_public or word_embedding_public")
    checks = {c.id: c for c in result.checks}
    attacked, honest = checks["rnn_step_forward_public"], checks["word_embedding_public"]
    assert attacked.status == "failed" and "larger than 64 MB" in attacked.message, attacked
    assert not attacked.regrade
    assert honest.status == "passed", honest.message
