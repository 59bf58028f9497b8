"""Matching a trained model's parameters to the reference's layers, by shape alone.

A submission may name and create its layers as it likes (a 1x1 conv for a linear
layer, a hand-made transposed matrix): the overfit verification tries the ways
its tensors fit the reference's layers, bounded.
"""

from __future__ import annotations

import torch


def _shape_key(shape: torch.Size) -> tuple[int, ...]:
    """A 1x1 conv and a linear layer are the same parameters: drop trailing 1x1 dims."""
    dims = list(shape)
    while len(dims) > 2 and dims[-1] == 1:
        dims.pop()
    return tuple(dims)


#: Parameters a trained model may hand back for verification (the course's model has 7-8).
MAX_TRAINED_PARAMETERS = 64
#: Assignments of equal-shaped parameters to the reference's layers tried at most.
MAX_ASSIGNMENTS = 256


def _assignments(targets: list[torch.Size], given: list[torch.Tensor]):
    """Ways to fill each target shape with a distinct given tensor, as is or transposed.

    A 1x1 conv and a linear layer store the same weights (``_shape_key``); a
    hand-made (H, V) output matrix is a linear layer's (V, H) weight transposed.
    A bias the submission does not have is zero.
    """
    def options(shape: torch.Size) -> list[tuple[int, bool]]:
        key = _shape_key(shape)
        found = [(i, False) for i, t in enumerate(given) if _shape_key(t.shape) == key]
        if len(key) == 2 and key[0] != key[1]:
            found += [(i, True) for i, t in enumerate(given)
                      if _shape_key(t.shape) == key[::-1]]
        if not found and len(key) == 1:
            found = [(-1, False)]
        return found

    choices = [options(shape) for shape in targets]

    def walk(index: int, used: frozenset, picked: list):
        if index == len(choices):
            yield list(picked)
            return
        for i, transposed in choices[index]:
            if i >= 0 and i in used:
                continue
            picked.append((i, transposed))
            yield from walk(index + 1, used | {i} if i >= 0 else used, picked)
            picked.pop()

    return walk(0, frozenset(), [])
