"""The messages between the trusted harness and the worker (both sides; no torch).

The messages are the dataclasses below, each written in one place: a
``Request`` (``Op``), a ``Reply`` and, when the student's code failed, an
``ErrorInfo``. Each travels as one bounded safetensors blob (``grader.wire``,
whose public names are re-exported here: the codec, ``WIRE`` and its errors).

``Reply.decode`` holds a worker's reply to ``WIRE`` before decoding it, then cuts
every text it keeps (error message, type, frames, captured output) to its cap.
The worker holds its replies to the same limits (``Reply.encode``,
``grader.worker.values.to_wire``) so an honest one says why in the same words;
the harness never relies on that.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from grader.wire import (
    ARRAY,
    TUPLE,
    WIRE,
    Limits,
    MessageTooLarge,
    ProtocolError,
    decode,
    encode,
    megabytes,
    receive,
)

#: The codec's names, re-exported: both sides import the boundary's vocabulary from here.
__all__ = ["ARRAY", "BROKEN_ENVIRONMENT", "ERROR_MESSAGE_CAP", "ERROR_TYPE_CAP",
           "FRAME_CODE_CAP", "INPUT", "MAX_FRAMES", "MAX_REPR", "OBJECT", "REPLY_OUTPUT_CAP",
           "SUBCLASS",
           "TOO_LARGE", "TUPLE", "UNSUPPORTED", "WIRE", "ErrorInfo", "Limits",
           "MessageTooLarge", "Op", "ProtocolError", "Reply", "Request", "cut", "decode",
           "describe", "dtype_name", "encode", "megabytes", "receive"]

#: Tags for values that are not plain data, so the harness can say what came back.
OBJECT = "__capgrade_object__"
SUBCLASS = "__capgrade_tensor_subclass__"
#: A tensor whose dtype has no numpy equivalent (bfloat16, ...): kept as its dtype name.
UNSUPPORTED = "__capgrade_tensor_dtype__"
#: An input the worker builds (seeded random tensors, the course's inputs): see checks/inputs.
INPUT = "__input__"

MAX_REPR = 200

#: ``ErrorInfo.type`` of a reply refused for its size: the check it answers fails with the
#: message, which says what was too large and the limit (``judging.require_ok``).
TOO_LARGE = "MessageTooLarge"
#: ``ErrorInfo.type`` of every reply of a worker whose torch/torchvision cannot be imported:
#: the installation's problem, reported as the environment's, never as the submission's.
BROKEN_ENVIRONMENT = "BrokenEnvironment"

#: What the harness keeps of a reply's texts (the worker cuts them first; it is not relied on).
ERROR_MESSAGE_CAP = 2_000  # an exception's message
ERROR_TYPE_CAP = 100  # an exception's type name, a frame's function name
FRAME_CODE_CAP = 200  # the code line of a frame in the student's file
MAX_FRAMES = 8  # frames kept (the innermost)
REPLY_OUTPUT_CAP = 20_500  # captured output (the worker keeps 20,000 characters and a note)


def cut(text: str, cap: int) -> str:
    """``text`` cut to ``cap`` characters, saying how many were dropped."""
    if len(text) <= cap:
        return text
    note = f" [... {len(text) - cap:,} more characters cut]"
    return text[:max(0, cap - len(note))] + note


# -- the messages ---------------------------------------------------------------------------


class Op(str, enum.Enum):
    """What the harness asks of a worker."""

    IMPORT = "import"  # the first request: import the submission at ``path``
    CALL = "call"  # run ``grader.worker.probes.<probe>(module, **params)``
    USAGE = "usage"  # forbidden-API uses seen so far
    READ_LOSS_FILE = "read_loss_file"  # the first and only request: parse a hand-in's losses


@dataclass(frozen=True)
class Request:
    op: Op
    path: str = ""  # IMPORT, READ_LOSS_FILE: the file, inside the worker's home
    probe: str = ""  # CALL: the probe's name
    params: dict[str, Any] = field(default_factory=dict)  # CALL: keyword arguments

    def encode(self) -> bytes:
        return encode({"op": self.op.value, "path": self.path, "probe": self.probe,
                       "params": self.params})

    @classmethod
    def decode(cls, data: bytes) -> Request:
        """A request of the harness (the trusted side: not held to the wire limits)."""
        raw = decode(data, None)
        try:
            return cls(Op(raw["op"]), str(raw["path"]), str(raw["probe"]), dict(raw["params"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"not a request ({exc})") from None


@dataclass
class ErrorInfo:
    """Why a call did not return: the exception and where in the student's file it arose."""

    type: str
    message: str
    frames: list[dict[str, Any]] = field(default_factory=list)  # line, function, code, qualname
    not_implemented: bool = False  # a TODO not done yet, rather than a bug
    grader_encoder: bool = False  # the error passed through the grader's ImageEncoder
    stage: str = ""  # "import" when importing the submission failed

    @classmethod
    def grader_side(cls, kind: str, message: str) -> ErrorInfo:
        """An error of the grader's machinery (bad request, unencodable reply, dead worker)."""
        return cls(kind, message)

    @classmethod
    def from_dict(cls, raw: Any) -> ErrorInfo:
        """The error a worker described, every text cut to its cap and every frame complete."""
        if not isinstance(raw, dict):
            return cls("ProtocolError", "the worker sent no error description")
        frames = raw.get("frames")
        frames = [_frame(f) for f in frames[-MAX_FRAMES:] if isinstance(f, dict)] \
            if isinstance(frames, list) else []
        return cls(cut(str(raw.get("type", "Exception")), ERROR_TYPE_CAP),
                   cut(str(raw.get("message", "")), ERROR_MESSAGE_CAP), frames,
                   bool(raw.get("not_implemented")), bool(raw.get("grader_encoder")),
                   cut(str(raw.get("stage", "")), ERROR_TYPE_CAP))


