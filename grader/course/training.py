"""The course's training loop and caption decoding, shared by the notebook and the grader.

One implementation, so the losses a student sees in the notebook are the ones
the grader's overfit checks reproduce. Semantics follow the course: AdamW with
its default weight decay, a learning rate that is constant or decays by
``lr_decay`` every epoch, batches taken in order without shuffling, the last
partial batch dropped, ``loss.item()`` recorded every iteration. The image
encoder is a frozen feature extractor (eval mode, no gradients).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def image_encoder_of(model: nn.Module) -> nn.Module | None:
    """The model's image encoder: the ``image_encoder`` attribute, else any ImageEncoder."""
    encoder = getattr(model, "image_encoder", None)
    if isinstance(encoder, nn.Module):
        return encoder
    for sub in model.modules():
        if type(sub).__name__ == "ImageEncoder":
            return sub
    return None


def freeze_image_encoder(model: nn.Module) -> nn.Module | None:
    """No gradients and eval-mode batch norm for the encoder; returns it (None if absent)."""
    encoder = image_encoder_of(model)
    if encoder is not None:
        encoder.requires_grad_(False)
        encoder.eval()
    return encoder


def train_captioner(model: nn.Module, image_data: torch.Tensor, caption_data: torch.Tensor,
                    num_epochs: int, batch_size: int, learning_rate: float,
                    lr_decay: float = 1.0, device: str | torch.device = "cpu",
                    progress: bool = True, description: str = "training",
                    memoise: bool = True) -> tuple[nn.Module, list[float]]:
    """Train ``model`` the way the course does; returns the model and the per-iteration losses.

    With ``memoise`` the grader's frozen encoder computes each distinct batch's
    features once (exactly what recomputing gives: see grader.course.encoder), so
    epochs after the first cost only the recurrent part.
    """
    import contextlib

    from grader.course.encoder import memoised_features

    if len(image_data) != len(caption_data):
        raise ValueError(f"{len(image_data)} images but {len(caption_data)} captions")
    iterations = len(image_data) // batch_size
    if iterations == 0:
        raise ValueError(f"batch_size {batch_size} is larger than the {len(image_data)} samples "
                         "(the last partial batch is dropped, so nothing would be trained)")
    model = model.to(device)
    model.train()
    freeze_image_encoder(model)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters outside the image encoder "
                         "(layers must be nn.Module attributes, weights nn.Parameter)")
    optimizer = torch.optim.AdamW(params, learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_decay ** epoch)
    losses: list[float] = []
    bar = _progress_bar(num_epochs * iterations, description) if progress else None
    memo = memoised_features() if memoise else contextlib.nullcontext()
    with memo, contextlib.closing(bar) if bar is not None else contextlib.nullcontext():
        for _ in range(num_epochs):
            for i in range(iterations):
                batch = slice(i * batch_size, (i + 1) * batch_size)
                # Copies: a forward that changes its inputs in place must not alter the data.
                loss = model(image_data[batch].to(device).clone(),
                             caption_data[batch].to(device).clone())
                if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                    raise TypeError("the model's forward must return the loss as a one-element "
                                    f"tensor, got {type(loss).__name__}")
                if not loss.requires_grad:
                    raise RuntimeError("the loss does not depend on any trainable parameter "
                                       "(the graph is cut: detach, .data, no_grad or .item())")
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                if bar is not None:
                    bar.advance(loss.item())
            scheduler.step()
    return model, losses


class _progress_bar:  # lower case: a tiny private helper around rich, called like one
    """A rich progress bar showing the iteration, the latest loss and the time left."""

    def __init__(self, total: int, description: str):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                                 TimeRemainingColumn())
        self.task = self.progress.add_task(description, total=total, loss="-")
        self.progress.start()

    def advance(self, loss: float) -> None:
        self.progress.update(self.task, advance=1, loss=f"{loss:.3f}")

    def close(self) -> None:
        self.progress.stop()


def decode_captions(captions: torch.Tensor | Sequence, idx_to_word: Sequence[str] | dict
                    ) -> str | list[str]:
    """Word indices to text: skip <NULL>, stop after <END>; a string for 1-D, a list for 2-D."""
    captions = torch.as_tensor(captions)
    if captions.dim() == 1:
        return _decode_one(captions.tolist(), idx_to_word)
    return [_decode_one(row, idx_to_word) for row in captions.tolist()]


def _decode_one(indices: list[int], idx_to_word: Sequence[str] | dict) -> str:
    words = []
    for index in indices:
        word = idx_to_word[index]
        if word != "<NULL>":
            words.append(word)
        if word == "<END>":
            break
    return " ".join(words)
