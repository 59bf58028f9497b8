"""What crosses between the trusted harness and the worker, and how (both sides; no torch).

Every message is one safetensors blob: its arrays are the message's tensors
(raw buffers with a dtype and a shape), its metadata holds the rest as JSON in
which each array is a reference ``{"__array__": key}``. Decoding parses JSON and
copies buffers, so it can never run code (no pickle anywhere), and it needs
numpy only: the harness never imports torch. Expected values are stored the
same way (``grader.harness.expected``).

The messages themselves are the dataclasses below, each written in one place:
a ``Request`` (``Op``), a ``Reply`` and, when the student's code failed, an
``ErrorInfo``.

Bounded on the trusted side: whatever a worker sends is held to ``WIRE`` (the
``Limits`` below) *before* it is decoded. ``receive`` refuses an over-long
message after reading only its length prefix; ``decode`` refuses a header, a
JSON structure (bytes, nesting depth, number of values, string lengths) or
tensors (number, and element counts times dtype sizes as the header states
them) over the limits before it parses or copies any of it, and views the
tensors in the received bytes (no second copy). ``Reply.decode`` then cuts
every text it keeps (error message, type, frames, captured output) to its cap.
A message over a limit raises ``MessageTooLarge``: the sender's outcome (a
reply that big fails the check it answers), never the grader's error. The
worker holds its replies to the same limits (``Reply.encode``,
``grader.worker.values.to_wire``) so an honest one says why in the same words;
the harness never relies on that.
"""

from __future__ import annotations

import enum
import json
import math
import re
import struct
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import safetensors.numpy

#: Tags for values that are not plain data, so the harness can say what came back.
OBJECT = "__capgrade_object__"
SUBCLASS = "__capgrade_tensor_subclass__"
#: A tensor whose dtype has no numpy equivalent (bfloat16, ...): kept as its dtype name.
UNSUPPORTED = "__capgrade_tensor_dtype__"
ARRAY = "__array__"
TUPLE = "__tuple__"
#: An input the worker builds (seeded random tensors, the course's inputs): see checks/inputs.
INPUT = "__input__"

MAX_REPR = 200
_META = "capgrade"


class ProtocolError(ValueError):
    """Bytes that are not a well-formed message."""


class MessageTooLarge(ProtocolError):
    """A message over the wire limits, refused before it was decoded (the sender's doing)."""


#: ``ErrorInfo.type`` of a reply refused for its size: the check it answers fails with the
#: message, which says what was too large and the limit (``judging.require_ok``).
TOO_LARGE = "MessageTooLarge"
#: ``ErrorInfo.type`` of every reply of a worker whose torch/torchvision cannot be imported:
#: the installation's problem, reported as the environment's, never as the submission's.
BROKEN_ENVIRONMENT = "BrokenEnvironment"


@dataclass(frozen=True)
class Limits:
    """How much one message may hold; ``WIRE`` holds every worker reply and request.

    The largest legitimate replies are a few MB: the overfit and notebook-training loss
    histories (a few thousand floats each), parameter gradients of the course's models
    (up to ~2M float32 values, 8 MB) and 20,000 characters of captured output.
    """

    #: The whole message: length prefix, header, tensors (64 MB, 8 times the largest reply).
    message_bytes: int = 64_000_000
    #: The safetensors header (JSON: one entry per tensor plus the structure, escaped).
    header_bytes: int = 10_000_000
    #: The JSON structure in the header's metadata (every value that is not a tensor).
    structure_chars: int = 4_000_000
    #: Nesting of lists and dicts in the structure (a reply needs about 15).
    depth: int = 32
    #: Values in the structure: list items, dict keys and values (a reply needs < 20,000).
    items: int = 250_000
    #: One string in the structure (captured output: 20,000 characters and a note).
    string_chars: int = 100_000
    #: Tensors in one message (hidden expected values, the largest file: about 900).
    arrays: int = 10_000


WIRE = Limits()

#: What the harness keeps of a reply's texts (the worker cuts them first; it is not relied on).
ERROR_MESSAGE_CAP = 2_000  # an exception's message
ERROR_TYPE_CAP = 100  # an exception's type name, a frame's function name
FRAME_CODE_CAP = 200  # the code line of a frame in the student's file
MAX_FRAMES = 8  # frames kept (the innermost)
REPLY_OUTPUT_CAP = 20_500  # captured output (the worker keeps 20,000 characters and a note)


def megabytes(n: int) -> str:
    """A byte count as people read it: ``600 MB``, ``1.23 MB``."""
    return f"{n / 1e6:.3g} MB" if n < 1e9 else f"{n / 1e6:,.0f} MB"


