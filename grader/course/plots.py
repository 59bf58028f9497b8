"""Figures for the notebook and reports: loss curves, captioned images, attention maps.

Matplotlib only (the course's visualiser needed OpenCV for resizing; the
upsampling here is torch's bilinear interpolation). Every function draws into
an Axes or Figure it returns, so it works in a notebook and headless alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def _new_axes(ax: Axes | None, size: tuple[float, float] = (6, 4)) -> Axes:
    if ax is not None:
        return ax
    return Figure(figsize=size).add_subplot()


def plot_losses(histories: Mapping[str, Sequence[float]] | Sequence[float],
                ax: Axes | None = None, title: str = "Training loss") -> Axes:
    """One curve per model (a dict name -> losses) or a single curve, per iteration."""
    ax = _new_axes(ax)
    if not isinstance(histories, Mapping):
        histories = {"loss": histories}
    for name, losses in histories.items():
        ax.plot(range(1, len(losses) + 1), list(losses), label=name, linewidth=1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(title)
    if len(histories) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    return ax


def as_picture(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) uint8 or float in [0, 1] -> (H, W, 3) float array for imshow."""
    image = image.detach().cpu()
    if image.dtype == torch.uint8:
        image = image.float() / 255.0
    return image.float().clamp(0, 1).permute(1, 2, 0).numpy()


def attention_visualizer(image: torch.Tensor, attn_weights: torch.Tensor, token: str,
                         ax: Axes | None = None) -> Axes:
    """The image with a (4, 4) attention map upsampled onto it and the word above."""
    ax = _new_axes(ax, (3, 3))
    picture = as_picture(image)
    height, width = picture.shape[:2]
    weights = torch.as_tensor(attn_weights, dtype=torch.float32).detach().cpu()
    weights = torch.nn.functional.interpolate(weights[None, None], size=(height, width),
                                              mode="bilinear", align_corners=False)[0, 0]
    ax.imshow(picture)
    ax.imshow(weights.numpy(), cmap="gray", alpha=0.6, vmin=0.0,
              vmax=float(weights.max()) or 1.0)
    ax.set_title(token)
    ax.axis("off")
    return ax


def attention_figure(image: torch.Tensor, words: Sequence[str], attn_weights: torch.Tensor,
                     columns: int = 6) -> Figure:
    """Word by word: where the model looked when it produced each word."""
    count = len(words)
    rows = max(1, -(-count // columns))
    fig = Figure(figsize=(2.2 * min(count, columns), 2.4 * rows))
    for i, word in enumerate(words):
        attention_visualizer(image, attn_weights[i], word, fig.add_subplot(rows, columns, i + 1))
    fig.tight_layout()
    return fig


def captioned_images(images: torch.Tensor, captions: Sequence[str], columns: int = 4,
                     title: str | None = None) -> Figure:
    """A grid of images, each with its caption underneath (sampled or ground truth)."""
    count = len(captions)
    rows = max(1, -(-count // columns))
    fig = Figure(figsize=(3.2 * min(count, columns), 3.4 * rows))
    for i, caption in enumerate(captions):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.imshow(as_picture(images[i]))
        ax.set_xlabel(_wrap(caption), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _wrap(text: str, width: int = 32) -> str:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])
