"""CaptioningRNN: the loss (course fill and float64), gradients, bookkeeping, sample()."""

from __future__ import annotations

import numpy as np
import pytest

from grader.checks.inputs import F32, F64, LOSS32, call, course, randn, spec, vocab
from grader.course.settings import CAPTIONING_DIMS, CAPTIONING_VOCAB
from grader.harness.judging import CheckFailure, as_tensor, close, match_by_shape, within
from grader.protocol import dtype_name

CELLS = ["rnn", "lstm", "attn"]
SMALL = {"input_dim": 400, "wordvec_dim": 6, "hidden_dim": 5}


def _captions(seed: int, N: int, T: int, V: int) -> dict:
    """<START>, words, <END>, then <NULL> padding of varying length (built in the worker)."""
    return spec("captions", seed=seed, N=N, T=T, V=V)


@pytest.mark.parametrize("cell", CELLS)
def test_captioning_loss_public(submission, expect, device, cell):
    out = call(submission, f"CaptioningRNN ({cell}) forward", "captioning_loss", cell_type=cell,
               vocab=CAPTIONING_VOCAB, dims=CAPTIONING_DIMS, ignore_index=0, fill="course",
               device=device, images=course("captioning_batch", "images", cell_type=cell),
               captions=course("captioning_batch", "captions", cell_type=cell))
    expect.close("loss", out["loss"], f"CaptioningRNN ({cell}) loss", **LOSS32)


@pytest.mark.parametrize("cell", CELLS)
def test_captioning_loss_float64_hidden(submission, expect, device, cell):
    out = call(submission, f"CaptioningRNN ({cell}) forward", "captioning_loss", cell_type=cell,
               vocab=CAPTIONING_VOCAB, dims=CAPTIONING_DIMS, ignore_index=0,
               fill="course", device=device, dtype="float64",
               images=course("captioning_batch", "images", rows=4, cell_type=cell),
               captions=course("captioning_batch", "captions", rows=4, cell_type=cell))
    expect.close("loss", out["loss"], f"CaptioningRNN ({cell}) loss in float64", **F64)


@pytest.mark.parametrize("cell", CELLS)
def test_captioning_gradients_hidden(submission, expect, device, cell):
    (images,) = randn(50, (2, 3, 112, 112))
    out = call(submission, f"CaptioningRNN ({cell}) backward", "captioning_loss", cell_type=cell,
               vocab=vocab(7), dims=SMALL, images=images, captions=_captions(51, 2, 6, 7),
               ignore_index=0, fill="seeded", grads=True, device=device, dtype="float64")
    what = f"CaptioningRNN ({cell})"
    expect.close("loss", out["loss"], f"{what} loss", **F64)
    if out["images_grad"] is None:
        raise CheckFailure(f"{what}: no gradient reached the images; the loss is cut off from "
                           "the image features")
    # Stored pooled to 8x8: a wrong or missing path to the image shows up in any pooling.
    pooled = _pool(as_tensor(out["images_grad"], f"{what}: gradient of the images"), 8)
    expect.close("images_grad", pooled, f"{what}: gradient of the images (8x8 pooled)", **F64)
    grads = [{**p, "grad": p["grad"]} for p in out["param_grads"]]
    expected = expect.value("param_grads", grads, same=_grads_agree)
    if not expect.record:
        match_by_shape(grads, expected, f"{what}: parameter gradients", **PARAM_GRADS)


PARAM_GRADS = {"rtol": 1e-7, "atol": 1e-9}


def _grads_agree(actual: list[dict], expected: list[dict]) -> bool:
    try:
        match_by_shape(actual, expected, "", **PARAM_GRADS)
    except CheckFailure:
        return False
    return True


def test_captioning_attributes_hidden(submission):
    words = vocab(9)
    attrs = call(submission, "CaptioningRNN.__init__", "captioning_attributes", vocab=words,
                 dims=SMALL, ignore_index=0)
    want = {"cell_type": "rnn", "_null": 0, "_start": 1, "_end": 2, "ignore_index": 0}
    wrong = [f"{k} is {attrs.get(k)!r}, expected {v!r}" for k, v in want.items()
             if attrs.get(k) != v]
    if attrs.get("idx_to_word") != {str(i): w for w, i in words.items()}:
        wrong.append("idx_to_word does not invert word_to_idx")
    if attrs.get("bad_cell_type") != "ValueError":
        wrong.append(f'cell_type="gru" should raise ValueError, got {attrs.get("bad_cell_type")}')
    if wrong:
        raise CheckFailure("CaptioningRNN: " + "; ".join(wrong))