def cut(text: str, cap: int) -> str:
    """``text`` cut to ``cap`` characters, saying how many were dropped."""
    if len(text) <= cap:
        return text
    note = f" [... {len(text) - cap:,} more characters cut]"
    return text[:max(0, cap - len(note))] + note


def receive(connection: Any, limits: Limits = WIRE) -> bytes:
    """One message from a ``multiprocessing.connection.Connection``, at most ``limits`` long.

    ``recv_bytes(maxlength)`` reads only the length prefix of a longer message and
    refuses it; CPython then closes a read-only connection (the rest of the message is
    never read, so the pipe cannot be used again): the caller must stop the sender.
    """
    try:
        return connection.recv_bytes(limits.message_bytes)
    except OSError as exc:
        if "message length" in str(exc):  # CPython's words for a message over maxlength
            raise MessageTooLarge(
                f"the reply to the grader is larger than {megabytes(limits.message_bytes)}, "
                "the most one reply may hold (return only what the function is asked for, "
                "and print less)") from None
        raise


# -- the codec ------------------------------------------------------------------------------


def encode(message: Any, limits: Limits | None = None) -> bytes:
    """Plain data (None, bool, int, float, str, lists, tuples, str-keyed dicts, numpy arrays).

    With ``limits`` (a worker's replies), a message over them raises MessageTooLarge
    instead of being sent to be refused.
    """
    arrays: dict[str, np.ndarray] = {}
    strings = limits.string_chars if limits is not None else math.inf

    def text(value: str) -> str:
        if len(value) > strings:
            raise MessageTooLarge(f"a text of {len(value):,} characters would go to the grader; "
                                  f"the most one may hold is {strings:,}")
        return value

    def pack(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            key = f"a{len(arrays)}"
            arrays[key] = value if value.flags.c_contiguous else value.copy(order="C")
            return {ARRAY: key}
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, tuple):
            return {TUPLE: [pack(v) for v in value]}
        if isinstance(value, list):
            return [pack(v) for v in value]
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                raise ProtocolError("dict keys must be strings")
            return {text(k): pack(v) for k, v in value.items()}
        if isinstance(value, str):
            return text(value)
        if value is None or isinstance(value, (bool, int, float)):
            return value
        raise ProtocolError(f"not plain data: {type(value).__name__}")

    structure = json.dumps(pack(message))
    if limits is not None:
        _within(limits, len(arrays), sum(a.nbytes for a in arrays.values()))
        _structure_within(structure, limits)
    data = safetensors.numpy.save(arrays, metadata={_META: structure})
    if limits is not None and len(data) > limits.message_bytes:
        raise MessageTooLarge(f"the reply to the grader would be {megabytes(len(data))}; the "
                              f"most one reply may hold is {megabytes(limits.message_bytes)}")
    return data


def decode(data: bytes, limits: Limits | None = WIRE) -> Any:
    """The message in ``data``; raises ProtocolError for anything malformed. Runs no code.

    Held to ``limits`` before anything is parsed (MessageTooLarge); tensors are
    read-only views of ``data``.
    """
    data = bytes(data)
    if limits is not None and len(data) > limits.message_bytes:
        raise MessageTooLarge(f"the reply to the grader is {megabytes(len(data))}; the most "
                              f"one reply may hold is {megabytes(limits.message_bytes)}")
    try:
        if len(data) < 8:
            raise ValueError(f"{len(data)} bytes, shorter than the length prefix")
        (size,) = struct.unpack("<Q", data[:8])
        if limits is not None and size > limits.header_bytes:
            raise MessageTooLarge(f"the reply's header (its values other than tensors, and "
                                  f"the list of its tensors) is {megabytes(size)}; the most it "
                                  f"may hold is {megabytes(limits.header_bytes)} (too many "
                                  "values or too much text)")
        if len(data) < 8 + size:
            raise ValueError(f"truncated: {len(data)} bytes, the header alone says {8 + size}")
        text = str(memoryview(data)[8:8 + size], "utf-8")
        if limits is not None:  # one entry per tensor: {"dtype", "shape": [...], ...}
            _scan(text, 3, 16 * limits.arrays + 64, "header")
        header = json.loads(text)
        del text
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        meta = header.get("__metadata__")
        if not isinstance(meta, dict) or not isinstance(meta.get(_META), str):
            raise ValueError("no capgrade structure in the header")
        if limits is not None:
            _structure_within(meta[_META], limits)
        structure = json.loads(meta[_META])
        arrays = _arrays(data, 8 + size, header, limits)
    except MessageTooLarge:
        raise
    except Exception as exc:  # any malformation: truncated, bad JSON, bad header
        raise ProtocolError(f"not a capgrade message ({type(exc).__name__}: "
                            f"{str(exc)[:200]})") from None
    strings = limits.string_chars if limits is not None else math.inf

    def unpack(value: Any) -> Any:
        if isinstance(value, str):
            if len(value) > strings:
                raise MessageTooLarge(f"the reply holds a text of {len(value):,} characters; "
                                      f"the most one may hold is {strings:,}")
            return value
        if isinstance(value, list):
            return [unpack(v) for v in value]
        if isinstance(value, dict):
            if set(value) == {ARRAY}:
                if not isinstance(value[ARRAY], str) or value[ARRAY] not in arrays:
                    raise ProtocolError(f"no array {str(value[ARRAY])[:50]!r} in the message")
                return arrays[value[ARRAY]]
            if set(value) == {TUPLE}:
                if not isinstance(value[TUPLE], list):
                    raise ProtocolError("a tuple that is not a list")
                return tuple(unpack(v) for v in value[TUPLE])
            return {unpack(k): unpack(v) for k, v in value.items()}
        return value

    return unpack(structure)


