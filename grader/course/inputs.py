"""Inputs of the course notebook's public checks (ASSIGNMENT.md, checks 1-16).

Each builder returns plain tensors, deterministic and built the way the course
builds them (``linspace`` reshaped row-major, float64 unless said), so the
harness, the demo and the tests all exercise the student module identically.
"""

from __future__ import annotations

import math

import torch

F64 = torch.float64


def ls(low: float, high: float, *shape: int, dtype: torch.dtype = F64) -> torch.Tensor:
    """The course's ``torch.linspace(low, high, numel).reshape(shape)``."""
    return torch.linspace(low, high, steps=math.prod(shape), dtype=dtype).reshape(*shape)


def rel_error(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-10) -> float:
    """The course's error measure: max|x - y| / max(|x| + |y|), floored at eps."""
    x, y = x.double(), y.double()
    top = (x - y).abs().max().item()
    bottom = (x.abs() + y.abs()).clamp(min=eps).max().item()
    return top / bottom


def rnn_step_forward() -> dict[str, torch.Tensor]:
    """Check 1."""
    N, D, H = 3, 10, 4
    return {
        "x": ls(-0.4, 0.7, N, D),
        "prev_h": ls(-0.2, 0.5, N, H),
        "Wx": ls(-0.1, 0.9, D, H),
        "Wh": ls(-0.3, 0.7, H, H),
        "b": ls(-0.2, 0.4, H),
    }


def rnn_forward() -> dict[str, torch.Tensor]:
    """Check 3."""
    N, T, D, H = 2, 3, 4, 5
    return {
        "x": ls(-0.1, 0.3, N, T, D),
        "h0": ls(-0.3, 0.1, N, H),
        "Wx": ls(-0.2, 0.4, D, H),
        "Wh": ls(-0.4, 0.1, H, H),
        "b": ls(-0.7, 0.1, H),
    }


def word_embedding() -> dict[str, torch.Tensor]:
    """Check 7: indices and the W_embed to load into WordEmbedding(5, 3)."""
    return {
        "x": torch.tensor([[0, 3, 1, 2], [2, 1, 0, 3]]),
        "W_embed": ls(0, 1, 5, 3),
    }


def lstm_step_forward() -> dict[str, torch.Tensor]:
    """Check 10: inputs and the parameters to load into LSTM(4, 5)."""
    N, D, H = 3, 4, 5
    return {
        "x": ls(-0.4, 1.2, N, D),
        "prev_h": ls(-0.3, 0.7, N, H),
        "prev_c": ls(-0.4, 0.9, N, H),
        "Wx": ls(-2.1, 1.3, D, 4 * H),
        "Wh": ls(-0.7, 2.2, H, 4 * H),
        "b": ls(0.3, 0.7, 4 * H),
    }


def lstm_forward() -> dict[str, torch.Tensor]:
    """Check 11: inputs and the parameters to load into LSTM(5, 4)."""
    N, D, H, T = 2, 5, 4, 3
    return {
        "x": ls(-0.4, 0.6, N, T, D),
        "h0": ls(-0.4, 0.8, N, H),
        "Wx": ls(-0.2, 0.9, D, 4 * H),
        "Wh": ls(-0.3, 0.6, H, 4 * H),
        "b": ls(0.2, 0.7, 4 * H),
    }


def dot_product_attention() -> dict[str, torch.Tensor]:
    """Check 13."""
    N, H = 2, 5
    return {"prev_h": ls(-0.4, 0.6, N, H), "A": ls(-0.4, 1.8, N, H, 4, 4)}


def attention_lstm_step_forward() -> dict[str, torch.Tensor]:
    """Check 14: check 10 plus attn and Wattn, for AttentionLSTM(4, 5)."""
    inputs = lstm_step_forward()
    N, H = 3, 5
    inputs["attn"] = ls(0.6, 1.8, N, H)
    inputs["Wattn"] = ls(1.3, 4.2, H, 4 * H)
    return inputs


def attention_lstm_forward() -> dict[str, torch.Tensor]:
    """Check 15: inputs and the parameters to load into AttentionLSTM(5, 4)."""
    N, D, H, T = 2, 5, 4, 3
    return {
        "x": ls(-0.4, 0.6, N, T, D),
        "A": ls(-0.4, 1.8, N, H, 4, 4),
        "Wx": ls(-0.2, 0.9, D, 4 * H),
        "Wh": ls(-0.3, 0.6, H, 4 * H),
        "Wattn": ls(1.3, 4.2, H, 4 * H),
        "b": ls(0.2, 0.7, 4 * H),
    }


def temporal_softmax_loss(N: int, T: int, V: int, p: float, seed: int = 0) -> dict:
    """Check 8: small random float32 scores; targets with rand > p set to 0 (NULL)."""
    gen = torch.Generator().manual_seed(seed)
    x = 0.001 * torch.randn(N, T, V, generator=gen)
    y = torch.randint(V, (N, T), generator=gen)
    mask = torch.rand(N, T, generator=gen) <= p
    return {"x": x, "y": torch.where(mask, y, torch.zeros_like(y)), "ignore_index": 0}


def captioning_batch(cell_type: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Images and captions of checks 9 (rnn: randn images), 12 and 16 (ls images)."""
    N, T, V = 10, 13, 3
    if cell_type == "rnn":
        images = torch.randn(N, 3, 112, 112, generator=torch.Generator().manual_seed(seed))
    else:
        images = ls(-3, 3, N, 3, 112, 112, dtype=torch.float32)
    captions = (torch.arange(N * T) % V).reshape(N, T)
    return {"images": images, "captions": captions}


def fill_by_shape(module: torch.nn.Module) -> None:
    """Overwrite every named parameter with ls(-1.4, 1.3) in its own shape (course style)."""
    with torch.no_grad():
        for _, param in module.named_parameters():
            param.copy_(ls(-1.4, 1.3, *param.shape, dtype=param.dtype))
