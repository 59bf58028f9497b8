"""Oracles for the reference solution that do not share its code.

Everything here is written from ../shared/ASSIGNMENT.md alone: torch's fused
cells (``torch.rnn_tanh_cell``, ``torch.lstm_cell``) with our weight layout
converted to theirs, a written-out log-softmax loss and softmax attention,
centred-difference numeric gradients, and a from-the-components decoder for a
``CaptioningRNN`` whose layers are found by type and shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

#: Our LSTM blocks are i, f, o, g; torch's are i, f, g, o.
TORCH_GATE_ORDER = (0, 1, 3, 2)


def rel_error(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-10) -> float:
    """The course's error measure: max|x - y| / max(|x| + |y|), floored at eps."""
    x, y = x.detach().double(), y.detach().double()
    return (x - y).abs().max().item() / (x.abs() + y.abs()).clamp(min=eps).max().item()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(g: torch.Generator, *shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Drawn in float64 and then cast, so float32 and float64 cases see the same numbers."""
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


# --------------------------------------------------------------------------- RNN


def rnn_step(x, prev_h, Wx, Wh, b):
    """tanh(x Wx + prev_h Wh + b) by torch's fused cell (weights (H, D), two biases)."""
    return torch.rnn_tanh_cell(x, prev_h, Wx.T, Wh.T, b, torch.zeros_like(b))


def rnn_sequence(x, h0, Wx, Wh, b):
    h, hs = h0, []
    for t in range(x.shape[1]):
        h = rnn_step(x[:, t], h, Wx, Wh, b)
        hs.append(h)
    return torch.stack(hs, dim=1)


# -------------------------------------------------------------------------- LSTM


def to_torch_gates(W: torch.Tensor) -> torch.Tensor:
    """Reorder the four H-wide blocks of the last axis from i, f, o, g to i, f, g, o."""
    blocks = W.chunk(4, dim=-1)
    return torch.cat([blocks[k] for k in TORCH_GATE_ORDER], dim=-1)


def lstm_step(x, prev_h, prev_c, Wx, Wh, b, attn=None, Wattn=None):
    """One LSTM step by ``torch.lstm_cell``; the attention term is folded into the input:
    ``attn Wattn`` is the product of the extra inputs ``attn`` with the extra rows ``Wattn``."""
    if attn is not None:
        x = torch.cat([x, attn], dim=1)
        Wx = torch.cat([Wx, Wattn], dim=0)
    w_ih, w_hh, b_ih = to_torch_gates(Wx).T, to_torch_gates(Wh).T, to_torch_gates(b)
    return torch.lstm_cell(x, (prev_h, prev_c), w_ih, w_hh, b_ih, torch.zeros_like(b_ih))


def lstm_sequence(x, h0, Wx, Wh, b):
    h, c, hs = h0, torch.zeros_like(h0), []
    for t in range(x.shape[1]):
        h, c = lstm_step(x[:, t], h, c, Wx, Wh, b)
        hs.append(h)
    return torch.stack(hs, dim=1)


# --------------------------------------------------------------------- attention


def softmax_attention(prev_h, A):
    """Written out: a score per grid position (i, j), exp / sum over the positions,
    the weighted sum of A's columns, and the weights laid out as weights[:, i, j]."""
    _, H, R, C = A.shape
    positions = [(i, j) for i in range(R) for j in range(C)]
    scores = [(prev_h * A[:, :, i, j]).sum(dim=1) / math.sqrt(H) for i, j in positions]
    top = scores[0]
    for s in scores[1:]:
        top = torch.maximum(top, s)
    exps = [torch.exp(s - top) for s in scores]
    total = exps[0]
    for e in exps[1:]:
        total = total + e
    weights = [e / total for e in exps]  # each (N,)
    attn = torch.zeros_like(prev_h)
    for w, (i, j) in zip(weights, positions, strict=True):
        attn = attn + w[:, None] * A[:, :, i, j]
    grid = torch.stack(
        [torch.stack([weights[i * C + j] for j in range(C)], dim=1) for i in range(R)], dim=1
    )
    return attn, grid


def attention_lstm_sequence(x, A, Wx, Wh, Wattn, b):
    """h0 = c0 = spatial mean of A; each step attends with the previous h. Returns
    hidden states (N, T, H) and the attention weights used (N, T, R, C)."""
    h = c = A.mean(dim=(2, 3))
    hs, ws = [], []
    for t in range(x.shape[1]):
        attn, w = softmax_attention(h, A)
        h, c = lstm_step(x[:, t], h, c, Wx, Wh, b, attn=attn, Wattn=Wattn)
        hs.append(h)
        ws.append(w)
    return torch.stack(hs, dim=1), torch.stack(ws, dim=1)


# -------------------------------------------------------------------------- loss


def softmax_loss(x, y, ignore_index=None):
    """Cross-entropy with a hand-made log-softmax, summed over time and batch, / N."""
    N = x.shape[0]
    shifted = x - x.max(dim=-1, keepdim=True).values
    log_probs = shifted - torch.log(torch.exp(shifted).sum(dim=-1, keepdim=True))
    one_hot = (y.unsqueeze(-1) == torch.arange(x.shape[-1], device=y.device)).to(x.dtype)
    picked = (log_probs * one_hot).sum(dim=-1)  # (N, T)
    if ignore_index is not None:
        picked = picked * (y != ignore_index).to(x.dtype)
    return -picked.sum() / N


# ---------------------------------------------------------- numeric gradients


def numeric_grads(
    f: Callable[..., torch.Tensor],
    inputs: Sequence[torch.Tensor],
    upstream: torch.Tensor,
    h: float = 1e-6,
) -> list[torch.Tensor]:
    """Centred differences of sum(f(*inputs) * upstream) with respect to every input.

    The inputs are perturbed in place (and restored); use contiguous float64 tensors."""
    grads = []
    with torch.no_grad():
        for inp in inputs:
            flat = inp.view(-1)
            grad = torch.zeros_like(flat)
            for k in range(flat.numel()):
                old = flat[k].item()
                flat[k] = old + h
                plus = (f(*inputs) * upstream).sum().item()
                flat[k] = old - h
                minus = (f(*inputs) * upstream).sum().item()
                flat[k] = old
                grad[k] = (plus - minus) / (2 * h)
            grads.append(grad.view_as(inp))
    return grads


# ---------------------------------------------------------------- CaptioningRNN


def affine(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (out, in), b (out,)) of a Linear or a 1x1 Conv2d; a missing bias is zero."""
    W = module.weight.reshape(module.weight.shape[0], -1)
    b = module.bias if module.bias is not None else W.new_zeros(W.shape[0])
    return W, b


def _in_out(module: nn.Module) -> tuple[int, int] | None:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if (
        isinstance(module, nn.Conv2d)
        and module.kernel_size == (1, 1)
        and module.stride == (1, 1)
        and module.groups == 1
    ):
        return module.in_channels, module.out_channels
    return None


@dataclass
class Decoder:
    """The layers of a CaptioningRNN, found by type and shape, and the contract's math."""

    cell_type: str
    encoder: nn.Module
    embedding: nn.Module
    cell: nn.Module
    feature_proj: nn.Module
    output_proj: nn.Module

    @classmethod
    def find(cls, ref, model: nn.Module, channels: int = 400) -> Decoder:
        def unique(kind, what, pred=lambda m: True):
            found = [m for _, m in model.named_modules() if isinstance(m, kind) and pred(m)]
            assert len(found) == 1, f"expected exactly one {what}, found {len(found)}"
            return found[0]

        encoder = unique(ref.ImageEncoder, "ImageEncoder")
        inside = {id(m) for m in encoder.modules()}
        embedding = unique(ref.WordEmbedding, "WordEmbedding")
        cell_kind = {"rnn": ref.RNN, "lstm": ref.LSTM, "attn": ref.AttentionLSTM}[model.cell_type]
        cell = unique(cell_kind, f"{cell_kind.__name__} cell")
        V, _ = embedding.W_embed.shape
        H = cell.Wh.shape[0]
        assert len({V, H, channels}) == 3, "pick V, H and C distinct so shapes identify layers"
        linear = [
            (m, io) for _, m in model.named_modules()
            if id(m) not in inside and (io := _in_out(m)) is not None
        ]
        feature = [m for m, io in linear if io == (channels, H)]
        output = [m for m, io in linear if io == (H, V)]
        assert len(feature) == 1 and len(output) == 1, "feature / output projection not found"
        return cls(model.cell_type, encoder, embedding, cell, feature[0], output[0])

    def decode(self, images, words_in, features=None):
        """Scores (N, T, V) for input words (N, T), and for attn the attention weights
        (N, T, 4, 4) used at every step; None for rnn / lstm. ``features`` (the encoder's
        output for ``images``) may be given to skip the encoder."""
        if features is None:
            features = self.encoder(images)  # (N, C, h, w): the provided encoder
        Wp, bp = affine(self.feature_proj)
        x = self.embedding.W_embed[words_in]
        cell, weights = self.cell, None
        if self.cell_type == "attn":
            A = torch.einsum("hc,ncij->nhij", Wp, features) + bp[None, :, None, None]
            hidden, weights = attention_lstm_sequence(x, A, cell.Wx, cell.Wh, cell.Wattn, cell.b)
        else:
            h0 = features.mean(dim=(2, 3)) @ Wp.T + bp
            seq = rnn_sequence if self.cell_type == "rnn" else lstm_sequence
            hidden = seq(x, h0, cell.Wx, cell.Wh, cell.b)
        Wo, bo = affine(self.output_proj)
        return hidden @ Wo.T + bo, weights

    def greedy(self, images, max_length, start):
        """Greedy decoding by re-running the whole-sequence oracle on the growing prefix."""
        features = self.encoder(images)
        words = torch.full((images.shape[0], 1), start, dtype=torch.long)
        for _ in range(max_length):
            scores, _ = self.decode(None, words, features)
            words = torch.cat([words, scores[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
        return words[:, 1:]

    def loss(self, images, captions, ignore_index):
        scores, _ = self.decode(images, captions[:, :-1])
        return softmax_loss(scores, captions[:, 1:], ignore_index)
