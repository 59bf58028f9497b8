"""The grader's own ImageEncoder, swapped into every submission it grades.

The encoder is provided code, not a TODO, so grading it would judge nothing;
a submission may also hard-code ``pretrained=True``, a download the grading
machine may not be able to do. This encoder keeps the course's semantics
(RegNet-X 400MF up to ``trunk_output.block4``, ImageNet normalisation, uint8
divided by 255) but

- uses pretrained weights only when torchvision's checkpoint file is already in
  the local torch hub cache, and never downloads;
- otherwise initialises its weights from a private, fixed-seed generator, so
  every submission gets the same encoder whatever it did to the global RNG or
  in which order it built its layers.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models import feature_extraction

ENCODER_SEED = 498


def local_pretrained_weights() -> Path | None:
    """Path of torchvision's cached RegNet-X 400MF checkpoint, if it is on disk."""
    weights = torchvision.models.RegNet_X_400MF_Weights.DEFAULT
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    return path if path.is_file() else None


def _seeded_init(module: nn.Module, seed: int) -> None:
    """Re-initialise conv/linear/batch-norm layers from a private generator."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.Conv2d):
                fan_out = layer.out_channels * layer.kernel_size[0] * layer.kernel_size[1]
                fan_out //= layer.groups
                layer.weight.normal_(0.0, (2.0 / fan_out) ** 0.5, generator=gen)
                if layer.bias is not None:
                    layer.bias.zero_()
            elif isinstance(layer, nn.BatchNorm2d):
                layer.weight.fill_(1.0)
                layer.bias.zero_()
            elif isinstance(layer, nn.Linear):
                layer.weight.normal_(0.0, 0.01, generator=gen)
                layer.bias.zero_()


class ImageEncoder(nn.Module):
    """Drop-in replacement for the assignment's ImageEncoder (see module docstring)."""

    def __init__(self, pretrained: bool = True, verbose: bool = True):
        super().__init__()
        cnn = torchvision.models.regnet_x_400mf(weights=None)
        checkpoint = local_pretrained_weights() if pretrained else None
        if checkpoint is not None:
            cnn.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        else:
            _seeded_init(cnn, ENCODER_SEED)
        self.pretrained = checkpoint is not None
        self._out_channels = cnn.fc.in_features
        self.backbone = feature_extraction.create_feature_extractor(
            cnn, return_nodes={"trunk_output.block4": "c5"}
        )
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        if verbose:
            source = "local pretrained weights" if self.pretrained else "seeded random weights"
            print(f"ImageEncoder (grader's): RegNet-X 400MF with {source}")

    @property
    def out_channels(self) -> int:
        return self._out_channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        dtype = self.mean.dtype
        if images.dtype == torch.uint8:
            images = images.to(dtype) / 255.0
        images = (images.to(dtype) - self.mean) / self.std
        return self.backbone(images)["c5"]
