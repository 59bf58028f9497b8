"""A synthetic captioning dataset in the course's ``coco.pt`` format.

Grading and the notebook must work offline, and the course's file is 380 MB
behind a download. This module draws images of one to three coloured shapes on
a noisy background and writes captions for them with a small grammar that reads
the scene (colour, shape, size, position, left/right/above/below, left-to-right
order). The captions depend on the image, so a model can learn them and
attention has somewhere to look. Everything is deterministic from one seed.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch only where tensors are made: the harness reads captions too
    import torch

IMAGE_SIZE = 112
CAPTION_LENGTH = 17  # <START>, up to 15 words, <END>, then <NULL> padding
SPECIALS = ["<NULL>", "<START>", "<END>", "<UNK>"]

COLOURS = {
    "red": (220, 40, 40), "green": (40, 180, 70), "blue": (50, 90, 230),
    "yellow": (235, 215, 40), "purple": (150, 60, 200), "white": (235, 235, 235),
}
SHAPES = ["circle", "square", "triangle", "cross"]
SIZES = {"small": (9.0, 12.0), "large": (17.0, 22.0)}  # half-widths in pixels
ROWS, COLUMNS = ["top", "middle", "bottom"], ["left", "center", "right"]
PLACES = {  # (row, column) of a 3x3 grid -> the phrase a lone shape gets
    ("top", "left"): "in the top left corner", ("top", "center"): "at the top",
    ("top", "right"): "in the top right corner", ("middle", "left"): "on the left",
    ("middle", "center"): "in the center", ("middle", "right"): "on the right",
    ("bottom", "left"): "in the bottom left corner", ("bottom", "center"): "at the bottom",
    ("bottom", "right"): "in the bottom right corner",
}
RELATIONS = ["to the left of", "to the right of", "above", "below"]
GRAMMAR_WORDS = ["a", "and"]


def vocabulary() -> list[str]:
    """Special tokens 0..3 as the course has them, then every word the grammar uses."""
    words = set(GRAMMAR_WORDS) | set(COLOURS) | set(SHAPES) | set(SIZES)
    for phrase in list(PLACES.values()) + RELATIONS + ["from left to right"]:
        words.update(phrase.split())
    return SPECIALS + sorted(words)


def _sample_scene(rng: np.random.Generator) -> list[dict]:
    """One to three shapes that do not overlap, each fully inside the image."""
    count = 1 + int(np.searchsorted([0.4, 0.75], rng.random(), side="right"))
    colours, sizes = list(COLOURS), list(SIZES)
    while True:
        objects: list[dict] = []
        for _ in range(count):
            size = sizes[rng.integers(len(sizes))]
            r = float(rng.uniform(*SIZES[size]))
            objects.append({
                "colour": colours[rng.integers(len(colours))],
                "shape": SHAPES[rng.integers(len(SHAPES))],
                "size": size, "r": r,
                "x": float(rng.uniform(r + 2, IMAGE_SIZE - r - 2)),
                "y": float(rng.uniform(r + 2, IMAGE_SIZE - r - 2)),
            })
        gaps_ok = all(np.hypot(a["x"] - b["x"], a["y"] - b["y"]) > a["r"] + b["r"] + 6
                      for i, a in enumerate(objects) for b in objects[i + 1:])
        # Three shapes are described left to right: keep them apart horizontally.
        xs = sorted(o["x"] for o in objects)
        order_ok = count < 3 or min(b - a for a, b in itertools.pairwise(xs)) > 14
        pair_ok = True
        if count == 2:  # the relation must be clear: no near-diagonal pairs
            dx, dy = objects[1]["x"] - objects[0]["x"], objects[1]["y"] - objects[0]["y"]
            pair_ok = abs(abs(dx) - abs(dy)) > 12
        if gaps_ok and order_ok and pair_ok:
            return objects


def _noun(o: dict, with_size: bool = True) -> list[str]:
    return ["a"] + ([o["size"]] if with_size else []) + [o["colour"], o["shape"]]


def describe(objects: list[dict]) -> list[str]:
    """The grammar: the caption's words for a scene."""
    if len(objects) == 1:
        (o,) = objects
        third = IMAGE_SIZE / 3
        row = ROWS[min(int(o["y"] // third), 2)]
        col = COLUMNS[min(int(o["x"] // third), 2)]
        return _noun(o) + PLACES[(row, col)].split()
    if len(objects) == 2:
        a, b = objects
        dx, dy = b["x"] - a["x"], b["y"] - a["y"]
        if abs(dx) > abs(dy):
            relation = "to the left of" if dx > 0 else "to the right of"
        else:
            relation = "above" if dy > 0 else "below"
        return _noun(a) + relation.split() + _noun(b)
    ordered = sorted(objects, key=lambda o: o["x"])
    return (_noun(ordered[0], False) + _noun(ordered[1], False)
            + ["and"] + _noun(ordered[2], False) + ["from", "left", "to", "right"])


def _mask(kind: str, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    if kind == "circle":
        return dx**2 + dy**2 <= r**2
    if kind == "square":
        return np.maximum(abs(dx), abs(dy)) <= 0.85 * r
    if kind == "triangle":  # pointing up
        return (dy <= 0.8 * r) & (dy >= -r) & (abs(dx) <= (dy + r) * 0.6)
    arm = r / 3  # cross
    return ((abs(dx) <= arm) & (abs(dy) <= r)) | ((abs(dy) <= arm) & (abs(dx) <= r))


def _render(scenes: list[list[dict]], rng: np.random.Generator,
            background: tuple[int, int, int] | None = None) -> np.ndarray:
    """Draw every scene at once, vectorised over the images that share a slot and shape.

    The background is a random dark colour per image unless ``background`` fixes it.
    """
    n = len(scenes)
    images = rng.standard_normal((n, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32) * 6.0
    shade = rng.integers(20, 90, size=(n, 3, 1, 1))
    if background is not None:
        shade[:] = np.array(background).reshape(1, 3, 1, 1)
    images += shade.astype(np.float32)
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) + 0.5
    tints = rng.normal(0.0, 12.0, size=(n, 3, 3))  # no two reds exactly alike
    for slot in range(3):
        for kind in SHAPES:
            idx = np.array([i for i, s in enumerate(scenes)
                            if len(s) > slot and s[slot]["shape"] == kind], dtype=np.int64)
            if idx.size == 0:
                continue
            objs = [scenes[i][slot] for i in idx]
            centre_x, centre_y, r = (np.array([o[k] for o in objs], np.float32)[:, None, None]
                                     for k in ("x", "y", "r"))
            mask = _mask(kind, xx[None] - centre_x, yy[None] - centre_y, r)
            colour = np.array([COLOURS[o["colour"]] for o in objs]) + tints[idx, slot]
            block = images[idx]
            for c in range(3):
                block[:, c][mask] = np.repeat(colour[:, c], mask.sum(axis=(1, 2)))
            images[idx] = block
    images += 0.5  # round to nearest on the cast below
    return np.clip(images, 0, 255, out=images).astype(np.uint8)


def encode(words: list[str], token_to_idx: dict[str, int]) -> list[int]:
    ids = [token_to_idx["<START>"]] + [token_to_idx.get(w, 3) for w in words]
    ids.append(token_to_idx["<END>"])
    return ids + [token_to_idx["<NULL>"]] * (CAPTION_LENGTH - len(ids))


def make_scenes(n: int, rng: np.random.Generator, background: tuple[int, int, int] | None = None
                ) -> tuple[list[list[dict]], torch.Tensor]:
    """``n`` scenes (each a list of objects: colour, shape, size, r, x, y) and their images."""
    import torch

    scenes = [_sample_scene(rng) for _ in range(n)]
    if n == 0:
        return scenes, torch.zeros((0, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    return scenes, torch.from_numpy(_render(scenes, rng, background))


def make_split(n: int, rng: np.random.Generator, token_to_idx: dict[str, int],
               background: tuple[int, int, int] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images (uint8, N x 3 x 112 x 112) and their encoded captions (int64, N x 17)."""
    import torch

    scenes, images = make_scenes(n, rng, background)
    captions = [encode(describe(s), token_to_idx) for s in scenes]
    return images, torch.tensor(captions, dtype=torch.int64).view(n, CAPTION_LENGTH)


def make_captions(n: int, rng: np.random.Generator, token_to_idx: dict[str, int]) -> np.ndarray:
    """The captions ``make_split`` makes from the same generator, without the images."""
    scenes = [_sample_scene(rng) for _ in range(n)]
    captions = [encode(describe(s), token_to_idx) for s in scenes]
    return np.array(captions, dtype=np.int64).reshape(n, CAPTION_LENGTH)


def make_dataset(n_train: int = 2000, n_val: int = 200, seed: int = 0) -> dict:
    """A dataset dict with exactly the keys, dtypes and layout of the course's coco.pt."""
    if n_train < 0 or n_val < 0:
        raise ValueError("n_train and n_val must be >= 0")
    idx_to_token = vocabulary()
    token_to_idx = {w: i for i, w in enumerate(idx_to_token)}
    train_rng, val_rng = (np.random.default_rng([seed, k]) for k in (0, 1))
    train_images, train_captions = make_split(n_train, train_rng, token_to_idx)
    val_images, val_captions = make_split(n_val, val_rng, token_to_idx)
    return {
        "train_images": train_images, "train_captions": train_captions,
        "val_images": val_images, "val_captions": val_captions,
        "vocab": {"idx_to_token": idx_to_token, "token_to_idx": token_to_idx},
    }


def objects_named(words: list[str]) -> list[tuple[str, str]]:
    """(colour, shape) pairs a caption names, in order: for scoring sampled captions."""
    pairs = []
    for i, word in enumerate(words[:-1]):
        if word in COLOURS and words[i + 1] in SHAPES:
            pairs.append((word, words[i + 1]))
    return pairs