def _frame(raw: dict[str, Any]) -> dict[str, Any]:
    """A frame of the student's traceback as the harness keeps it: line, function, code and
    qualified name (``CaptioningRNN.sample``)."""
    line = raw.get("line")
    return {"line": line if type(line) is int else 0,
            "function": cut(str(raw.get("function", "")), ERROR_TYPE_CAP),
            "code": cut(str(raw.get("code", "")), FRAME_CODE_CAP),
            "qualname": cut(str(raw.get("qualname", raw.get("function", ""))), ERROR_TYPE_CAP)}


@dataclass
class Reply:
    ok: bool
    value: Any = None
    error: ErrorInfo | None = None
    output: str = ""  # the student's captured stdout and stderr

    def encode(self) -> bytes:
        """The reply held to ``WIRE``; one over it becomes an error reply that says so."""
        try:
            return self._encode()
        except MessageTooLarge as exc:
            refused = ErrorInfo(TOO_LARGE, str(exc))
            try:
                return Reply(False, error=refused, output=self.output[:REPLY_OUTPUT_CAP])._encode()
            except MessageTooLarge:
                return Reply(False, error=refused)._encode()

    def _encode(self) -> bytes:
        return encode({"ok": self.ok, "value": self.value, "output": self.output,
                       "error": asdict(self.error) if self.error is not None else None}, WIRE)

    @classmethod
    def decode(cls, data: bytes) -> Reply:
        """A worker's reply, held to ``WIRE`` (MessageTooLarge) and its texts cut to their caps."""
        raw = decode(data, WIRE)
        if not isinstance(raw, dict) or "ok" not in raw:
            raise ProtocolError("not a reply")
        error = ErrorInfo.from_dict(raw.get("error")) if not raw["ok"] else None
        return cls(bool(raw["ok"]), raw.get("value"), error,
                   cut(str(raw.get("output") or ""), REPLY_OUTPUT_CAP))


# -- describing values ----------------------------------------------------------------------

_TORCH_DTYPES = {"float16": "torch.float16", "float32": "torch.float32",
                 "float64": "torch.float64", "int8": "torch.int8", "int16": "torch.int16",
                 "int32": "torch.int32", "int64": "torch.int64", "uint8": "torch.uint8",
                 "bool": "torch.bool", "complex64": "torch.complex64",
                 "complex128": "torch.complex128"}


def dtype_name(dtype: np.dtype) -> str:
    """A dtype as students know it from torch: ``torch.float64``."""
    return _TORCH_DTYPES.get(np.dtype(dtype).name, f"torch.{np.dtype(dtype).name}")


def describe(value: Any) -> str:
    """A short human description of a decoded value, for feedback."""
    if value is None:
        return "None"
    if isinstance(value, np.ndarray):
        return f"tensor of shape {tuple(value.shape)} and dtype {dtype_name(value.dtype)}"
    if isinstance(value, dict) and OBJECT in value:
        return f"an object of type {value[OBJECT]} ({value.get('repr')})"
    if isinstance(value, dict) and SUBCLASS in value:
        return f"a tensor subclass {value[SUBCLASS]}"
    if isinstance(value, dict) and UNSUPPORTED in value:
        return f"a tensor of dtype {value[UNSUPPORTED]}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"{type(value).__name__} {value!r}"[:MAX_REPR]

