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
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from grader.course_inputs import fill_by_shape
from grader.stubgen import STUB_MARKER

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _to(value: Any, device: str, dtype: str | None = None) -> Any:
    if isinstance(value, torch.Tensor):
        if dtype is not None and value.is_floating_point():
            value = value.to(DTYPES[dtype])
        return value.to(device)
    return value


def _resolve(m, name: str) -> Callable:
    """'rnn_forward' -> m.rnn_forward; 'LSTM' -> m.LSTM."""
    if not hasattr(m, name):
        raise AttributeError(f"your module has no {name!r}: it is part of the assignment's "
                             "interface, keep its name")
    return getattr(m, name)


def _backward(outputs: list[torch.Tensor], upstream: list[torch.Tensor]) -> None:
    """Back-propagate sum(out * g) for each (output, upstream gradient) pair."""
    total = None
    for out, g in zip(outputs, upstream, strict=True):
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            continue  # the missing gradients are what the harness will report
        term = (out * g.to(out)).sum()
        total = term if total is None else total + term
    if total is not None:
        total.backward()


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


def function(m, name: str, args: dict, take: list[int] | None = None,
             grad_wrt: list[str] | None = None, upstream: list | None = None,
             device: str = "cpu", dtype: str | None = None) -> dict:
    """Call a top-level function; optionally autograd gradients w.r.t. some arguments."""
    args = {k: _to(v, device, dtype) for k, v in args.items()}
    for k in grad_wrt or []:
        args[k] = _leaf(args[k])
    result = _resolve(m, name)(**args)
    outputs = result
    if take is not None:
        if not isinstance(result, (tuple, list)):
            raise TypeError(f"{name} should return a tuple, got {type(result).__name__}")
        outputs = [result[i] for i in take]
    reply = {"outputs": outputs}
    if grad_wrt:
        outs = outputs if isinstance(outputs, (tuple, list)) else [outputs]
        _backward(list(outs), [_to(u, device) for u in upstream or []])
        reply["grads"] = {k: args[k].grad for k in grad_wrt}
    return reply


def _numeric_grad(f: Callable[[], torch.Tensor], x: torch.Tensor, upstream: torch.Tensor,
                  h: float = 1e-6) -> torch.Tensor:
    """Centred differences of sum(f() * upstream) w.r.t. every entry of x (in place)."""
    grad = torch.zeros_like(x)
    flat, gflat = x.view(-1), grad.view(-1)
    for i in range(flat.numel()):
        old = flat[i].item()
        flat[i] = old + h
        plus = (f() * upstream).sum().item()
        flat[i] = old - h
        minus = (f() * upstream).sum().item()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * h)
    return grad


def manual_backward(m, forward: str, backward: str, args: dict, upstream: torch.Tensor,
                    numeric: bool = False, autograd: bool = False, device: str = "cpu",
                    dtype: str | None = None) -> dict:
    """A hand-written backward pass, plus the student's own forward's numeric/autograd grads.

    The order of ``args`` is the order of the backward's returned gradients
    (x, prev_h/h0, Wx, Wh, b), as the contract fixes.
    """
    fwd, bwd = _resolve(m, forward), _resolve(m, backward)
    args = {k: _to(v, device, dtype) for k, v in args.items()}
    upstream = _to(upstream, device, dtype)
    with torch.no_grad():
        out, cache = fwd(**args)
        grads = bwd(upstream, cache)
    reply: dict[str, Any] = {"manual": grads}
    if numeric:
        with torch.no_grad():
            reply["numeric"] = [
                _numeric_grad(lambda: fwd(**args)[0], args[k], upstream) for k in args
            ]
    if autograd:
        leaves = {k: _leaf(v) for k, v in args.items()}
        out, _ = fwd(**leaves)
        _backward([out], [upstream])
        reply["autograd"] = [leaves[k].grad for k in args]
    return reply


def _build(m, cls: str, init: list, params: dict, device: str, dtype: str | None) -> nn.Module:
    module = _resolve(m, cls)(*init)
    if dtype is not None:
        module = module.to(DTYPES[dtype])
    module = module.to(device)
    with torch.no_grad():
        for name, value in params.items():
            target = getattr(module, name, None)
            if not isinstance(target, torch.Tensor):
                raise AttributeError(f"{cls} has no parameter {name!r}: keep the provided "
                                     "parameter names")
            if target.shape != value.shape:
                raise ValueError(f"{cls}.{name} has shape {tuple(target.shape)}, expected "
                                 f"{tuple(value.shape)}: keep the provided parameter shapes")
            target.copy_(value)
    return module


def module(m, cls: str, init: list, params: dict, method: str, args: dict,
           grad_wrt: list[str] | None = None, upstream: list | None = None,
           device: str = "cpu", dtype: str | None = None) -> dict:
    """Build ``cls(*init)``, load ``params``, call ``method(**args)``; optional gradients.

    ``grad_wrt`` names arguments and/or parameters ("param:Wx") to differentiate.
    """
    mod = _build(m, cls, init, params, device, dtype)
    args = {k: _to(v, device, dtype) for k, v in args.items()}
    wrt = grad_wrt or []
    for k in wrt:
        if not k.startswith("param:"):
            args[k] = _leaf(args[k])
    mod.zero_grad(set_to_none=True)
    fn = mod if method == "forward" else getattr(mod, method)
    outputs = fn(**args)
    reply: dict[str, Any] = {"outputs": outputs}
    if wrt:
        outs = outputs if isinstance(outputs, (tuple, list)) else [outputs]
        _backward(list(outs), [_to(u, device) for u in upstream or []])
        reply["grads"] = {
            k: (getattr(mod, k[6:]).grad if k.startswith("param:") else args[k].grad)
            for k in wrt
        }
    return reply


