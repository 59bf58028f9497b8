"""How much colour and shape an encoder's block4 features carry (a linear probe).

Fits a linear classifier on spatially averaged features of 2000 single-shape
synthetic images and reports held-out accuracy on 400 more, for the packaged
weights (``grader/course/data/encoder_synthetic.pt``) and for the seeded random
fallback. This is why the grader ships trained weights.

    .venv/bin/python scripts/probe_encoder.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torchvision
from torchvision.models import feature_extraction

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grader.course import encoder, synthetic  # noqa: E402


def single_shapes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    scenes = []
    while len(scenes) < n:
        scene = synthetic._sample_scene(rng)
        if len(scene) == 1:
            scenes.append(scene)
    images = torch.from_numpy(synthetic._render(scenes, rng))
    colours = torch.tensor([list(synthetic.COLOURS).index(s[0]["colour"]) for s in scenes])
    shapes = torch.tensor([synthetic.SHAPES.index(s[0]["shape"]) for s in scenes])
    return images, colours, shapes


def features(state: dict, images: torch.Tensor) -> torch.Tensor:
    cnn = torchvision.models.regnet_x_400mf(weights=None)
    cnn.load_state_dict(state)
    trunk = feature_extraction.create_feature_extractor(
        cnn, return_nodes={"trunk_output.block4": "c5"}).eval()
    x = encoder.normalise(images)
    with torch.no_grad():
        return torch.cat([trunk(x[i:i + 200])["c5"] for i in range(0, len(x), 200)])


def probe(feats: torch.Tensor, labels: torch.Tensor, classes: int, train: int) -> float:
    x = feats.mean(dim=(2, 3))
    x = (x - x[:train].mean(0)) / (x[:train].std(0) + 1e-6)
    torch.manual_seed(0)
    linear = torch.nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.Adam(linear.parameters(), 1e-2)
    for _ in range(300):
        loss = torch.nn.functional.cross_entropy(linear(x[:train]), labels[:train])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (linear(x[train:]).argmax(1) == labels[train:]).float().mean().item()


def main() -> None:
    torch.set_num_threads(2)
    images, colours, shapes = single_shapes(2400, seed=5)
    packaged = encoder._default_state()
    for name, state in [("packaged: " + packaged[0], packaged[1]),
                        ("seeded random fallback", encoder._seeded_state())]:
        feats = features(state, images)
        print(f"{name}: colour {probe(feats, colours, 6, 2000):.0%} "
              f"(chance 17%), shape {probe(feats, shapes, 4, 2000):.0%} (chance 25%)")


if __name__ == "__main__":
    main()
