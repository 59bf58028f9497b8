"""Probes: grader code that runs *inside the worker*, next to the student module.

A probe builds the student's objects from plain inputs sent by the harness,
calls them, and returns what they produced (outputs, gradients) as plain data.
It judges nothing: student code can make a probe return anything, which is why
every verdict is taken in the harness. Every probe takes the student module
first, then keyword arguments that are plain data.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from grader.contract import STUB_MARKER
from grader.course.inputs import fill_by_shape
from grader.worker.function_probes import function, manual_backward, module
from grader.worker.matching import (
    MAX_ASSIGNMENTS,
    MAX_TRAINED_PARAMETERS,
    _assignments,
    _shape_key,
)
from grader.worker.probe_support import (
    DTYPES,
    NotImplementedYet,
    _leaf,
    _require_implemented,
    _resolve,
    _to,
)

# -- CaptioningRNN ----------------------------------------------------------------------

def _seeded_fill(params: list[nn.Parameter], gain: float = 1.0) -> None:
    """Fill each parameter from a generator seeded by its (normalised) shape.

    Like the course's fill-by-shape, this makes any correct layer naming or
    creation order give the same model; unlike linspace it gives varied words.
    Values are scaled by 1/sqrt(largest dim) (about 1/sqrt(fan-in) whichever way
    a layer stores its weight) so that no gate saturates and the image, the words
    and the attention all move the loss and the sampled words.
    """
    with torch.no_grad():
        for p in params:
            key = _shape_key(p.shape)
            seed = sum((i + 1) * 7919 * d for i, d in enumerate(key)) % (2**31)
            gen = torch.Generator().manual_seed(seed)
            values = torch.randn(key, generator=gen, dtype=torch.float64) / max(key) ** 0.5
            values *= gain if len(key) > 1 else 0.1  # small biases: the inputs decide
            p.copy_(values.reshape(p.shape))


def _encoder_of(model: nn.Module) -> nn.Module | None:
    from grader.course.encoder import ImageEncoder

    for sub in model.modules():
        if isinstance(sub, ImageEncoder):
            return sub
    return None


def _captioning_model(m, cell_type: str, vocab: dict, dims: dict, fill: str,
                      ignore_index: int | None, device: str, dtype: str | None,
                      gain: float = 1.0, require_layers: bool = True) -> Any:
    """The student's CaptioningRNN (Any: its own methods, ``sample``, are not nn.Module's)."""
    with contextlib.redirect_stdout(io.StringIO()):
        model = _resolve(m, "CaptioningRNN")(
            vocab, **dims, cell_type=cell_type, image_encoder_pretrained=False,
            ignore_index=ignore_index)
    encoder = _encoder_of(model)
    skip = {id(p) for p in encoder.parameters()} if encoder is not None else set()
    if require_layers and encoder is None and not [
            p for p in model.parameters() if id(p) not in skip]:
        raise NotImplementedYet("CaptioningRNN.__init__ creates no layers (its TODO still ends "
                                "in `pass`?)")
    if dtype is not None:
        model = model.to(DTYPES[dtype])
    model = model.to(device)
    if fill == "course":
        fill_by_shape(model)
    elif fill == "seeded":
        encoder = _encoder_of(model)
        if encoder is None:
            raise RuntimeError("CaptioningRNN has no ImageEncoder submodule: build the image "
                               "encoder with the provided ImageEncoder class")
        encoder_ids = {id(p) for p in encoder.parameters()}
        _seeded_fill([p for p in model.parameters() if id(p) not in encoder_ids], gain)
    return model


def captioning_loss(m, cell_type: str, vocab: dict, dims: dict, images: torch.Tensor,
                    captions: torch.Tensor, fill: str = "course",
                    ignore_index: int | None = None, grads: bool = False,
                    device: str = "cpu", dtype: str | None = None) -> dict:
    """The model's loss; with ``grads``, gradients of the images and of every parameter.

    Parameter gradients outside the encoder are returned keyed by normalised
    shape (names differ between correct solutions); the harness matches them.
    """
    model = _captioning_model(m, cell_type, vocab, dims, fill, ignore_index, device, dtype)
    images = _to(images, device, dtype)
    if grads:
        images = _leaf(images)
    loss = _require_implemented(model(images.clone(), _to(captions, device)),
                                "CaptioningRNN.forward")
    reply: dict[str, Any] = {"loss": loss}
    if grads:
        model.zero_grad(set_to_none=True)
        if isinstance(loss, torch.Tensor) and loss.requires_grad:
            loss.backward()
        encoder = _encoder_of(model)
        skip = {id(p) for p in encoder.parameters()} if encoder is not None else set()
        reply["images_grad"] = images.grad
        reply["param_grads"] = [
            {"name": name, "shape": list(_shape_key(p.shape)),
             "grad": None if p.grad is None else p.grad.reshape(_shape_key(p.shape))}
            for name, p in model.named_parameters() if id(p) not in skip
        ]
    return reply


#: Larger weights for sample(): confident, input-dependent words at every step.
SAMPLE_GAIN = 3.0


def captioning_sample(m, cell_type: str, vocab: dict, dims: dict, images: torch.Tensor,
                      max_length: int, device: str = "cpu", dtype: str | None = None) -> dict:
    """Greedy captions (and attention weights) under seeded parameters.

    Also returns ``fed_words``: the word indices the model's WordEmbedding was
    called with, in order, so the harness can tell whether each chosen word was
    fed back (only evidence, never a guess: empty when the embedding is not called).
    """
    model = _captioning_model(m, cell_type, vocab, dims, "seeded", None, device, dtype,
                              gain=SAMPLE_GAIN)
    fed: list[torch.Tensor] = []
    embedding_cls = getattr(m, "WordEmbedding", None)

    def record(_module, inputs, _output) -> None:
        if inputs and isinstance(inputs[0], torch.Tensor):
            fed.append(inputs[0].detach().cpu().clone())

    modules: list[nn.Module] = list(model.modules())
    hooks = [sub.register_forward_hook(record) for sub in modules
             if isinstance(embedding_cls, type) and isinstance(sub, embedding_cls)]
    try:
        result = model.sample(_to(images, device, dtype), max_length=max_length)
    finally:
        for hook in hooks:
            hook.remove()
    _require_implemented(result, "CaptioningRNN.sample")
    reply: dict[str, Any] = {"fed_words": fed}
    if cell_type == "attn":
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            return {**reply, "captions": result, "attn_weights": None, "returned_pair": False}
        return {**reply, "captions": result[0], "attn_weights": result[1],
                "returned_pair": True, "weights_device": str(getattr(result[1], "device", ""))}
    return {**reply, "captions": result}


def captioning_attributes(m, vocab: dict, dims: dict, ignore_index: int | None) -> dict:
    """The bookkeeping attributes the contract names, and the cell-type validation."""
    model = _captioning_model(m, "rnn", vocab, dims, "none", ignore_index, "cpu", None,
                              require_layers=False)  # provided code: judged without layers
    attrs = {name: getattr(model, name, "<missing>") for name in
             ("cell_type", "_null", "_start", "_end", "ignore_index")}
    attrs["idx_to_word"] = {str(k): v for k, v in getattr(model, "idx_to_word", {}).items()}
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            _resolve(m, "CaptioningRNN")(vocab, **dims, cell_type="gru",
                                         image_encoder_pretrained=False)
        attrs["bad_cell_type"] = "no exception"
    except ValueError:
        attrs["bad_cell_type"] = "ValueError"
    except Exception as exc:
        attrs["bad_cell_type"] = type(exc).__name__
    return attrs


def overfit(m, cell_type: str, seed: int, dims: dict, learning_rate: float, num_epochs: int,
            batch_size: int, images: torch.Tensor, captions: torch.Tensor, vocab: dict,
            device: str = "cpu", memoise: bool = True, parameters: bool = False) -> dict:
    """Train the student's CaptioningRNN with the grader's loop; return the loss history.

    The global RNG is seeded first, so the student's own initialisation is
    deterministic. With ``memoise`` the frozen encoder computes the features of
    the fixed batch once (identical to recomputing them: see grader.course.encoder).
    With ``parameters`` the trained parameters outside the encoder come back too:
    the harness has them evaluated by the reference in a worker of its own
    (``trained_loss``), since everything said here is only the student's claim.
    """
    import time

    from grader.course.encoder import memoised_features
    from grader.course.training import train_captioner

    torch.manual_seed(seed)
    model = _captioning_model(m, cell_type, vocab, dims, "none", 0, device, None)
    start = time.perf_counter()
    with memoised_features() if memoise else contextlib.nullcontext():
        _, losses = train_captioner(model, images, captions, num_epochs, batch_size,
                                    learning_rate, device=device, progress=False)
    reply: dict[str, Any] = {"losses": [float(x) for x in losses],
                             "seconds": time.perf_counter() - start}
    if parameters:
        encoder = _encoder_of(model)
        skip = {id(p) for p in encoder.parameters()} if encoder is not None else set()
        reply["parameters"] = [p.detach().cpu().clone() for p in model.parameters()
                               if id(p) not in skip][:MAX_TRAINED_PARAMETERS]
    return reply


def trained_loss(m, cell_type: str, dims: dict, vocab: dict, images: torch.Tensor,
                 captions: torch.Tensor, batch_size: int, parameters: list,
                 bound: float | None = None) -> dict:
    """The loss of ``m``'s model (the reference's) on the first batch, with given parameters.

    Runs in a worker that imported the reference, never a student's module: the
    submission's trained parameters (plain arrays from its own reply) are matched
    to the reference's layers by shape and evaluated here, so the overfit verdict
    rests on a loss no student code computed. Of the possible matchings the best
    is kept (stopping at the first under ``bound``); each is one forward pass.
    """
    from grader.course.encoder import memoised_features
    from grader.course.training import freeze_image_encoder

    given = [t for t in parameters if isinstance(t, torch.Tensor) and t.is_floating_point()]
    given = given[:MAX_TRAINED_PARAMETERS]
    torch.manual_seed(0)
    model = _captioning_model(m, cell_type, vocab, dims, "none", 0, "cpu", None)
    model.train()
    encoder = freeze_image_encoder(model)
    skip = {id(p) for p in encoder.parameters()} if encoder is not None else set()
    targets = [p for p in model.parameters() if id(p) not in skip]
    images, captions = images[:batch_size], captions[:batch_size]
    best: float | None = None
    tried = 0
    with torch.no_grad(), memoised_features():
        for assignment in _assignments([p.shape for p in targets], given):
            if tried >= MAX_ASSIGNMENTS:
                break
            tried += 1
            for target, (i, transposed) in zip(targets, assignment, strict=True):
                if i < 0:
                    target.zero_()
                    continue
                value = given[i].reshape(_shape_key(given[i].shape))
                value = value.t() if transposed else value
                target.copy_(value.reshape(target.shape).to(target.dtype))
            loss = float(model(images.clone(), captions.clone()))
            if not math.isnan(loss) and (best is None or loss < best):
                best = loss
            if bound is not None and best is not None and best <= bound:
                break
    return {"loss": best, "tried": tried, "given": len(given), "needed": len(targets)}


def _tensors(value: Any) -> bool:
    """Whether a contract function returned values: every expected output is a tensor."""
    if isinstance(value, (tuple, list)):
        return len(value) > 0 and all(isinstance(v, torch.Tensor) for v in value)
    return isinstance(value, torch.Tensor)


def tour(m) -> dict:
    """Call every contract function once on small inputs (for the from-scratch check).

    Each part is reported as "ran" (it returned values), "not implemented" (the
    stub's NotImplementedError, or the starter's None), or the exception it raised
    (its own checks report that crash; the rule does not count it twice).
    """
    from grader.course import inputs as ci

    def step_backward():
        args = ci.rnn_step_forward()
        _, cache = m.rnn_step_forward(**args)
        return m.rnn_step_backward(torch.ones_like(args["prev_h"]), cache)

    def seq_backward():
        args = ci.rnn_forward()
        h, cache = m.rnn_forward(**args)
        return m.rnn_backward(torch.ones_like(h) if isinstance(h, torch.Tensor) else None, cache)

    def lstm_step():
        inputs = ci.lstm_step_forward()
        lstm = m.LSTM(4, 5).double()
        with torch.no_grad():
            for k in ("Wx", "Wh", "b"):
                getattr(lstm, k).copy_(inputs.pop(k))
        return lstm.step_forward(**inputs)

    def attn_step():
        inputs = ci.attention_lstm_step_forward()
        cell = m.AttentionLSTM(4, 5).double()
        with torch.no_grad():
            for k in ("Wx", "Wh", "Wattn", "b"):
                getattr(cell, k).copy_(inputs.pop(k))
        return cell.step_forward(**inputs)

    steps: list[tuple[str, Callable[[], Any]]] = [
        ("rnn_step_forward", lambda: m.rnn_step_forward(**ci.rnn_step_forward())[:1]),
        ("rnn_step_backward", step_backward),
        ("rnn_forward", lambda: m.rnn_forward(**ci.rnn_forward())[:1]),
        ("rnn_backward", seq_backward),
        ("WordEmbedding", lambda: m.WordEmbedding(5, 3)(ci.word_embedding()["x"])),
        ("temporal_softmax_loss", lambda: m.temporal_softmax_loss(
            **{**ci.temporal_softmax_loss(20, 3, 10, 0.5), "ignore_index": 0})),
        ("LSTM.step_forward", lstm_step),
        ("LSTM.forward", lambda: m.LSTM(5, 4).double()(ci.lstm_forward()["x"],
                                                       ci.lstm_forward()["h0"])),
        ("dot_product_attention", lambda: m.dot_product_attention(
            **ci.dot_product_attention())),
        ("AttentionLSTM.step_forward", attn_step),
        ("AttentionLSTM.forward", lambda: m.AttentionLSTM(5, 4).double()(
            ci.attention_lstm_forward()["x"], ci.attention_lstm_forward()["A"])),
    ]
    words = {w: i for i, w in enumerate(["<NULL>", "<START>", "<END>", "<UNK>"]
                                       + [f"w{i}" for i in range(8)])}
    images = torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(7))
    dims = {"input_dim": 400, "wordvec_dim": 6, "hidden_dim": 5}
    models: dict[str, Any] = {}

    def model_for(cell: str) -> Any:
        # Seeded weights, as sample_hidden: a real decoder's words are not all <NULL>.
        if cell not in models:
            models[cell] = _captioning_model(m, cell, words, dims, "seeded", 0, "cpu", None,
                                             gain=SAMPLE_GAIN)
        return models[cell]

    for cell in ("rnn", "lstm", "attn"):
        def forward(cell=cell):
            return model_for(cell)(images.clone(), torch.tensor([[1, 5, 2], [1, 6, 0]]))

        def sample(cell=cell):
            out = model_for(cell).sample(images.clone(), max_length=3)
            captions = out[0] if cell == "attn" and isinstance(out, (tuple, list)) else out
            if isinstance(captions, torch.Tensor) and bool((captions == 0).all()):
                return None  # the starter's all-<NULL> placeholder
            return captions

        steps += [(f"CaptioningRNN.forward ({cell})", forward),
                  (f"CaptioningRNN.sample ({cell})", sample)]
    done = {}
    for name, step in steps:
        try:
            value = step()
            done[name] = "ran" if _tensors(value) else "not implemented"
        except NotImplementedYet:
            done[name] = "not implemented"
        except NotImplementedError as exc:
            done[name] = "not implemented" if STUB_MARKER in str(exc) else "NotImplementedError"
        except BaseException as exc:  # the tour reports, later checks judge
            done[name] = f"{type(exc).__name__}"
    return done


#: What the worker may run, by name.
PROBES: dict[str, Callable[..., Any]] = {
    f.__name__: f
    for f in (function, manual_backward, module, captioning_loss,
              captioning_sample, captioning_attributes, overfit, trained_loss, tour)
}
