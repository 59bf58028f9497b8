"""Judging: compare what a student's code produced with what was expected.

TRUSTED side. Values arrive as numpy arrays (``grader.protocol``) and are held
to ``|actual - expected| <= atol + rtol * |expected|`` element by element
(torch.testing.assert_close's rule: dtype-aware, NaN-aware, the worst element
reported); the course's ``rel_error`` is reported alongside because students
know it. Messages say *what* differs and never print a hidden expected value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from grader.contract import PARTS
from grader.harness.outcome import GraderLimit, Outcome, WorkerFailure
from grader.protocol import (
    OBJECT,
    SUBCLASS,
    TOO_LARGE,
    UNSUPPORTED,
    ErrorInfo,
    describe,
    dtype_name,
)


class CheckFailure(AssertionError):
    """A wrong answer: the check ran and the submission did not meet it."""

    def __init__(self, message: str, error: float | None = None, tolerance: str | None = None,
                 credit: float = 0.0, misconception: str = ""):
        super().__init__(message)
        self.message, self.error, self.tolerance = message, error, tolerance
        #: The fraction of the check's points still earned (partial credit), 0 to 1.
        self.credit = min(max(credit, 0.0), 1.0)
        #: A catalogued mistake recognised from the error itself (``grader.diagnosis``).
        self.misconception = misconception


def rel_error(x: np.ndarray, y: np.ndarray, eps: float = 1e-10) -> float:
    """The course's error measure: max|x - y| / max(|x| + |y|), floored at eps."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    top = float(np.abs(x - y).max())
    bottom = float(np.maximum(np.abs(x) + np.abs(y), eps).max())
    return top / bottom


def _where(error: ErrorInfo) -> str:
    """Where in the student's file: the line that raised, and the lines that called it.

    The deepest line is often a correct helper fed a bad value; the callers above it
    (outermost last) show where that value was made.
    """
    frames = error.frames
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


#: What torch says when code asks for a GPU that the machine does not have ...
NO_GPU = ("Found no NVIDIA driver", "Torch not compiled with CUDA enabled",
          "No CUDA GPUs are available", "CUDA driver initialization failed",
          "no CUDA-capable device")
#: ... and when tensors on two devices meet.
MIXED_DEVICES = ("Expected all tensors to be on the same device",
                 "Expected object of device type")


def _hard_coded_device(error: ErrorInfo) -> str:
    """Feedback for a tensor made on a device written into the code, from the error and the
    student's line; "" when the error is not that."""
    no_gpu = any(p in error.message for p in NO_GPU)
    if not (no_gpu or any(p in error.message for p in MIXED_DEVICES)) or not error.frames:
        return ""
    hints = ("cuda", "device=", ".to(", ".cpu(")
    frame = next((f for f in reversed(error.frames) if any(h in f["code"] for h in hints)),
                 error.frames[-1])
    code = frame["code"]
    device = ("'cuda'" if "cuda" in code else "'cpu'" if "cpu" in code
              else "a device written into your code")
    at = f"line {frame['line']} in {frame['function']}: `{code}`"
    if no_gpu:
        said = (f"your code creates a tensor on {device}, at {at}, and this machine has no "
                "GPU")
    else:
        said = (f"your code mixes devices ({error.message[:120]}): a tensor on {device}, at "
                f"{at}")
    return (f"{said}. The handout forbids hard-coded devices: create new tensors on the device "
            "of the inputs (device=x.device, x.new_zeros(...), torch.zeros_like(x)) and never "
            "call .cuda()")


def _stopped_in(error: ErrorInfo, subject: str | None) -> tuple[str, bool]:
    """The student's part (``contract.PARTS``) other than ``subject`` that the error stopped
    in, deepest first, and whether ``subject`` itself called it; ("", False) if none."""
    if not subject:
        return "", False
    names = [f.get("qualname", f["function"]) for f in error.frames]
    parts = [n for n in names if n in PARTS]
    if not parts or parts[-1] == subject:
        return "", False
    other = parts[-1]
    if other.endswith(".__init__") and other.split(".")[0] == subject.split(".")[0]:
        return "", False  # building the object the check calls is part of that check
    return other, subject in names[:names.index(other)]


