"""What every probe shares: the grader's own copies of inputs, and reading a TODO left undone.

Student code may change its arguments in place or return the starter's
placeholder; these helpers keep both from reaching a verdict as anything else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class NotImplementedYet(Exception):
    """The student's code returned the starter's placeholder (None): a TODO left as ``pass``."""


def _to(value: Any, device: str, dtype: str | None = None) -> Any:
    """The grader's own fresh copy: student code may change its arguments in place."""
    if isinstance(value, torch.Tensor):
        if dtype is not None and value.is_floating_point():
            value = value.to(DTYPES[dtype])
        return value.to(device).clone()
    if isinstance(value, dict):
        return {k: _to(v, device, dtype) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to(v, device, dtype) for v in value)
    return value


def _placeholder(value: Any) -> bool:
    """None, or a tuple/list of Nones: what an untouched starter TODO returns."""
    if value is None:
        return True
    return isinstance(value, (tuple, list)) and len(value) > 0 and all(v is None for v in value)


def _require_implemented(value: Any, name: str) -> Any:
    if _placeholder(value):
        raise NotImplementedYet(f"{name} returned None (its TODO still ends in `pass`?)")
    return value


def _resolve(m, name: str) -> Callable:
    """'rnn_forward' -> m.rnn_forward; 'LSTM' -> m.LSTM."""
    if not hasattr(m, name):
        raise AttributeError(f"your module has no {name!r}: it is part of the assignment's "
                             "interface, keep its name")
    return getattr(m, name)


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)
