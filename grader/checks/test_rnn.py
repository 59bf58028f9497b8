"""Vanilla RNN: step and sequence forward, hand-written backward passes, the RNN module."""

from __future__ import annotations

import pytest

from grader.checks.inputs import F64, NUMERIC, call, course, randn, tol
from grader.harness.judging import close, within

ARGS = ("x", "prev_h", "Wx", "Wh", "b")
SEQ_ARGS = ("x", "h0", "Wx", "Wh", "b")
GRADS = ("dx", "dprev_h", "dWx", "dWh", "db")
SEQ_GRADS = ("dx", "dh0", "dWx", "dWh", "db")


def test_rnn_step_forward_public(submission, expect, device):
    out = call(submission, "rnn_step_forward", "function", name="rnn_step_forward",
               args=course("rnn_step_forward"), take=[0], device=device)
    expect.close("next_h", out["outputs"][0], "rnn_step_forward: next_h", **F64)


def test_rnn_forward_public(submission, expect, device):
    out = call(submission, "rnn_forward", "function", name="rnn_forward",
               args=course("rnn_forward"), take=[0], device=device)
    expect.close("h", out["outputs"][0], "rnn_forward: h", **F64)


def _backward(submission, expect, device, forward, backward, names, grad_names, args, upstream,
              numeric=True, autograd=False, dtype=None):
    out = call(submission, backward, "manual_backward", forward=forward, backward=backward,
               args=dict(zip(names, args, strict=True)), upstream=upstream, numeric=numeric,
               autograd=autograd, device=device, dtype=dtype)
    manual = out["manual"]
    if not isinstance(manual, (tuple, list)) or len(manual) != len(grad_names):
        from grader.harness.judging import CheckFailure
        raise CheckFailure(f"{backward}: should return the {len(grad_names)} gradients "
                           f"({', '.join(grad_names)}), got {type(manual).__name__}")
    expected_tol = tol(dtype) if dtype else F64
    for i, name in enumerate(grad_names):  # what each gradient says about known mistakes
        expect.observe(name, manual[i], within(**expected_tol))
    for i, name in enumerate(grad_names):
        what = f"{backward}: {name}"
        if numeric:
            close(manual[i], out["numeric"][i], f"{what} vs numeric gradient of your forward",
                  **NUMERIC, hidden=expect.hidden)
        if autograd:
            close(manual[i], out["autograd"][i], f"{what} vs autograd through your forward",
                  **F64, hidden=expect.hidden)
        expect.close(name, manual[i], what, **expected_tol)


def test_rnn_step_backward_public(submission, expect, device):
    N, D, H = 4, 5, 6
    *args, dnext_h = randn(0, (N, D), (N, H), (D, H), (H, H), (H,), (N, H))
    _backward(submission, expect, device, "rnn_step_forward", "rnn_step_backward", ARGS, GRADS,
              args, dnext_h)


def test_rnn_backward_public(submission, expect, device):
    N, D, T, H = 2, 3, 10, 5
    *args, dh = randn(0, (N, T, D), (N, H), (D, H), (H, H), (H,), (N, T, H))
    _backward(submission, expect, device, "rnn_forward", "rnn_backward", SEQ_ARGS, SEQ_GRADS,
              args, dh)


def test_rnn_backward_autograd_public(submission, expect, device):
    N, D, T, H = 2, 3, 10, 5
    *args, dh = randn(1, (N, T, D), (N, H), (D, H), (H, H), (H,), (N, T, H))
    _backward(submission, expect, device, "rnn_forward", "rnn_backward", SEQ_ARGS, SEQ_GRADS,
              args, dh, numeric=False, autograd=True)


def test_rnn_module_public(submission, expect, device):
    params = {k: course("rnn_forward", k) for k in ("Wx", "Wh", "b")}
    inputs = {k: course("rnn_forward", k) for k in ("x", "h0")}
    out = call(submission, "RNN.forward", "module", cls="RNN", init=[4, 5], params=params,
               method="forward", args=inputs, device=device, dtype="float64")
    expect.close("h", out["outputs"], "RNN.forward", **F64)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rnn_step_forward_hidden(submission, expect, device, dtype):
    N, D, H = 1, 7, 3
    args = randn(10, (N, D), (N, H), (D, H), (H, H), (H,), dtype=dtype)
    out = call(submission, "rnn_step_forward", "function", name="rnn_step_forward",
               args=dict(zip(ARGS, args, strict=True)), take=[0], device=device)
    expect.close("next_h", out["outputs"][0], "rnn_step_forward: next_h", **tol(dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", ["n1", "t1"])
def test_rnn_forward_hidden(submission, expect, device, case, dtype):
    N, T, D, H = (1, 4, 3, 6) if case == "n1" else (3, 1, 5, 2)
    args = randn(11, (N, T, D), (N, H), (D, H), (H, H), (H,), dtype=dtype)
    out = call(submission, "rnn_forward", "function", name="rnn_forward",
               args=dict(zip(SEQ_ARGS, args, strict=True)), take=[0], device=device)
    expect.close("h", out["outputs"][0], "rnn_forward: h", **tol(dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rnn_step_backward_hidden(submission, expect, device, dtype):
    N, D, H = 1, 3, 7
    *args, dnext_h = randn(12, (N, D), (N, H), (D, H), (H, H), (H,), (N, H), dtype=dtype)
    _backward(submission, expect, device, "rnn_step_forward", "rnn_step_backward", ARGS, GRADS,
              args, dnext_h, numeric=False, dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rnn_backward_hidden(submission, expect, device, dtype):
    N, D, T, H = 1, 4, 3, 2
    *args, dh = randn(13, (N, T, D), (N, H), (D, H), (H, H), (H,), (N, T, H), dtype=dtype)
    _backward(submission, expect, device, "rnn_forward", "rnn_backward", SEQ_ARGS, SEQ_GRADS,
              args, dh, numeric=dtype == "float64", dtype=dtype)
