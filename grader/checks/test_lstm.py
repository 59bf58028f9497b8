"""LSTM: one step and a sequence, in the gate order i, f, o, g; gradients through autograd."""

from __future__ import annotations

import pytest

from grader.checks.inputs import F64, call, check_grads, course, randn, tol

PARAMS = ("Wx", "Wh", "b")


def _split(name: str, args: tuple[str, ...]) -> tuple[dict, dict]:
    """The course's inputs ``name``: the parameters, and the arguments ``args``."""
    return {k: course(name, k) for k in PARAMS}, {k: course(name, k) for k in args}


def test_lstm_step_forward_public(submission, expect, device):
    params, args = _split("lstm_step_forward", ("x", "prev_h", "prev_c"))
    out = call(submission, "LSTM.step_forward", "module", cls="LSTM", init=[4, 5],
               params=params, method="step_forward", args=args, device=device, dtype="float64")
    next_h, next_c = out["outputs"] if isinstance(out["outputs"], (tuple, list)) else (None, None)
    expect.close("next_h", next_h, "LSTM.step_forward: next_h", **F64)
    expect.close("next_c", next_c, "LSTM.step_forward: next_c", **F64)


def test_lstm_forward_public(submission, expect, device):
    params, args = _split("lstm_forward", ("x", "h0"))
    out = call(submission, "LSTM.forward", "module", cls="LSTM", init=[5, 4], params=params,
               method="forward", args=args, device=device, dtype="float64")
    expect.close("h", out["outputs"], "LSTM.forward", **F64)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_lstm_step_forward_hidden(submission, expect, device, dtype):
    N, D, H = 1, 3, 2
    x, h, c, Wx, Wh, b = randn(30, (N, D), (N, H), (N, H), (D, 4 * H), (H, 4 * H), (4 * H,),
                               dtype=dtype)
    out = call(submission, "LSTM.step_forward", "module", cls="LSTM", init=[D, H],
               params={"Wx": Wx, "Wh": Wh, "b": b}, method="step_forward",
               args={"x": x, "prev_h": h, "prev_c": c}, device=device, dtype=dtype)
    next_h, next_c = out["outputs"] if isinstance(out["outputs"], (tuple, list)) else (None, None)
    expect.close("next_h", next_h, "LSTM.step_forward: next_h", **tol(dtype))
    expect.close("next_c", next_c, "LSTM.step_forward: next_c", **tol(dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_lstm_forward_hidden(submission, expect, device, dtype):
    N, T, D, H = 1, 1, 6, 3
    x, h0, Wx, Wh, b = randn(31, (N, T, D), (N, H), (D, 4 * H), (H, 4 * H), (4 * H,),
                             dtype=dtype)
    out = call(submission, "LSTM.forward", "module", cls="LSTM", init=[D, H],
               params={"Wx": Wx, "Wh": Wh, "b": b}, method="forward",
               args={"x": x, "h0": h0}, device=device, dtype=dtype)
    expect.close("h", out["outputs"], "LSTM.forward (N = T = 1)", **tol(dtype))


def test_lstm_gradients_hidden(submission, expect, device):
    N, T, D, H = 2, 4, 3, 5
    x, h0, Wx, Wh, b, g = randn(32, (N, T, D), (N, H), (D, 4 * H), (H, 4 * H), (4 * H,),
                                (N, T, H))
    out = call(submission, "LSTM.forward", "module", cls="LSTM", init=[D, H],
               params={"Wx": Wx, "Wh": Wh, "b": b}, method="forward", args={"x": x, "h0": h0},
               grad_wrt=["x", "h0", "param:Wx", "param:Wh", "param:b"], upstream=[g],
               device=device, dtype="float64")
    expect.close("h", out["outputs"], "LSTM.forward", **F64)
    check_grads(expect, out["grads"], "LSTM", F64)
