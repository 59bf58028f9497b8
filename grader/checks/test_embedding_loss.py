"""WordEmbedding and the temporal softmax loss."""

from __future__ import annotations

import numpy as np
import pytest

from grader.checks.inputs import F32, F64, call, check_grads, course, randn, spec
from grader.course.settings import LOSS_CASES
from grader.harness.judging import CheckFailure, as_tensor


def test_word_embedding_public(submission, expect, device):
    out = call(submission, "WordEmbedding", "module", cls="WordEmbedding", init=[5, 3],
               params={"W_embed": course("word_embedding", "W_embed")}, method="forward",
               args={"x": course("word_embedding", "x")},
               device=device, dtype="float64")
    expect.close("out", out["outputs"], "WordEmbedding.forward", **F64)


def test_word_embedding_hidden(submission, expect, device):
    V, W = 11, 4
    (weights, g) = randn(20, (V, W), (2, 3, 2, W), dtype="float32")
    x = spec("embedding_indices", seed=21, V=V, shape=[2, 3, 2])  # one index repeated
    out = call(submission, "WordEmbedding", "module", cls="WordEmbedding", init=[V, W],
               params={"W_embed": weights}, method="forward", args={"x": x},
               grad_wrt=["param:W_embed"], upstream=[g], device=device, dtype="float32")
    expect.close("out", out["outputs"], "WordEmbedding.forward on 3-D indices", **F32)
    check_grads(expect, out["grads"], "WordEmbedding", F32)


def test_temporal_softmax_loss_public(submission, expect, device):
    for i, ((N, T, V, p), (low, high)) in enumerate(LOSS_CASES):
        out = call(submission, "temporal_softmax_loss", "function", name="temporal_softmax_loss",
                   args=course("temporal_softmax_loss", N=N, T=T, V=V, p=p), device=device)
        what = f"temporal_softmax_loss (N, T, V, p) = {(N, T, V, p)}"
        loss = as_tensor(out["outputs"], what)
        if loss.size != 1:
            raise CheckFailure(f"{what}: should return a scalar, got shape {tuple(loss.shape)}")
        try:
            expect.close(f"loss{i}", loss, what, rtol=1e-5, atol=1e-5)
        except CheckFailure as failure:
            if not low <= float(loss.reshape(-1)[0]) <= high:  # the course's own plausibility range
                failure.message += (f"; {float(loss.reshape(-1)[0]):.4f} is far from the course's "
                                    f"[{low}, {high}]: sum over time and batch, divide by N")
            raise


@pytest.mark.parametrize("ignore", ["null", "none"])
def test_temporal_softmax_loss_hidden(submission, expect, device, ignore):
    N, T, V = 3, 4, 6
    (x,) = randn(22, (N, T, V))
    y = spec("loss_targets", seed=23, V=V, shape=[N, T])  # <NULL> padding of two lengths
    ignore_index = 0 if ignore == "null" else None
    out = call(submission, "temporal_softmax_loss", "function", name="temporal_softmax_loss",
               args={"x": x, "y": y, "ignore_index": ignore_index}, grad_wrt=["x"],
               upstream=[np.ones((), np.float64)], device=device)
    expect.close("loss", out["outputs"], f"temporal_softmax_loss (ignore_index={ignore_index})",
                 **F64)
    check_grads(expect, out["grads"], "temporal_softmax_loss", F64)