def _ignore_index_loss(submission, expect, device, ignore_index):
    (images,) = randn(52, (2, 3, 112, 112))
    captions = _captions(53, 2, 7, 7)
    out = call(submission, "CaptioningRNN forward", "captioning_loss", cell_type="rnn",
               vocab=vocab(7), dims=SMALL, images=images, captions=captions,
               ignore_index=ignore_index, fill="seeded", device=device, dtype="float64")
    expect.close(f"loss_{ignore_index}", out["loss"],
                 f"CaptioningRNN loss with ignore_index={ignore_index}", **F64)


def test_captioning_ignore_index_hidden(submission, expect, device):
    _ignore_index_loss(submission, expect, device, 0)


def test_captioning_ignore_index_none_hidden(submission, expect, device):
    """Advisory: the course always passes the <NULL> index."""
    _ignore_index_loss(submission, expect, device, None)


NULL, START, END = 0, 1, 2


def _pool(grad: np.ndarray, size: int) -> np.ndarray:
    """Average over equal blocks down to size x size (N, C, H, W), like adaptive pooling."""
    if grad.ndim != 4 or grad.shape[2] % size or grad.shape[3] % size:
        return grad  # a wrong shape: the comparison says so
    N, C, H, W = grad.shape
    return grad.reshape(N, C, size, H // size, size, W // size).mean(axis=(3, 5))


def _generated(expected: np.ndarray) -> np.ndarray:
    """Where a caption must match: up to and including its first <END> (stopping is optional)."""
    ended = np.cumsum(expected == END, axis=1)
    return (ended == 0) | ((ended == 1) & (expected == END))


def _agree(captions: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Where captions agree: after a caption's <END> a solution may go on or leave <NULL>."""
    if captions.shape != expected.shape or captions.dtype != expected.dtype:
        return np.zeros(expected.shape, bool)
    mask = _generated(expected)
    return np.where(mask, captions == expected, (captions == expected) | (captions == NULL))


def _not_fed_back(fed: list, captions: np.ndarray, expected: np.ndarray, until: int) -> str:
    """What the recorded embedding inputs prove about feeding words back (or nothing).

    Only steps up to the first wrong word (``until``) are read, and only captions
    still going and right so far: a word chosen there must be the next input.
    """
    steps = [f.reshape(-1) for f in fed if isinstance(f, np.ndarray)]
    N = captions.shape[0]
    if not steps or any(s.size != N for s in steps[:until + 1]):
        return ""  # the embedding was not called once per step: no evidence either way
    if not bool((steps[0] == START).all()):
        return "the first input word is not <START>"
    going = _generated(expected) & _agree(captions, expected)
    for t in range(1, min(len(steps), until + 1)):
        rows = going[:, t - 1]
        if rows.any() and not np.array_equal(steps[t][rows], captions[rows, t - 1]):
            return (f"the word chosen at step {t - 1} is not the input word of step {t}: feed "
                    "each chosen word back as the next input")
    return ""


def _sample_feedback(captions: np.ndarray, expected: np.ndarray, fed: list) -> str:
    """What the returned captions show, at their first wrong word; never a guess."""
    _, T = captions.shape
    if (captions[:, 0] == START).all() and not (expected[:, 0] == START).all():
        return "column 0 is <START>; return only the generated words"
    if T > 1 and np.array_equal(captions[:, 1:], expected[:, :-1]):
        return "the captions are shifted by one word"
    agree = _agree(captions, expected)
    wrong = int((~agree).sum())
    t = int(np.argwhere(~agree.all(axis=0))[0][0])  # the first step with a wrong word
    n = int(np.argwhere(~agree[:, t])[0][0])
    evidence = _not_fed_back(fed, captions, expected, t)
    if evidence:
        return evidence
    where = f"caption {n} at step {t}"
    stops = bool((captions[n, t:] == NULL).all())
    if stops and expected[n, t] == END:
        return (f"{where}: the caption stops with <NULL> where its <END> belongs: write the "
                "<END> the model chose into captions, then stop that caption (what follows "
                "a caption's <END> is not judged)")
    if stops:
        return (f"{where}: the caption stops (only <NULL> from here on) before the model "
                "chose <END> for it: a caption ends at its own <END>, never at another "
                "caption's")
    return (f"captions: {wrong} of {captions.size} words differ, the first at index "
            f"({n}, {t})")


def _sample(submission, expect, device, cell, N, max_length, seed):
    (images,) = randn(seed, (N, 3, 112, 112))
    what = f"CaptioningRNN ({cell}).sample"
    out = call(submission, what, "captioning_sample", cell_type=cell, vocab=vocab(12),
               dims={"input_dim": 400, "wordvec_dim": 8, "hidden_dim": 10}, images=images,
               max_length=max_length, device=device, dtype="float64")
    captions = as_tensor(out["captions"], f"{what}: captions")
    if captions.dtype != np.int64:
        raise CheckFailure(f"{what}: captions have dtype {dtype_name(captions.dtype)}, expected "
                           "torch.int64")
    if captions.shape != (N, max_length):
        raise CheckFailure(f"{what}: captions have shape {tuple(captions.shape)}, expected "
                           f"(N, max_length) = {(N, max_length)}")
    if not expect.record and bool((captions == NULL).all()):
        raise CheckFailure(f"{what}: not implemented yet: every word is <NULL>, the starter's "
                           "placeholder (the loop never writes the chosen words into captions)")
    expected = expect.value("captions", captions, same=lambda a, e: bool(_agree(a, e).all()))
    mask = _generated(expected)
    agree = _agree(captions, expected)
    if not bool(agree.all()):
        raise CheckFailure(f"{what}: "
                           f"{_sample_feedback(captions, expected, out.get('fed_words') or [])}")
    if cell != "attn":
        return
    if not out["returned_pair"]:
        raise CheckFailure(f'{what}: for cell_type "attn" return (captions, attn_weights_all)')
    weights = as_tensor(out["attn_weights"], f"{what}: attention weights")
    if not out["weights_device"].startswith("cpu"):
        raise CheckFailure(f"{what}: attention weights are on {out['weights_device']}, "
                           "return them on the CPU")
    if weights.shape != (N, max_length, 4, 4):
        raise CheckFailure(f"{what}: attention weights have shape {tuple(weights.shape)}, "
                           f"expected (N, max_length, 4, 4) = {(N, max_length, 4, 4)}")
    # The starter's buffer is float32 whatever the input dtype: any float dtype is right.
    # Steps after a caption's <END> may be skipped (their weights stay as allocated).
    weights = weights.astype(np.float64)
    steps = np.broadcast_to(mask[:, :, None, None], weights.shape)
    sums = weights.sum(axis=(2, 3))[mask]
    close(sums, np.ones_like(sums), f"{what}: each step's 16 attention weights sum",
          rtol=0, atol=1e-6, hidden=expect.hidden, check_dtype=False)
    reference = expect.value("attn_weights", weights.astype(np.float32),
                             same=within(**F32, check_dtype=False)).astype(np.float64)
    close(np.where(steps, weights, reference), reference,
          f"{what}: attention weights used at each step", **F32, hidden=expect.hidden,
          check_dtype=False)


#: Per cell, images whose greedy captions include one that ends early with <END>, so a
#: sample that stops there (the handout allows it) is exercised, and two that do not.
SAMPLE_SEEDS = {"rnn": 55, "lstm": 167, "attn": 103}


@pytest.mark.parametrize("cell", CELLS)
def test_sample_hidden(submission, expect, device, cell):
    _sample(submission, expect, device, cell, N=3, max_length=8, seed=SAMPLE_SEEDS[cell])


@pytest.mark.parametrize("cell", CELLS)
def test_sample_n1_hidden(submission, expect, device, cell):
    _sample(submission, expect, device, cell, N=1, max_length=3, seed=55)
