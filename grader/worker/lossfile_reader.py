"""UNTRUSTED side: parse a hand-in's loss file with torch's restricted unpickler.

Runs in a worker that imports no student code (``Op.READ_LOSS_FILE``); what
comes back to the harness is plain numbers, or a ``LossFileError`` whose
message tells the student what is wrong with the file. ``weights_only`` refuses
to import or call anything outside a small allowlist, so a malicious file fails
here and can do nothing else.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch

from grader.course.lossfile import (
    DEFAULT_MAX_BYTES,
    KEYS,
    LossFileError,
    _is_number,
    check_file,
)


def load_loss_file(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, list[float]]:
    """Safely read the submission file and normalise it to ``{key: list[float]}``.

    Raises LossFileError with a message meant for the student for every way the file can be
    unusable.
    """
    path = check_file(path, max_bytes)
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols it did not write; noise for the grader's log.
            warnings.simplefilter("ignore")
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure of an untrusted file is the file's fault
        raise LossFileError(_describe_load_error(path.name, exc)) from exc

    return _normalise(raw, path.name)


#: The most values one loss history may hold (the course writes 2,340 per model).
MAX_VALUES = 1_000_000

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _describe_load_error(name: str, exc: Exception) -> str:
    """Turn torch.load's exception into advice; never echo torch's 'use weights_only=False'."""
    msg = _ANSI.sub("", str(exc))
    found = _GLOBAL.search(msg)
    if found or "unsupported global" in msg.lower():
        what = found.group(1) if found else "unknown"
        if what.startswith("numpy"):
            return (
                f"{name} holds numpy arrays/values ({what}); save plain lists of floats "
                "(e.g. losses.tolist() or [float(x) for x in losses])"
            )
        return (
            f"{name} was rejected: the file holds Python objects other than lists/tensors of "
            f"numbers (a pickle payload?); it refers to {what}, which is not allowed"
        )
    if "Unsupported operand" in msg:
        return (
            f"{name} is not a file written by torch.save (it may be a plain pickle or some "
            "other format); re-run the notebook's cell that saves the losses to write it with "
            "torch.save"
        )
    if "weights_only" in msg or "Weights only" in msg:
        return (
            f"{name} was rejected by the safe loader: the file holds Python objects other than "
            "lists/tensors of numbers (a pickle payload?)"
        )
    if isinstance(exc, RuntimeError) and ("zip archive" in msg or "central directory" in msg):
        return (
            f"{name} is truncated or corrupt (not a complete torch.save archive); "
            "re-run the notebook's cell that saves the losses and hand in the new file"
        )
    detail = msg.strip().splitlines()[0][:200] if msg.strip() else "no details"
    return (
        f"{name} could not be read as a torch.save file ({type(exc).__name__}: {detail}); "
        "it may be truncated, corrupt, or not a .pt file at all"
    )


def _normalise(raw: object, name: str) -> dict[str, list[float]]:
    """Check the top-level shape and turn every value into list[float]."""
    if not isinstance(raw, dict):
        raise LossFileError(
            f"{name} should hold a dict with keys {', '.join(KEYS)}, "
            f"but holds a {type(raw).__name__}"
        )
    missing = [k for k in KEYS if k not in raw]
    extra = sorted(repr(k) for k in raw if k not in KEYS)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing key(s): {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected key(s): {', '.join(extra)}")
        raise LossFileError(
            f"{name} has the wrong keys ({'; '.join(parts)}); expected exactly {', '.join(KEYS)}"
        )
    return {key: _to_floats(raw[key], key) for key in KEYS}


def _to_floats(value: object, key: str) -> list[float]:
    """Accept a list/tuple of plain numbers or a 1-D real tensor; name the key when not."""
    if isinstance(value, torch.Tensor):
        if value.layout != torch.strided or value.device.type != "cpu":
            raise LossFileError(
                f"{key} is a tensor with layout {value.layout} on device {value.device}; "
                "save a plain 1-D tensor or a list of floats"
            )
        if value.dtype == torch.bool or value.dtype.is_complex or value.is_quantized:
            raise LossFileError(f"{key} is a tensor of dtype {value.dtype}; expected real numbers")
        if value.dim() != 1:
            raise LossFileError(
                f"{key} is a {value.dim()}-D tensor of shape {tuple(value.shape)}; "
                "expected a 1-D list of per-iteration losses"
            )
        # Before anything is materialised: a view may repeat a few bytes of storage as
        # millions of values (stride 0 or overlapping strides), which the file's size
        # limit does not bound. A saved history's values each have bytes of their own.
        stored = value.untyped_storage().nbytes()
        if value.numel() * value.element_size() > stored or value.numel() > MAX_VALUES:
            raise LossFileError(
                f"{key} is a tensor of {value.numel():,} values "
                + (f"viewing only {stored:,} bytes of storage (a strided view that repeats "
                   "values)" if value.numel() * value.element_size() > stored else
                   f"(more than the {MAX_VALUES:,} a loss history may have)")
                + "; save the per-iteration losses as a plain list of floats"
            )
        try:
            return [float(x) for x in value.detach().to(torch.float64).tolist()]
        except Exception as exc:  # exotic tensors (quantized, ...) that cannot be converted
            raise LossFileError(f"{key}: tensor could not be converted to floats ({exc})") from exc
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_VALUES:
            raise LossFileError(f"{key} holds {len(value):,} values, more than the "
                                f"{MAX_VALUES:,} a loss history may have")
        out: list[float] = []
        for i, x in enumerate(value):
            if not _is_number(x):
                raise LossFileError(
                    f"{key}[{i}] is a {type(x).__name__}, not a number; {key} must be a list of "
                    "floats (use loss.item() when recording each loss)"
                )
            try:
                out.append(float(x))
            except OverflowError:
                raise LossFileError(f"{key}[{i}] is an integer too large for a float") from None
        return out
    raise LossFileError(
        f"{key} is a {type(value).__name__}; expected a list of floats or a 1-D tensor"
    )


