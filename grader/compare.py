"""Judging: compare what a student's code produced with what was expected.

Values are compared with ``torch.testing.assert_close`` (dtype-aware,
NaN-aware, reports the worst element); the course's ``rel_error`` is reported
alongside because students know it. Messages say *what* differs and never
print a hidden expected value.
"""

from __future__ import annotations

from typing import Any

import torch

from grader.course_inputs import rel_error
from grader.harness import Outcome, WorkerFailure
from grader.protocol import OBJECT, SUBCLASS, describe


class CheckFailure(AssertionError):
    """A wrong answer: the check ran and the submission did not meet it."""

    def __init__(self, message: str, error: float | None = None, tolerance: str | None = None):
        super().__init__(message)
        self.message, self.error, self.tolerance = message, error, tolerance


def _where(error: dict[str, Any]) -> str:
    frames = error.get("frames") or []
    if not frames:
        return ""
    last = frames[-1]
    return f" at line {last['line']} in {last['function']}: `{last['code']}`"


def require_ok(outcome: Outcome, what: str) -> Any:
    """The probe's value, or a CheckFailure that says why the student code failed."""
    if outcome.ok:
        return outcome.value
    error = outcome.error
    if error.get("stage") == "import":
        raise CheckFailure(f"{what}: not run, because importing your module failed: "
                           f"{error.get('type')}: {error.get('message')}{_where(error)}")
    if error.get("type") == "WorkerFailure":
        raise WorkerFailure(error.get("message", "the worker failed"))
    if outcome.not_implemented:
        raise CheckFailure(f"{what}: not implemented yet (the stub's TODO still raises "
                           "NotImplementedError)")
    kind, message = error.get("type", "Exception"), error.get("message", "")
    if kind == "SystemExit":
        raise CheckFailure(f"{what}: your code called sys.exit({message}); never exit from "
                           "library code")
    raise CheckFailure(f"{what}: raised {kind}: {message}{_where(error)}")


def as_tensor(value: Any, what: str) -> torch.Tensor:
    """Accept only an exact torch.Tensor; say precisely what came back otherwise."""
    if isinstance(value, dict) and SUBCLASS in value:
        raise CheckFailure(f"{what}: returned a tensor subclass ({value[SUBCLASS]}); "
                           "return a plain torch.Tensor")
    if isinstance(value, dict) and OBJECT in value:
        raise CheckFailure(f"{what}: expected a tensor, got {describe(value)}")
    if value is None:
        raise CheckFailure(f"{what}: returned None (is a TODO still unfinished, or a "
                           "`return` missing?)")
    if type(value) is not torch.Tensor:
        raise CheckFailure(f"{what}: expected a tensor, got {describe(value)}")
    return value.detach().cpu()


def _index(flat_index: int, shape: torch.Size) -> tuple[int, ...]:
    return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat_index), shape))


def close(actual: Any, expected: torch.Tensor, what: str, rtol: float, atol: float,
          hidden: bool = False, check_dtype: bool = True) -> float:
    """Raise CheckFailure unless ``actual`` matches ``expected``; return the course's rel_error."""
    tolerance = f"rtol={rtol:g}, atol={atol:g}"
    actual = as_tensor(actual, what)
    if actual.shape != expected.shape:
        shown = "" if hidden else f", expected {tuple(expected.shape)}"
        raise CheckFailure(f"{what}: wrong shape {tuple(actual.shape)}{shown}",
                           tolerance=tolerance)
    if check_dtype and actual.dtype != expected.dtype:
        raise CheckFailure(f"{what}: dtype {actual.dtype}, expected {expected.dtype} "
                           "(outputs must keep the inputs' dtype: create new tensors from "
                           "the inputs, e.g. with new_zeros or zeros_like)", tolerance=tolerance)
    if actual.is_floating_point():
        bad = ~torch.isfinite(actual) & torch.isfinite(expected)
        if bad.any():
            where = _index(int(bad.flatten().nonzero()[0]), actual.shape)
            raise CheckFailure(f"{what}: {int(bad.sum())} NaN/inf values, the first at index "
                               f"{where}", error=float("nan"), tolerance=tolerance)
    if expected.numel() == 0:
        return 0.0
    err = rel_error(actual, expected)
    try:
        torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=rtol, atol=atol,
                                   check_dtype=False, equal_nan=True)
    except AssertionError:
        diff = (actual.double() - expected.double()).abs()
        scale = atol + rtol * expected.double().abs()
        worst = int((diff - scale).flatten().argmax())
        where = _index(worst, actual.shape)
        detail = f"got {actual.flatten()[worst].item():.6g}"
        if not hidden:
            detail += f", expected {expected.flatten()[worst].item():.6g}"
        raise CheckFailure(
            f"{what}: values differ; worst element at index {where} ({detail}); "
            f"course rel_error {err:.2e}", error=err, tolerance=tolerance) from None
    return err


def equal(actual: Any, expected: torch.Tensor, what: str, hidden: bool = False) -> None:
    """Exact equality for integer results (sampled word indices)."""
    actual = as_tensor(actual, what)
    if actual.shape != expected.shape:
        shown = "" if hidden else f", expected {tuple(expected.shape)}"
        raise CheckFailure(f"{what}: wrong shape {tuple(actual.shape)}{shown}")
    if actual.dtype != expected.dtype:
        raise CheckFailure(f"{what}: dtype {actual.dtype}, expected {expected.dtype}")
    if not torch.equal(actual, expected):
        mismatch = (actual != expected).nonzero()
        raise CheckFailure(f"{what}: {len(mismatch)} of {actual.numel()} entries differ, the "
                           f"first at index {tuple(mismatch[0].tolist())}")


def match_by_shape(actual: list[dict], expected: list[dict], what: str, rtol: float,
                   atol: float) -> float:
    """Match parameter gradients whose names differ between solutions, by shape.

    Within a group of equal shapes every expected gradient must be matched by a
    distinct actual one (groups are tiny, so a greedy match suffices when the
    gradients differ; equal ones are interchangeable).
    """
    def groups(items: list[dict]) -> dict[tuple, list]:
        out: dict[tuple, list] = {}
        for item in items:
            out.setdefault(tuple(item["shape"]), []).append(item)
        return out

    got, want = groups(actual), groups(expected)
    if sorted(got) != sorted(want):
        raise CheckFailure(f"{what}: the trainable parameters' shapes differ from the "
                           f"assignment's layers: got {sorted(got)}")
    worst = 0.0
    for shape, targets in want.items():
        pool = list(got[shape])
        for target in targets:
            for i, cand in enumerate(pool):
                if cand["grad"] is None:
                    continue
                c = as_tensor(cand["grad"], what)
                if c.dtype == target["grad"].dtype and torch.allclose(
                        c, target["grad"], rtol=rtol, atol=atol):
                    worst = max(worst, rel_error(c, target["grad"]))
                    pool.pop(i)
                    break
            else:
                missing = [c["name"] for c in pool if c["grad"] is None]
                hint = (f"; no gradient reached {', '.join(missing)} (is the graph cut by "
                        "detach, .data, .item() or a new tensor?)") if missing else ""
                raise CheckFailure(f"{what}: a parameter of shape {shape} gets a wrong "
                                   f"gradient{hint}", tolerance=f"rtol={rtol:g}, atol={atol:g}")
    return worst
