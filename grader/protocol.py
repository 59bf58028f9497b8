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
"""

from __future__ import annotations

import enum
import json
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


# -- the codec ------------------------------------------------------------------------------


def encode(message: Any) -> bytes:
    """Plain data (None, bool, int, float, str, lists, tuples, str-keyed dicts, numpy arrays)."""
    arrays: dict[str, np.ndarray] = {}

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
            return {k: pack(v) for k, v in value.items()}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise ProtocolError(f"not plain data: {type(value).__name__}")

    structure = json.dumps(pack(message))
    return safetensors.numpy.save(arrays, metadata={_META: structure})


def decode(data: bytes) -> Any:
    """The message in ``data``; raises ProtocolError for anything malformed. Runs no code."""
    try:
        (size,) = struct.unpack("<Q", data[:8])
        if len(data) < 8 + size:
            raise ValueError(f"truncated: {len(data)} bytes, the header alone says {8 + size}")
        header = json.loads(data[8:8 + size])
        structure = json.loads(header["__metadata__"][_META])
        arrays = safetensors.numpy.load(bytes(data)) if len(header) > 1 else {}
    except Exception as exc:  # any malformation: truncated, bad JSON, bad header
        raise ProtocolError(f"not a capgrade message ({type(exc).__name__}: "
                            f"{str(exc)[:200]})") from None

    def unpack(value: Any) -> Any:
        if isinstance(value, list):
            return [unpack(v) for v in value]
        if isinstance(value, dict):
            if set(value) == {ARRAY}:
                if value[ARRAY] not in arrays:
                    raise ProtocolError(f"no array {value[ARRAY]!r} in the message")
                return arrays[value[ARRAY]]
            if set(value) == {TUPLE}:
                return tuple(unpack(v) for v in value[TUPLE])
            return {k: unpack(v) for k, v in value.items()}
        return value

    return unpack(structure)


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
        raw = decode(data)
        try:
            return cls(Op(raw["op"]), str(raw["path"]), str(raw["probe"]), dict(raw["params"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"not a request ({exc})") from None


@dataclass
class ErrorInfo:
    """Why a call did not return: the exception and where in the student's file it arose."""

    type: str
    message: str
    frames: list[dict[str, Any]] = field(default_factory=list)  # line, function, code
    not_implemented: bool = False  # a TODO not done yet, rather than a bug
    grader_encoder: bool = False  # the error passed through the grader's ImageEncoder
    stage: str = ""  # "import" when importing the submission failed

    @classmethod
    def grader_side(cls, kind: str, message: str) -> ErrorInfo:
        """An error of the grader's machinery (bad request, unencodable reply, dead worker)."""
        return cls(kind, message)

    @classmethod
    def from_dict(cls, raw: Any) -> ErrorInfo:
        if not isinstance(raw, dict):
            return cls("ProtocolError", "the worker sent no error description")
        frames = [f for f in raw.get("frames") or [] if isinstance(f, dict)]
        return cls(str(raw.get("type", "Exception")), str(raw.get("message", "")), frames,
                   bool(raw.get("not_implemented")), bool(raw.get("grader_encoder")),
                   str(raw.get("stage", "")))


@dataclass
class Reply:
    ok: bool
    value: Any = None
    error: ErrorInfo | None = None
    output: str = ""  # the student's captured stdout and stderr

    def encode(self) -> bytes:
        return encode({"ok": self.ok, "value": self.value, "output": self.output,
                       "error": asdict(self.error) if self.error is not None else None})

    @classmethod
    def decode(cls, data: bytes) -> Reply:
        raw = decode(data)
        if not isinstance(raw, dict) or "ok" not in raw:
            raise ProtocolError("not a reply")
        error = ErrorInfo.from_dict(raw.get("error")) if not raw["ok"] else None
        return cls(bool(raw["ok"]), raw.get("value"), error, str(raw.get("output") or ""))


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