def require_ok(outcome: Outcome, what: str, subject: str | None = None) -> Any:
    """The probe's value, or a CheckFailure that says why the student code failed.

    ``subject``: the student's function the check judges; a failure inside another
    of the student's functions says first that it stopped the check, and names it.
    """
    if outcome.ok:
        return outcome.value
    error = outcome.error
    if outcome.failure is not None:  # the grader's side gave up: its limits, not the student's
        raise outcome.failure
    if error.type == "MemoryError" and not error.frames:
        raise GraderLimit("memory", f"MemoryError in the grader's own code during {what}")
    device = _hard_coded_device(error)
    if error.stage == "import":
        raise CheckFailure(f"{what}: not run, because importing your module failed: " + (
            device if device else f"{error.type}: {error.message}{_where(error)}"),
            misconception="hard_coded_device" if device else "")
    if error.type == "WorkerFailure":
        raise WorkerFailure(error.message or "the worker failed")
    if error.type == TOO_LARGE:  # the reply was over a wire limit: the message says which
        raise CheckFailure(f"{what}: {error.message}")
    other, called = _stopped_in(error, subject)
    if outcome.not_implemented:
        if other:
            raise CheckFailure(f"{what}: could not be judged: not implemented yet: your "
                               f"{other}, which this check runs, still raises "
                               "NotImplementedError (the stub's TODO)")
        if error.type == "NotImplementedYet":
            raise CheckFailure(f"{what}: not implemented yet: {error.message}")
        raise CheckFailure(f"{what}: not implemented yet (the stub's TODO still raises "
                           "NotImplementedError)")
    kind, message = error.type or "Exception", error.message
    if kind == "SystemExit":
        raise CheckFailure(f"{what}: your code called sys.exit({message}); never exit from "
                           "library code")
    if device:
        raise CheckFailure(f"{what}: {device}", misconception="hard_coded_device")
    note = ENCODER_NOTE if error.grader_encoder else ""
    raised = f"raised {kind}: {message}{_where(error)}{note}"
    if other and called:
        raise CheckFailure(f"{what}: could not be judged: it stopped inside your {other}, "
                           f"which {subject} calls: {other} {raised}. If {other}'s own checks "
                           f"pass, look at what {subject} passes it")
    if other:
        raise CheckFailure(f"{what}: could not be judged because of your {other}: this check "
                           f"runs {other} first, and it {raised}. Fix {other} first (its own "
                           "checks say more)")
    raise CheckFailure(f"{what}: {raised}")


def as_tensor(value: Any, what: str) -> np.ndarray:
    """Accept only what an exact torch.Tensor becomes; say precisely what came back otherwise."""
    if isinstance(value, dict) and UNSUPPORTED in value:
        raise CheckFailure(f"{what}: returned a tensor of dtype {value[UNSUPPORTED]}; return a "
                           "plain dense tensor of the inputs' dtype")
    if isinstance(value, dict) and SUBCLASS in value:
        raise CheckFailure(f"{what}: returned a tensor subclass ({value[SUBCLASS]}); "
                           "return a plain torch.Tensor")
    if isinstance(value, dict) and OBJECT in value:
        raise CheckFailure(f"{what}: expected a tensor, got {describe(value)}")
    if value is None:
        raise CheckFailure(f"{what}: returned None (is a TODO still unfinished, or a "
                           "`return` missing?)")
    if type(value) is not np.ndarray:
        raise CheckFailure(f"{what}: expected a tensor, got {describe(value)}")
    return value


def _index(flat_index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat_index, shape))


def _is_float(a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.complexfloating)


def close(actual: Any, expected: np.ndarray, what: str, rtol: float, atol: float,
          hidden: bool = False, check_dtype: bool = True, hint: bool = True) -> float:
    """Raise CheckFailure unless ``actual`` matches ``expected``; return the course's rel_error."""
    tolerance = f"rtol={rtol:g}, atol={atol:g}"
    actual = as_tensor(actual, what)
    if actual.shape != expected.shape:
        shown = "" if hidden else f", expected {tuple(expected.shape)}"
        raise CheckFailure(f"{what}: wrong shape {tuple(actual.shape)}{shown}",
                           tolerance=tolerance)
    if check_dtype and actual.dtype != expected.dtype:
        raise CheckFailure(f"{what}: dtype {dtype_name(actual.dtype)}, expected "
                           f"{dtype_name(expected.dtype)} "
                           "(outputs must keep the inputs' dtype: create new tensors from "
                           "the inputs, e.g. with new_zeros or zeros_like)", tolerance=tolerance)
    if _is_float(actual):
        bad = ~np.isfinite(actual) & np.isfinite(expected)
        if bad.any():
            where = _index(int(np.flatnonzero(bad)[0]), actual.shape)
            raise CheckFailure(f"{what}: {int(bad.sum())} NaN/inf values, the first at index "
                               f"{where}", error=float("nan"), tolerance=tolerance)
    if expected.size == 0:
        return 0.0
    err = rel_error(actual, expected)
    if not _all_close(actual, expected.astype(actual.dtype), rtol, atol):
        diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
        scale = atol + rtol * np.abs(expected.astype(np.float64))
        worst = int(np.nan_to_num(diff - scale, nan=np.inf).argmax())
        where = _index(worst, actual.shape)
        detail = f"got {actual.reshape(-1)[worst].item():.6g}"
        if not hidden:
            detail += f", expected {expected.reshape(-1)[worst].item():.6g}"
        raise CheckFailure(
            f"{what}: values differ; worst element at index {where} ({detail}); "
            f"course rel_error {err:.2e} (the course's measure, relative to the largest value; "
            f"this check holds every element to {tolerance} of its own value)"
            + (_precision_hint(actual, expected, rtol) if hint else ""), error=err,
            tolerance=tolerance)
    return err