# -- CaptioningRNN ----------------------------------------------------------------------


def _shape_key(shape: torch.Size) -> tuple[int, ...]:
    """A 1x1 conv and a linear layer are the same parameters: drop trailing 1x1 dims."""
    dims = list(shape)
    while len(dims) > 2 and dims[-1] == 1:
        dims.pop()
    return tuple(dims)


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
    from grader.encoder import ImageEncoder

    for sub in model.modules():
        if isinstance(sub, ImageEncoder):
            return sub
    return None


def _captioning_model(m, cell_type: str, vocab: dict, dims: dict, fill: str,
                      ignore_index: int | None, device: str, dtype: str | None,
                      gain: float = 1.0) -> nn.Module:
    with contextlib.redirect_stdout(io.StringIO()):
        model = _resolve(m, "CaptioningRNN")(
            vocab, **dims, cell_type=cell_type, image_encoder_pretrained=False,
            ignore_index=ignore_index)
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
    loss = model(images, _to(captions, device))
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
    """Greedy captions (and attention weights) under seeded parameters."""
    model = _captioning_model(m, cell_type, vocab, dims, "seeded", None, device, dtype,
                              gain=SAMPLE_GAIN)
    result = model.sample(_to(images, device, dtype), max_length=max_length)
    if cell_type == "attn":
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            return {"captions": result, "attn_weights": None, "returned_pair": False}
        return {"captions": result[0], "attn_weights": result[1], "returned_pair": True,
                "weights_device": str(getattr(result[1], "device", ""))}
    return {"captions": result}


def captioning_attributes(m, vocab: dict, dims: dict, ignore_index: int | None) -> dict:
    """The bookkeeping attributes the contract names, and the cell-type validation."""
    model = _captioning_model(m, "rnn", vocab, dims, "none", ignore_index, "cpu", None)
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
            device: str = "cpu", memoise: bool = True) -> dict:
    """Train the student's CaptioningRNN with the grader's loop; return the loss history.

    The global RNG is seeded first, so the student's own initialisation is
    deterministic. With ``memoise`` the frozen encoder computes the features of
    the fixed batch once (identical to recomputing them: see grader.encoder).
    """
    import time

    from grader.encoder import memoised_features
    from grader.training import train_captioner

    torch.manual_seed(seed)
    model = _captioning_model(m, cell_type, vocab, dims, "none", 0, device, None)
    start = time.perf_counter()
    with memoised_features() if memoise else contextlib.nullcontext():
        _, losses = train_captioner(model, images, captions, num_epochs, batch_size,
                                    learning_rate, device=device, progress=False)
    return {"losses": [float(x) for x in losses], "seconds": time.perf_counter() - start}


def tour(m) -> dict:
    """Call every contract function once on small inputs (for the from-scratch check)."""
    from grader import course_inputs as ci

    done = {}
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("rnn_forward", lambda: m.rnn_forward(**ci.rnn_forward())),
        ("WordEmbedding", lambda: m.WordEmbedding(5, 3)(ci.word_embedding()["x"])),
        ("LSTM", lambda: m.LSTM(5, 4).double()(ci.lstm_forward()["x"],
                                               ci.lstm_forward()["h0"])),
        ("dot_product_attention", lambda: m.dot_product_attention(
            **ci.dot_product_attention())),
        ("AttentionLSTM", lambda: m.AttentionLSTM(5, 4).double()(
            ci.attention_lstm_forward()["x"], ci.attention_lstm_forward()["A"])),
    ]
    vocab = {"<NULL>": 0, "<START>": 1, "<END>": 2, "a": 3}
    images = torch.rand(2, 3, 112, 112)
    for cell in ("rnn", "lstm", "attn"):
        def run(cell=cell):
            model = _captioning_model(m, cell, vocab, {"input_dim": 400, "wordvec_dim": 6,
                                                       "hidden_dim": 5}, "none", 0, "cpu", None)
            model(images, torch.tensor([[1, 3, 2], [1, 3, 0]]))
            model.sample(images, max_length=2)
        steps.append((f"CaptioningRNN {cell}", run))
    for name, step in steps:
        try:
            step()
            done[name] = "ran"
        except NotImplementedError as exc:
            done[name] = "not implemented" if STUB_MARKER in str(exc) else "NotImplementedError"
        except BaseException as exc:  # the tour reports, later checks judge
            done[name] = f"{type(exc).__name__}"
    return done


#: What the worker may run, by name.
PROBES: dict[str, Callable[..., Any]] = {
    f.__name__: f
    for f in (function, manual_backward, module, captioning_loss,
              captioning_sample, captioning_attributes, overfit, tour)
}
