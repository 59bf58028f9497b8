"""Dot-product attention over the 4x4 grid, and the attention LSTM."""

from __future__ import annotations

import pytest

from grader.checks.inputs import F64, call, check_grads, course, randn, scaled, tol
from grader.harness.judging import CheckFailure, as_tensor

PARAMS = ("Wx", "Wh", "Wattn", "b")


def _pair(value, what):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise CheckFailure(f"{what}: should return a pair, got {type(value).__name__}")
    return value


def test_dot_product_attention_public(submission, expect, device):
    out = call(submission, "dot_product_attention", "function", name="dot_product_attention",
               args=course("dot_product_attention"), device=device)
    attn, weights = _pair(out["outputs"], "dot_product_attention")
    expect.close("attn", attn, "dot_product_attention: attn", **F64)
    expect.close("weights", weights, "dot_product_attention: attn_weights", **F64)


def test_attention_lstm_step_forward_public(submission, expect, device):
    params = {k: course("attention_lstm_step_forward", k) for k in PARAMS}
    inputs = {k: course("attention_lstm_step_forward", k) for k in ("x", "prev_h", "prev_c",
                                                                      "attn")}
    out = call(submission, "AttentionLSTM.step_forward", "module", cls="AttentionLSTM",
               init=[4, 5], params=params, method="step_forward", args=inputs, device=device,
               dtype="float64")
    next_h, next_c = _pair(out["outputs"], "AttentionLSTM.step_forward")
    expect.close("next_h", next_h, "AttentionLSTM.step_forward: next_h", **F64)
    expect.close("next_c", next_c, "AttentionLSTM.step_forward: next_c", **F64)


def test_attention_lstm_forward_public(submission, expect, device):
    params = {k: course("attention_lstm_forward", k) for k in PARAMS}
    inputs = {k: course("attention_lstm_forward", k) for k in ("x", "A")}
    out = call(submission, "AttentionLSTM.forward", "module", cls="AttentionLSTM", init=[5, 4],
               params=params, method="forward", args=inputs, device=device, dtype="float64")
    expect.close("h", out["outputs"], "AttentionLSTM.forward", **F64)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dot_product_attention_hidden(submission, expect, device, dtype):
    prev_h, A = randn(40, (1, 7), (1, 7, 4, 4), dtype=dtype)
    out = call(submission, "dot_product_attention", "function", name="dot_product_attention",
               args={"prev_h": prev_h, "A": scaled(A, 2)}, device=device)
    attn, weights = _pair(out["outputs"], "dot_product_attention")
    weights_t = as_tensor(weights, "dot_product_attention: attn_weights")
    if weights_t.shape == (1, 4, 4):
        total = float(weights_t.astype("float64").sum())
        if abs(total - 1) > 1e-4:
            raise CheckFailure(f"dot_product_attention: the 16 weights sum to {total:.4f}, "
                               "not 1 (softmax over the 16 positions)")
    expect.close("attn", attn, "dot_product_attention: attn (N = 1)", **tol(dtype))
    expect.close("weights", weights, "dot_product_attention: attn_weights (N = 1)",
                 **tol(dtype))


def test_attention_gradients_hidden(submission, expect, device):
    prev_h, A, g1, g2 = randn(41, (2, 3), (2, 3, 4, 4), (2, 3), (2, 4, 4))
    out = call(submission, "dot_product_attention", "function", name="dot_product_attention",
               args={"prev_h": prev_h, "A": A}, grad_wrt=["prev_h", "A"], upstream=[g1, g2],
               device=device)
    check_grads(expect, out["grads"], "dot_product_attention", F64,
                outputs=_pair(out["outputs"], "dot_product_attention"))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_attention_lstm_forward_hidden(submission, expect, device, dtype):
    N, T, D, H = 1, 2, 3, 6
    x, A, Wx, Wh, Wattn, b = randn(42, (N, T, D), (N, H, 4, 4), (D, 4 * H), (H, 4 * H),
                                   (H, 4 * H), (4 * H,), dtype=dtype)
    out = call(submission, "AttentionLSTM.forward", "module", cls="AttentionLSTM", init=[D, H],
               params={"Wx": Wx, "Wh": Wh, "Wattn": Wattn, "b": b}, method="forward",
               args={"x": x, "A": A}, device=device, dtype=dtype)
    expect.close("h", out["outputs"], "AttentionLSTM.forward (N = 1)", **tol(dtype))


def test_attention_lstm_gradients_hidden(submission, expect, device):
    N, T, D, H = 2, 3, 4, 3
    x, A, Wx, Wh, Wattn, b, g = randn(43, (N, T, D), (N, H, 4, 4), (D, 4 * H), (H, 4 * H),
                                      (H, 4 * H), (4 * H,), (N, T, H))
    out = call(submission, "AttentionLSTM.forward", "module", cls="AttentionLSTM", init=[D, H],
               params={"Wx": Wx, "Wh": Wh, "Wattn": Wattn, "b": scaled(b, 0.1)}, method="forward",
               args={"x": x, "A": A}, upstream=[g], device=device, dtype="float64",
               grad_wrt=["x", "A", "param:Wx", "param:Wh", "param:Wattn", "param:b"])
    check_grads(expect, out["grads"], "AttentionLSTM", F64, outputs=out["outputs"])


