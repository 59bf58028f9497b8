"""Train the grader's offline encoder weights on synthetic shapes (a build step, run once).

Grading never downloads, and a randomly initialised RegNet's block4 features
barely tell colours apart and not shapes at all (a linear probe on single-shape
images: colour 33%, shape 28%, chance 17% / 25%; docs/design.md, "Encoder"),
so nothing trained on them could caption. This trains RegNet-X 400MF (the
course's architecture and ImageNet normalisation) to say, for each cell of the
4x4 feature grid, which colour and shape has its centre there (or none), on
freshly generated synthetic images; then it sets the batch-norm statistics from
one large batch and writes the weights in float16 to
``grader/course/data/encoder_synthetic.pt``. The file is a build artefact like the
expected values: committed, and the grader only reads it. The committed file
came from the defaults (3000 steps, 743 s on 2 threads, held-out cells 96.6%).

    .venv/bin/python -m grader.authoring.encoder_weights [--steps 3000] [--batch 48] \
        [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models import feature_extraction

from grader.course import encoder, synthetic

ROOT = Path(__file__).resolve().parents[2]

OUT = ROOT / "grader" / "course" / "data" / "encoder_synthetic.pt"
GRID, CELL = 4, synthetic.IMAGE_SIZE / 4
COLOURS, SHAPES = list(synthetic.COLOURS), synthetic.SHAPES
CLASSES = 1 + len(COLOURS) * len(SHAPES)  # 0 = no object centred in the cell


def batch(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised images and, per grid cell, the class of the object centred there."""
    scenes, images = synthetic.make_scenes(n, rng)
    target = torch.zeros(n, GRID, GRID, dtype=torch.long)
    for i, scene in enumerate(scenes):
        for o in scene:
            row, col = min(int(o["y"] // CELL), GRID - 1), min(int(o["x"] // CELL), GRID - 1)
            target[i, row, col] = 1 + COLOURS.index(o["colour"]) * len(SHAPES) \
                + SHAPES.index(o["shape"])
    return encoder.normalise(images), target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=48)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=encoder.ENCODER_SEED)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    cnn = torchvision.models.regnet_x_400mf(weights=None)
    encoder._seeded_init(cnn, args.seed)
    trunk = feature_extraction.create_feature_extractor(
        cnn, return_nodes={"trunk_output.block4": "c5"})
    head = nn.Conv2d(400, CLASSES, kernel_size=1)
    params = list(trunk.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, args.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=args.steps)
    start = time.monotonic()
    trunk.train()
    for step in range(1, args.steps + 1):
        x, target = batch(args.batch, rng)
        logits = head(trunk(x)["c5"])
        # Empty cells are most of the grid: weight them down so objects are learned.
        weight = torch.ones(CLASSES)
        weight[0] = 0.2
        loss = nn.functional.cross_entropy(logits, target, weight=weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == args.steps:
            print(f"step {step}/{args.steps} loss {loss.item():.3f} "
                  f"({time.monotonic() - start:.0f} s)", flush=True)

    # Batch-norm statistics from one large batch, then report held-out accuracy.
    encoder.set_batch_norm_statistics(trunk, batch(256, rng)[0])
    with torch.no_grad():
        x, target = batch(500, rng)
        predicted = head(trunk(x)["c5"]).argmax(1)
    objects = target > 0
    accuracy = (predicted[objects] == target[objects]).float().mean().item()
    empty = (predicted[~objects] == 0).float().mean().item()
    print(f"held-out cells with an object: {accuracy:.1%} right colour and shape; "
          f"empty cells called empty: {empty:.1%}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in cnn.state_dict().items()}
    torch.save({"state_dict": state, "steps": args.steps, "batch": args.batch,
                "seed": args.seed, "held_out_object_accuracy": accuracy,
                "held_out_empty_accuracy": empty}, OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.1f} MB) in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
