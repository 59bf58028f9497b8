"""Judging: compare what a student's code produced with what was expected.

Values are compared with ``torch.testing.assert_close`` (dtype-aware,
NaN-aware, reports the worst element); the course's ``rel_error`` is reported
alongside because students know it. Messages say *what* differs and never
print a hidden expected value.
"""

from __future__ import annotations

from typing import Any

import torch

from grader.course.inputs import rel_error
from grader.harness.client import Outcome, WorkerFailure
from grader.protocol import OBJECT, SUBCLASS, describe


class CheckFailure(AssertionError):
    """A wrong answer: the check ran and the submission did not meet it."""

    def __init__(self, message: str, error: float | None = None, tolerance: str | None = None,
                 credit: float = 0.0):
        super().__init__(message)
        self.message, self.error, self.tolerance = message, error, tolerance
        #: The fraction of the check's points still earned (partial credit), 0 to 1.
        self.credit = min(max(credit, 0.0), 1.0)


def _where(error: dict[str, Any]) -> str:
    """Where in the student's file: the line that raised, and the lines that called it.

    The deepest line is often a correct helper fed a bad value; the callers above it
    (outermost last) show where that value was made.
    """
    frames = error.get("frames") or []
    if not frames:
        return ""
    last = frames[-1]
    text = f" at line {last['line']} in {last['function']}: `{last['code']}`"
    callers = frames[-4:-1][::-1]
    if callers:
        text += "; called from " + ", from ".join(
            f"line {f['line']} in {f['function']}: `{f['code']}`" for f in callers)
    return text


ENCODER_NOTE = (" (while grading, ImageEncoder is the grader's copy of the provided class, "
                "with the course's interface: ImageEncoder(pretrained=..., verbose=...), "
                ".out_channels, and a forward that takes images; it never downloads weights. "
                "Build it with that interface and call it on the images, rather than reaching "
                "into its internals)")


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
        if error.get("type") == "NotImplementedYet":
            raise CheckFailure(f"{what}: not implemented yet: {error.get('message', '')}")
        raise CheckFailure(f"{what}: not implemented yet (the stub's TODO still raises "
                           "NotImplementedError)")
    kind, message = error.get("type", "Exception"), error.get("message", "")
    if kind == "SystemExit":
        raise CheckFailure(f"{what}: your code called sys.exit({message}); never exit from "
                           "library code")
    note = ENCODER_NOTE if error.get("grader_encoder") else ""
    raise CheckFailure(f"{what}: raised {kind}: {message}{_where(error)}{note}")


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
            f"course rel_error {err:.2e} (the course's measure, relative to the largest value; "
            f"this check holds every element to {tolerance} of its own value)"
            + _precision_hint(actual, expected, rtol), error=err, tolerance=tolerance) from None
    return err


def _precision_hint(actual: torch.Tensor, expected: torch.Tensor, rtol: float) -> str:
    """Name a float32 value inside a float64 computation when the evidence says so.

    Only when the result is float64, held to better than float32's precision, and every
    element agrees to about float32's rounding (relative 1e-9 .. 1e-5): a wrong formula
    is far off somewhere, a float32 constant or buffer is off everywhere by ~1e-7.
    """
    if actual.dtype != torch.float64 or rtol >= 1e-6:
        return ""
    diff = (actual - expected.double()).abs()
    scale = expected.double().abs().clamp_min(1e-12)
    worst = float((diff / scale).max())
    if not 1e-9 < worst < 1e-5:
        return ""
    return ("; the values agree only to float32 precision (~1e-7): somewhere a float32 tensor "
            "enters this float64 computation (a constant or buffer made with dtype=torch.float32,"
            " torch.tensor(...) or torch.zeros(...) without dtype=, or .float()); make new "
            "tensors from the inputs (new_zeros, zeros_like, x.dtype)")


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
    # Parameters the computation does not use (a cell built but not used) are fine; every
    # layer of the assignment must be there, with its gradient.
    used = {shape for shape, items in got.items() if any(i["grad"] is not None for i in items)}
    lacking = sorted(set(want) - set(got))
    if lacking:
        raise CheckFailure(f"{what}: no trainable parameter of shape "
                           f"{', '.join(str(s) for s in lacking)} (the assignment's layers: the "
                           f"feature projection, the word embedding, the cell and the output "
                           f"projection); your model's parameters that get a gradient have "
                           f"shapes {sorted(used)}")
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
