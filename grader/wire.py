"""The codec both sides speak: plain data <-> one safetensors blob, bounded (no torch, no pickle).

Every message is one safetensors blob: its arrays are the message's tensors
(raw buffers with a dtype and a shape), its metadata holds the rest as JSON in
which each array is a reference ``{"__array__": key}``. Decoding parses JSON and
copies buffers, so it can never run code (no pickle anywhere), and it needs
numpy only: the harness never imports torch. Expected values are stored the
same way (``grader.harness.expected``). The messages built on it are in
``grader.protocol``, which re-exports this module's public names.

Bounded on the trusted side: whatever a worker sends is held to ``WIRE`` (the
``Limits`` below) *before* it is decoded. ``receive`` refuses an over-long
message after reading only its length prefix; ``decode`` refuses a header, a
JSON structure (bytes, nesting depth, number of values, string lengths) or
tensors (number, and element counts times dtype sizes as the header states
them) over the limits before it parses or copies any of it, and views the
tensors in the received bytes (no second copy). A message over a limit raises
``MessageTooLarge``: the sender's outcome (a reply that big fails the check it
answers), never the grader's error.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import safetensors.numpy

ARRAY = "__array__"
TUPLE = "__tuple__"
_META = "capgrade"


class ProtocolError(ValueError):
    """Bytes that are not a well-formed message."""


class MessageTooLarge(ProtocolError):
    """A message over the wire limits, refused before it was decoded (the sender's doing)."""


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


def megabytes(n: int) -> str:
    """A byte count as people read it: ``600 MB``, ``1.23 MB``."""
    return f"{n / 1e6:.3g} MB" if n < 1e9 else f"{n / 1e6:,.0f} MB"



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

