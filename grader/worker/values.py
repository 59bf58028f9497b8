"""UNTRUSTED side: torch values to and from the wire, and the inputs the checks describe.

The harness never holds a torch tensor. It sends numpy arrays, or *input
specs* (``grader.checks.inputs``: "the tensors drawn from seed 12 in these
shapes"), which are built here, in the worker, with the same torch calls the
expected values were recorded with. Whatever student code returns is reduced
to plain data (``to_wire``) before it is encoded.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from grader.protocol import (
    INPUT,
    MAX_REPR,
    OBJECT,
    SUBCLASS,
    UNSUPPORTED,
    WIRE,
    MessageTooLarge,
    megabytes,
)

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def to_wire(value: Any, depth: int = 0, budget: list[int] | None = None) -> Any:
    """Reduce a student's return value to plain data the harness can decode safely.

    Tensors beyond one reply's byte limit (``grader.protocol.WIRE``) raise
    MessageTooLarge before any of them is copied (``budget``: the bytes left).
    """
    budget = [WIRE.message_bytes] if budget is None else budget
    if value is None or type(value) in (bool, int, float, str):
        return value
    if type(value) is torch.Tensor:
        return _array(value.detach(), budget)
    if isinstance(value, torch.Tensor):
        return {SUBCLASS: type(value).__qualname__}
    if type(value) in (tuple, list) and depth < 4:
        items = [to_wire(v, depth + 1, budget) for v in value]
        return tuple(items) if type(value) is tuple else items
    if type(value) is dict and depth < 4 and all(type(k) is str for k in value):
        return {k: to_wire(v, depth + 1, budget) for k, v in value.items()}
    try:
        text = repr(value)[:MAX_REPR]
    except Exception:  # a hostile __repr__ must not break the reply
        text = "<unrepresentable>"
    return {OBJECT: f"{type(value).__module__}.{type(value).__qualname__}", "repr": text}


def _array(tensor: torch.Tensor, budget: list[int]) -> Any:
    if tensor.layout == torch.strided:  # counted before the copy below is made
        budget[0] -= tensor.numel() * tensor.element_size()
        if budget[0] < 0:
            raise MessageTooLarge(
                f"your code returned {megabytes(WIRE.message_bytes - budget[0])} of tensors "
                f"(the last of shape {tuple(tensor.shape)}); the most one reply to the grader "
                f"may hold is {megabytes(WIRE.message_bytes)}")
    tensor = tensor.to("cpu", copy=True).resolve_conj().resolve_neg()
    try:
        return tensor.contiguous().numpy().copy()
    except (TypeError, RuntimeError):  # bfloat16, sparse, quantized: nothing numpy holds
        layout = "" if tensor.layout == torch.strided else f", layout {tensor.layout}"
        return {UNSUPPORTED: f"{tensor.dtype}{layout}", "shape": list(tensor.shape)}


# -- from the wire: arrays become tensors, specs become the inputs they describe ------------


def _randn(seed: int, shapes: list[list[int]], dtype: str = "float64") -> list[torch.Tensor]:
    """Tensors drawn in order from one generator, like the course's manual_seed + randn."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=gen, dtype=DTYPES[dtype]) for shape in shapes]


def _randint(seed: int, high: int, shape: list[int]) -> torch.Tensor:
    return torch.randint(high, tuple(shape), generator=torch.Generator().manual_seed(seed))


def _course(name: str, **kwargs: Any) -> Any:
    """One of the course notebook's inputs (``grader.course.inputs``)."""
    from grader.course import inputs

    return getattr(inputs, name)(**kwargs)


def _captions(seed: int, N: int, T: int, V: int) -> torch.Tensor:
    """<START>, words, <END>, then <NULL> padding of varying length."""
    caps = _randint(seed, V - 4, [N, T]) + 4
    caps[:, 0] = 1
    for i in range(N):
        end = T - 1 - (i % 3)
        caps[i, end] = 2
        caps[i, end + 1:] = 0
    return caps


def _embedding_indices(seed: int, V: int, shape: list[int]) -> torch.Tensor:
    """Random word indices with one index repeated (its gradient rows must add up)."""
    x = _randint(seed, V, shape)
    x[0, 0, 0] = x[1, 2, 1] = 7
    return x


def _loss_targets(seed: int, V: int, shape: list[int]) -> torch.Tensor:
    """Random targets with <NULL> padding of two lengths."""
    y = _randint(seed, V, shape)
    y[0, 2:] = 0
    y[2, 1:] = 0
    return y


def _overfit_data(cell: str) -> dict[str, torch.Tensor]:
    from grader.course import overfit

    images, captions = overfit.SETUPS[cell].data()
    return {"images": images, "captions": captions}


@lru_cache(maxsize=1)  # three trainings use it; picked tensors are cloned
def _notebook_training() -> dict[str, Any]:
    """The notebook's grading-mode training set (``grader.notebook.support``)."""
    from grader.course.dataset import load_synthetic
    from grader.course.settings import GRADING
    from grader.notebook.support import training_subset

    data = load_synthetic(GRADING.n_train, GRADING.n_val, GRADING.data_seed)
    images, captions = training_subset(data, GRADING)
    return {"images": images, "captions": captions, "vocab": data["vocab"]["token_to_idx"]}


BUILDERS: dict[str, Callable[..., Any]] = {
    "randn": _randn, "randint": _randint, "course": _course, "captions": _captions,
    "embedding_indices": _embedding_indices, "loss_targets": _loss_targets,
    "overfit_data": _overfit_data, "notebook_training": _notebook_training}


def from_wire(value: Any, cache: dict[str, Any] | None = None) -> Any:
    """Arrays as tensors, input specs as the inputs they describe (built once per request).

    Strings are interned, as the course's literal arguments are: code that compares
    ``cell_type is "attn"`` (a latent bug, which the grader reports as an advisory)
    behaves here as in the course's notebook, where it works.
    """
    cache = {} if cache is None else cache
    if type(value) is str:
        return sys.intern(value)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, dict) and INPUT in value:
        key = json.dumps([value[INPUT], value.get("args", {})], sort_keys=True)
        if key not in cache:
            cache[key] = BUILDERS[value[INPUT]](**value.get("args", {}))
        built = cache[key]
        for step in value.get("pick", []):
            built = built[step]
        if "rows" in value:
            built = built[:value["rows"]]
        if "scale" in value:
            built = value["scale"] * built
        return built.clone() if isinstance(built, torch.Tensor) else built
    if isinstance(value, dict):
        return {from_wire(k): from_wire(v, cache) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [from_wire(v, cache) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    return value
