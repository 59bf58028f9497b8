"""Deterministic inputs and tolerances shared by the checks.

Tolerances, and why:
- ``F64``: float64 results of any correct implementation agree to ~1e-15
  (only summation order differs); 1e-8 is the course's bar and still catches a
  float32 buffer inside a float64 computation (float32 eps is 6e-8).
- ``F32``: float32 reorderings over a few time steps stay below ~1e-6.
- ``NUMERIC``: centred differences with h = 1e-6 in float64 are accurate to
  ~1e-9 relative; 1e-5 leaves room for the curvature of tanh and sigmoid.
- ``LOSS32``: the float32 captioning losses (~150) sum hundreds of terms and run
  a CNN; different correct layouts (conv vs linear) agree to ~1e-6 relative.
"""

from __future__ import annotations

from typing import Any, TypedDict

from grader.protocol import INPUT


class Tolerance(TypedDict):
    """``close``'s two bounds, passed as ``**F64``."""

    rtol: float
    atol: float


F64: Tolerance = {"rtol": 1e-8, "atol": 1e-10}
F32: Tolerance = {"rtol": 1e-5, "atol": 1e-6}
NUMERIC: Tolerance = {"rtol": 1e-5, "atol": 1e-7}
LOSS32: Tolerance = {"rtol": 1e-5, "atol": 1e-5}


def tol(dtype: str) -> Tolerance:
    return F64 if dtype == "float64" else F32


def spec(builder: str, *pick: str | int, rows: int | None = None, **args: Any) -> dict:
    """An input the worker builds (``grader.worker.values.BUILDERS``): the harness holds no
    tensors, only what to draw. ``pick`` selects within the built value, ``rows`` its first rows.
    The seeds a check sends are recorded by the worker proxy (``Submission.seeds``).
    """
    value: dict[str, Any] = {INPUT: builder, "args": args, "pick": list(pick)}
    if rows is not None:
        value["rows"] = rows
    return value


def scaled(value: dict, factor: float) -> dict:
    """``factor *`` the input ``value`` describes."""
    return {**value, "scale": factor}


def randn(seed: int, *shapes: tuple[int, ...], dtype: str = "float64") -> list[dict]:
    """Tensors drawn in order from one generator, like the course's manual_seed + randn."""
    drawn: dict[str, Any] = {"seed": seed, "shapes": [list(s) for s in shapes],
                             "dtype": dtype}
    return [spec("randn", i, **drawn) for i in range(len(shapes))]


def randint(seed: int, high: int, shape: tuple[int, ...]) -> dict:
    return spec("randint", seed=seed, high=high, shape=list(shape))


def course(name: str, *pick: str, **kwargs: Any) -> dict:
    """One of the course notebook's inputs (``grader.course.inputs.<name>``), or one key of it."""
    return spec("course", *pick, name=name, **kwargs)


def vocab(size: int) -> dict[str, int]:
    """A vocabulary with the course's special tokens first."""
    words = ["<NULL>", "<START>", "<END>", "<UNK>"] + [f"w{i}" for i in range(size - 4)]
    return {w: i for i, w in enumerate(words)}


#: The student's function a probe judges (the rest it runs are what the check depends on).
_SUBJECTS = {"captioning_loss": "CaptioningRNN.forward", "overfit": "CaptioningRNN.forward",
             "captioning_sample": "CaptioningRNN.sample",
             "captioning_attributes": "CaptioningRNN.__init__"}


def subject_of(probe: str, params: dict[str, Any]) -> str | None:
    """``rnn_backward``, ``LSTM.forward``, ``CaptioningRNN.sample``; None for a whole tour."""
    if probe == "function":
        return params.get("name")
    if probe == "manual_backward":
        return params.get("backward")
    if probe == "module":
        return f"{params.get('cls')}.{params.get('method', 'forward')}"
    return _SUBJECTS.get(probe)


def call(submission, what: str, probe: str, **params):
    """Run a probe in the worker; a failure of the student's code becomes a CheckFailure."""
    from grader.harness.judging import require_ok

    return require_ok(submission.call(probe, **params), what, subject_of(probe, params))


def check_grads(expect, grads: dict, what: str, tolerance: Tolerance,
                outputs: Any = None) -> None:
    """Compare autograd gradients, naming a cut graph for what it is.

    ``outputs`` (what the function returned) are checked first: a missing output,
    not a cut graph, is then why no gradient arrived.
    """
    from grader.harness.judging import CheckFailure, as_tensor, within

    if outputs is not None:
        for i, out in enumerate(outputs if isinstance(outputs, (tuple, list)) else [outputs]):
            as_tensor(out, f"{what}: output {i}")
    for name, grad in grads.items():
        label = name.removeprefix("param:")
        if grad is None:
            expect.observe(f"grad_{label}", None, within(**tolerance))
            raise CheckFailure(f"{what}: no gradient reached {label}; the forward cuts the "
                               "autograd graph (detach, .data, .item(), torch.tensor(...) or "
                               "numpy on the way)")
        expect.close(f"grad_{label}", grad, f"{what}: gradient of {label}", **tolerance)