def agrees(actual: Any, expected: Any, rtol: float, atol: float, check_dtype: bool = True
           ) -> bool:
    """Whether ``close`` would accept ``actual`` (a yes/no answer, for fingerprints)."""
    try:
        close(actual, expected, "", rtol, atol, hidden=True, check_dtype=check_dtype)
    except CheckFailure:
        return False
    return True


Same = Callable[[Any, Any], bool]


def within(rtol: float, atol: float, check_dtype: bool = True) -> Same:
    """``close``'s rule as a yes/no comparison."""
    return lambda actual, expected: agrees(actual, expected, rtol, atol, check_dtype)


def identical(actual: Any, expected: Any) -> bool:
    """``equal``'s rule (and, for other values, plain equality) as a yes/no comparison."""
    if isinstance(actual, np.ndarray) and isinstance(expected, np.ndarray):
        return actual.dtype == expected.dtype and bool(np.array_equal(actual, expected))
    return type(actual) is type(expected) and bool(actual == expected)


def _all_close(actual: np.ndarray, expected: np.ndarray, rtol: float, atol: float) -> bool:
    """torch.testing.assert_close's rule: equal, or within atol + rtol * |expected|; NaN = NaN."""
    if not _is_float(actual):
        return bool(np.array_equal(actual, expected))
    with np.errstate(invalid="ignore", over="ignore"):
        return bool(np.isclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True).all())


def float32_rounding(actual: Any, expected: Any) -> bool:
    """Whether a float64 result is what it would be if a float32 tensor entered the computation.

    Either the result itself came back as float32 with float32's precision, or it is
    float64 and off *everywhere* by about float32's rounding (relative 1e-10 .. 1e-6):
    a wrong formula is far off somewhere, and saturated values agree in some places
    and not in others.
    """
    if not (isinstance(actual, np.ndarray) and isinstance(expected, np.ndarray)):
        return False
    if expected.dtype != np.float64 or actual.shape != expected.shape or actual.size == 0:
        return False
    if actual.dtype not in (np.float32, np.float64) or not np.isfinite(actual).all():
        return False
    diff = np.abs(actual.astype(np.float64) - expected)
    rel = diff / np.maximum(np.abs(expected), 1e-12)
    if actual.dtype == np.float32:
        return bool(rel.max() < 1e-5)
    return bool(1e-9 < rel.max() < 1e-6 and np.median(rel) > 1e-10)


def _precision_hint(actual: np.ndarray, expected: np.ndarray, rtol: float) -> str:
    """Name a float32 value inside a float64 computation when the evidence says so."""
    if actual.dtype != np.float64 or rtol >= 1e-6 or not float32_rounding(actual, expected):
        return ""
    return ("; the values agree only to float32 precision (~1e-7): somewhere a float32 tensor "
            "enters this float64 computation (a constant or buffer made with dtype=torch.float32,"
            " torch.tensor(...) or torch.zeros(...) without dtype=, or .float()); make new "
            "tensors from the inputs (new_zeros, zeros_like, x.dtype)")


def equal(actual: Any, expected: np.ndarray, what: str, hidden: bool = False) -> None:
    """Exact equality for integer results (sampled word indices)."""
    actual = as_tensor(actual, what)
    if actual.shape != expected.shape:
        shown = "" if hidden else f", expected {tuple(expected.shape)}"
        raise CheckFailure(f"{what}: wrong shape {tuple(actual.shape)}{shown}")
    if actual.dtype != expected.dtype:
        raise CheckFailure(f"{what}: dtype {dtype_name(actual.dtype)}, expected "
                           f"{dtype_name(expected.dtype)}")
    if not np.array_equal(actual, expected):
        mismatch = np.argwhere(actual != expected)
        raise CheckFailure(f"{what}: {len(mismatch)} of {actual.size} entries differ, the "
                           f"first at index {tuple(int(i) for i in mismatch[0])}")


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
                if cand["grad"] is None or target["grad"] is None:
                    if cand["grad"] is None and target["grad"] is None:  # both cut off
                        pool.pop(i)
                        break
                    continue
                c = as_tensor(cand["grad"], what)
                if c.dtype == target["grad"].dtype and c.shape == target["grad"].shape and \
                        bool(np.allclose(c, target["grad"], rtol=rtol, atol=atol)):
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
