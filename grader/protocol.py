"""What crosses between the trusted harness and the worker, and how.

Messages are ``torch.save`` bytes of plain data (dicts, lists, tuples, str,
numbers, None, plain tensors), framed by ``multiprocessing.connection``'s
``send_bytes``/``recv_bytes`` and always decoded with
``torch.load(weights_only=True)``, which cannot run code on load. Anything a
student function returns is first reduced to such plain data by ``plain``.
"""

from __future__ import annotations

import io
from typing import Any

import torch

#: Tags for values that are not plain data, so the harness can say what came back.
OBJECT = "__capgrade_object__"
SUBCLASS = "__capgrade_tensor_subclass__"

MAX_REPR = 200


def plain(value: Any, depth: int = 0) -> Any:
    """Reduce a student's return value to data the harness can decode safely."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if type(value) is torch.Tensor:
        return value.detach().to("cpu", copy=True).contiguous()
    if isinstance(value, torch.Tensor):
        return {SUBCLASS: type(value).__qualname__,
                "value": torch.Tensor.detach(value).as_subclass(torch.Tensor).cpu().clone()}
    if type(value) in (tuple, list) and depth < 4:
        items = [plain(v, depth + 1) for v in value]
        return tuple(items) if type(value) is tuple else items
    if type(value) is dict and depth < 4 and all(type(k) is str for k in value):
        return {k: plain(v, depth + 1) for k, v in value.items()}
    try:
        text = repr(value)[:MAX_REPR]
    except Exception:  # a hostile __repr__ must not break the reply
        text = "<unrepresentable>"
    return {OBJECT: f"{type(value).__module__}.{type(value).__qualname__}", "repr": text}


def encode(message: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(message, buffer)
    return buffer.getvalue()


def decode(data: bytes) -> Any:
    """Decode a message; never executes code from it (weights_only unpickler)."""
    return torch.load(io.BytesIO(data), weights_only=True)


def describe(value: Any) -> str:
    """A short human description of a decoded value, for feedback."""
    if value is None:
        return "None"
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, dict) and OBJECT in value:
        return f"an object of type {value[OBJECT]} ({value['repr']})"
    if isinstance(value, dict) and SUBCLASS in value:
        return f"a tensor subclass {value[SUBCLASS]}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"{type(value).__name__} {value!r}"[:MAX_REPR]