#: safetensors' dtype names, as numpy reads them (little-endian, as safetensors stores them).
_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "U64": "<u8", "I32": "<i4",
           "U32": "<u4", "I16": "<i2", "U16": "<u2", "I8": "i1", "U8": "u1", "BOOL": "?",
           "C64": "<c8"}
#: Strings in JSON text (to be skipped when counting brackets and separators).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


def _scan(text: str, depth: int, items: int, what: str) -> None:
    """Refuse JSON text nested deeper than ``depth`` or holding more than ``items`` values.

    Counted on the text, before ``json.loads`` builds anything: each value but the
    outermost follows a ``[``, ``{``, ``,`` or ``:`` outside a string.
    """
    bare = _STRING.sub("0", text)
    found = 1 + sum(bare.count(c) for c in "[{,:")
    if found > items:
        raise MessageTooLarge(f"the reply's {what} holds more than {items:,} values (lists, "
                              f"dicts and their items); the most one reply may hold is "
                              f"{items:,}")
    level = deepest = 0
    for bracket in _BRACKETS.findall(bare):
        level += 1 if bracket in "[{" else -1
        deepest = max(deepest, level)
    if deepest > depth:
        raise MessageTooLarge(f"the reply's {what} nests lists or dicts {deepest:,} levels "
                              f"deep; the most one reply may nest is {depth}")


def _structure_within(structure: str, limits: Limits) -> None:
    if len(structure) > limits.structure_chars:
        raise MessageTooLarge(f"the reply's values other than tensors take "
                              f"{len(structure):,} characters; the most one reply may hold is "
                              f"{limits.structure_chars:,} (too many values or too much text)")
    _scan(structure, limits.depth, limits.items, "structure")


def _within(limits: Limits, count: int, nbytes: int) -> None:
    if count > limits.arrays:
        raise MessageTooLarge(f"the reply holds {count:,} tensors; the most one reply may hold "
                              f"is {limits.arrays:,}")
    if nbytes > limits.message_bytes:
        raise MessageTooLarge(f"your code returned {megabytes(nbytes)} of tensors; the most one "
                              f"reply to the grader may hold is "
                              f"{megabytes(limits.message_bytes)}")


def _arrays(data: bytes, start: int, header: dict[str, Any], limits: Limits | None
            ) -> dict[str, np.ndarray]:
    """The tensors the header lists, as read-only views of ``data``.

    Every entry's dtype, shape and offsets are checked, and the element counts its
    shapes claim held to the byte budget, before any array is made.
    """
    entries = [(k, v) for k, v in header.items() if k != "__metadata__"]
    body = len(data) - start
    claimed = 0
    plans = []
    for key, info in entries:
        if not isinstance(info, dict) or info.get("dtype") not in _DTYPES:
            raise ValueError(f"tensor {key[:50]!r}: no dtype safetensors names")
        dtype = np.dtype(_DTYPES[info["dtype"]])
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if not isinstance(shape, list) or len(shape) > 64 or not all(
                type(n) is int and n >= 0 for n in shape):
            raise ValueError(f"tensor {key[:50]!r}: a shape that is not a list of sizes")
        count = math.prod(shape)
        claimed += count * dtype.itemsize
        if limits is not None:  # what the shapes claim, before the bytes are looked at
            _within(limits, len(entries), claimed)
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(
                type(n) is int for n in offsets) or not 0 <= offsets[0] <= offsets[1] <= body:
            raise ValueError(f"tensor {key[:50]!r}: offsets outside the message")
        if count * dtype.itemsize != offsets[1] - offsets[0]:
            raise ValueError(f"tensor {key[:50]!r}: {offsets[1] - offsets[0]} bytes for "
                             f"{count} values of {dtype.itemsize} bytes")
        plans.append((key, dtype, shape, count, start + offsets[0]))
    return {key: np.frombuffer(data, dtype, count, offset).reshape(shape)
            for key, dtype, shape, count, offset in plans}


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
