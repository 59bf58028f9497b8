"""Captioning data for the notebook and the grader: the course's coco.pt or the synthetic set.

The course's file is used when a path is given (argument, or the
``CAPGRADE_COCO`` environment variable); otherwise the synthetic set from
``grader.course.synthetic`` is generated once and cached. Either way the data is
validated on load, so a truncated download or a hand-edited file fails with a
message naming the problem instead of a shape error deep in training. Files are
read with ``torch.load(weights_only=True)``: loading never runs code.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from grader.course import synthetic
from grader.settings import SETTINGS

COCO_ENV = "CAPGRADE_COCO"
CACHE_ENV = "CAPGRADE_CACHE"
SPECIAL_TOKENS = {"<NULL>": 0, "<START>": 1, "<END>": 2, "<UNK>": 3}
SPLITS = ("train", "val")


class DataError(Exception):
    """The captioning data is missing, unreadable or not in the course's format."""


def cache_dir() -> Path:
    """$CAPGRADE_CACHE, else $XDG_CACHE_HOME/capgrade, else ~/.cache/capgrade."""
    if SETTINGS.cache:
        return Path(SETTINGS.cache)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "capgrade"


def validate(data: Any, source: str = "the data") -> dict:
    """Raise DataError naming the first problem; return ``data`` when it is well formed."""
    if not isinstance(data, dict):
        raise DataError(f"{source}: expected a dict, found {type(data).__name__}")
    keys = [f"{s}_{k}" for s in SPLITS for k in ("images", "captions")] + ["vocab"]
    missing = [k for k in keys if k not in data]
    if missing:
        raise DataError(f"{source}: missing keys {missing} (the course's coco.pt has {keys})")
    vocab = data["vocab"]
    if not isinstance(vocab, dict) or not {"idx_to_token", "token_to_idx"} <= set(vocab):
        raise DataError(f"{source}: vocab must be a dict with idx_to_token and token_to_idx")
    idx_to_token, token_to_idx = vocab["idx_to_token"], vocab["token_to_idx"]
    if not isinstance(idx_to_token, list) or not all(isinstance(t, str) for t in idx_to_token):
        raise DataError(f"{source}: vocab['idx_to_token'] must be a list of strings")
    if not isinstance(token_to_idx, dict):
        raise DataError(f"{source}: vocab['token_to_idx'] must be a dict")
    if len(token_to_idx) != len(idx_to_token) or any(
            token_to_idx.get(t) != i for i, t in enumerate(idx_to_token)):
        raise DataError(f"{source}: inconsistent vocab: token_to_idx is not the inverse of "
                        "idx_to_token")
    for token, index in SPECIAL_TOKENS.items():
        if token_to_idx.get(token) != index:
            raise DataError(f"{source}: vocab must have {token} at index {index} "
                            f"(found {token_to_idx.get(token)})")
    for split in SPLITS:
        images, captions = data[f"{split}_images"], data[f"{split}_captions"]
        name = f"{source}: {split}_images"
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
            raise DataError(f"{name} must be a uint8 tensor, found "
                            f"{getattr(images, 'dtype', type(images).__name__)}")
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2:] != (112, 112):
            raise DataError(f"{name} must have shape (N, 3, 112, 112), found "
                            f"{tuple(images.shape)}")
        name = f"{source}: {split}_captions"
        if not isinstance(captions, torch.Tensor) or captions.dtype != torch.int64:
            raise DataError(f"{name} must be an int64 tensor, found "
                            f"{getattr(captions, 'dtype', type(captions).__name__)}")
        if captions.dim() != 2 or captions.shape[0] != images.shape[0] or captions.shape[1] < 2:
            raise DataError(f"{name} must have shape ({images.shape[0]}, T+1) to match "
                            f"{split}_images, found {tuple(captions.shape)}")
        if captions.numel() and (captions.min() < 0 or captions.max() >= len(idx_to_token)):
            raise DataError(f"{name} holds word indices outside the vocabulary "
                            f"[0, {len(idx_to_token)})")
        if captions.numel() and not bool((captions[:, 0] == SPECIAL_TOKENS["<START>"]).all()):
            raise DataError(f"{name}: every caption must begin with <START>")
    return data


def load_coco(path: str | Path) -> dict:
    """Load and validate the course's coco.pt (never executes code from the file)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (download the course's coco.pt, or leave the "
                        "path out to use the synthetic dataset)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).splitlines()[0][:300]
        if "weights_only" in str(exc) or "global" in str(exc).lower():
            hint = "it holds Python objects other than tensors, lists, dicts and strings"
        else:
            hint = "it is truncated or not a file written by torch.save; download it again"
        raise DataError(f"{path}: cannot be read: {hint} ({reason})") from None
    return validate(data, str(path))


def synthetic_path(n_train: int, n_val: int, seed: int) -> Path:
    return cache_dir() / f"synthetic-v1-{n_train}-{n_val}-seed{seed}.pt"


def load_synthetic(n_train: int = 2000, n_val: int = 200, seed: int = 0,
                   cache: bool = True, verbose: bool = False) -> dict:
    """The synthetic dataset, from the cache when present (written atomically)."""
    path = synthetic_path(n_train, n_val, seed)
    if cache and path.is_file():
        try:
            return validate(torch.load(path, map_location="cpu", weights_only=True), str(path))
        except Exception:
            path.unlink(missing_ok=True)  # a damaged cache entry is regenerated
    start = time.monotonic()
    data = synthetic.make_dataset(n_train, n_val, seed)
    if verbose:
        print(f"generated the synthetic dataset ({n_train} train, {n_val} val, seed {seed}) "
              f"in {time.monotonic() - start:.1f} s")
    if cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".tmp{os.getpid()}")
            torch.save(data, partial)
            partial.replace(path)
        except OSError as exc:  # a read-only home still gets its data
            if verbose:
                print(f"could not cache the dataset at {path}: {exc}")
    return data


def load_data(path: str | Path | None = None, n_train: int = 2000, n_val: int = 200,
              seed: int = 0, verbose: bool = True) -> dict:
    """The course's coco.pt if ``path`` or $CAPGRADE_COCO names one, else synthetic data."""
    path = path or SETTINGS.coco
    if path:
        data = load_coco(path)
        source = f"course data from {path}"
    else:
        data = load_synthetic(n_train, n_val, seed, verbose=verbose)
        source = "synthetic shapes dataset"
    if verbose:
        print(f"{source}: {len(data['train_images'])} train / {len(data['val_images'])} val "
              f"images, vocabulary of {len(data['vocab']['idx_to_token'])} tokens")
    return data
