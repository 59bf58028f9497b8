"""The hand-in's training-loss histories: the rules and how they are judged (no torch).

Students hand in ``rnn_lstm_attention_submission.pt`` (written by ``torch.save`` in the
notebook's cell that saves the losses): a dict of three per-iteration loss lists. The
file is untrusted: the trusted side only vets it (``check_file``) and the worker parses
it, with torch's restricted ``weights_only`` unpickler, in a process that imports no
student code (``grader.worker.lossfile_reader``); the numbers come back as plain data.
"""

from __future__ import annotations

import math
import os
import stat
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from grader.contract import LOSS_FILE

FILENAME = LOSS_FILE
KEYS = ("rnn_losses", "lstm_losses", "attn_losses")

# Readable model names for feedback messages.
MODEL_NAMES = {"rnn_losses": "RNN", "lstm_losses": "LSTM", "attn_losses": "attention LSTM"}

DEFAULT_MAX_BYTES = 20_000_000


def _default_bounds() -> dict[str, float]:
    return {"rnn_losses": 2.0, "lstm_losses": 1.8, "attn_losses": 0.5}


@dataclass
class LossFileRules:
    """What a good submission looks like; defaults follow the course (60 epochs x 39 iterations).

    ``expected_length=None`` accepts any length >= 2 (for a shortened course run). ``tail`` is
    how many last values are averaged as "the final loss" (1 = the last value, which is what
    the notebook prints). ``min_drop`` requires final <= min_drop * first, so a flat or rising
    curve (a model that did not learn, or made-up numbers) is caught.
    """

    expected_length: int | None = 2340
    final_bounds: dict[str, float] = field(default_factory=_default_bounds)
    max_bytes: int = DEFAULT_MAX_BYTES
    tail: int = 1
    min_drop: float = 0.5

    def __post_init__(self) -> None:
        # Validate here so a typo in a config fails at start-up, not mid-way through grading.
        if self.expected_length is not None and (
            not _is_int(self.expected_length) or self.expected_length < 2
        ):
            raise ValueError(
                f"expected_length must be an integer >= 2 or None, got {self.expected_length!r}"
            )
        if not isinstance(self.final_bounds, dict):
            raise ValueError(f"final_bounds must be a table/dict, got {self.final_bounds!r}")
        unknown = sorted(str(k) for k in self.final_bounds if k not in KEYS)
        if unknown:
            raise ValueError(f"unknown final_bounds key(s): {', '.join(unknown)}")
        for key, bound in self.final_bounds.items():
            if not _is_number(bound) or not math.isfinite(bound):
                raise ValueError(f"final_bounds[{key!r}] must be a finite number, got {bound!r}")
        self.final_bounds = {k: float(v) for k, v in self.final_bounds.items()}
        if not _is_int(self.max_bytes) or self.max_bytes <= 0:
            raise ValueError(f"max_bytes must be a positive integer, got {self.max_bytes!r}")
        if not _is_int(self.tail) or self.tail < 1:
            raise ValueError(f"tail must be an integer >= 1, got {self.tail!r}")
        if not _is_number(self.min_drop) or not 0 < self.min_drop <= 1:
            raise ValueError(f"min_drop must be a number in (0, 1], got {self.min_drop!r}")
        self.min_drop = float(self.min_drop)

    @classmethod
    def from_mapping(cls, d: dict[str, Any]) -> LossFileRules:
        """Build rules from a config table (e.g. TOML); unknown keys are errors, not ignored.

        ``final_bounds`` is merged over the defaults, so a config that tunes one model's bound
        does not silently drop the other two.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise ValueError(
                f"unknown loss-file rule key(s): {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})"
            )
        kwargs = dict(d)
        if "final_bounds" in kwargs:
            bounds = kwargs["final_bounds"]
            if not isinstance(bounds, dict):
                raise ValueError(f"final_bounds must be a table/dict, got {bounds!r}")
            kwargs["final_bounds"] = {**_default_bounds(), **bounds}
        return cls(**kwargs)


class LossFileError(Exception):
    """The loss file is missing, unreadable or malformed, so no loss history can be judged."""


def check_file(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> Path:
    """Refuse what no parser should open: a missing, special, huge, empty or zip-bomb file.

    Runs before the file is handed to a worker (``grader.worker.lossfile_reader``,
    where torch's restricted unpickler parses it); messages are meant for the student.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise LossFileError(
            f"{path.name} was not found; it is written by the notebook's cell that saves the "
            "losses (run all cells after training, then hand in the file)"
        ) from None
    except OSError as exc:
        raise LossFileError(f"cannot access {path.name}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        # A FIFO or device would block or stream forever; a directory is simply wrong.
        raise LossFileError(f"{path.name} is not a regular file")
    if st.st_size > max_bytes:
        raise LossFileError(
            f"{path.name} is {st.st_size:,} bytes, more than the {max_bytes:,} allowed; "
            "it should hold only the three loss lists"
        )
    if st.st_size == 0:
        raise LossFileError(f"{path.name} is empty (0 bytes); re-run the notebook's cell that "
                            "saves the losses")
    _check_zip_expansion(path, max_bytes)
    return path


def _check_zip_expansion(path: Path, max_bytes: int) -> None:
    """Vet a zip-format file before torch opens it.

    torch.save writes a zip archive. torch reads deflated entries too, so a small crafted file
    could inflate far past max_bytes; and for a truncated archive torch (given a path) raises a
    bare ``OSError: [Errno 22] Invalid argument``, so the truncation is diagnosed here instead.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise LossFileError(f"cannot read {path.name}: {exc.strerror or exc}") from None
    if head != b"PK\x03\x04":
        return  # not a zip: torch tries its legacy format, still through the safe unpickler
    try:
        with zipfile.ZipFile(path) as zf:
            total = sum(info.file_size for info in zf.infolist())
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        raise LossFileError(
            f"{path.name} is truncated or corrupt (not a complete torch.save archive); "
            "re-run the notebook's cell that saves the losses and hand in the new file"
        ) from None
    if total > max_bytes:
        raise LossFileError(
            f"{path.name} unpacks to {total:,} bytes, more than the {max_bytes:,} allowed"
        )


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _final(values: list[float], tail: int) -> float:
    last = values[-tail:]
    return sum(last) / len(last)


def judge_losses(data: dict[str, list[float]], rules: LossFileRules) -> list[str]:
    """List every problem with the loss histories (empty list = all good), for feedback."""
    problems: list[str] = []
    for key in KEYS:
        model = MODEL_NAMES[key]
        if key not in data:
            problems.append(f"{key} ({model}): missing")
            continue
        values = data[key]
        n = len(values)
        if n < 2:
            problems.append(f"{key} ({model}): only {n} value(s); a loss history needs at least 2")
            continue
        if rules.expected_length is not None and n != rules.expected_length:
            problems.append(
                f"{key} ({model}): expected {rules.expected_length} losses "
                f"(one per training iteration), found {n}"
            )
        bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            problems.append(
                f"{key} ({model}): {len(bad)} non-finite value(s) (NaN/inf), "
                f"first at index {bad[0]}"
            )
            continue  # the final-loss and drop checks would only repeat the NaN
        final = _final(values, rules.tail)
        what = "final loss" if rules.tail == 1 else f"final loss (mean of last {rules.tail})"
        bound = rules.final_bounds.get(key)
        if bound is not None and not final < bound:
            problems.append(f"{key} ({model}): {what} {final:.4g} is not below {bound:.4g}")
        first = values[0]
        if final > rules.min_drop * first:
            problems.append(
                f"{key} ({model}): loss did not decrease enough: {what} {final:.4g} > "
                f"{rules.min_drop:g} x first loss {first:.4g} (= {rules.min_drop * first:.4g})"
            )
    return problems


def summarise(data: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """Per-key length/first/final/min, for feedback messages and logs."""
    out: dict[str, dict[str, Any]] = {}
    for key, values in data.items():
        finite = [v for v in values if math.isfinite(v)]
        out[key] = {
            "length": len(values),
            "first": values[0] if values else None,
            "final": values[-1] if values else None,
            "min": min(finite) if finite else None,
        }
    return out


def compare_histories(submitted: dict[str, list[float]], reference: dict[str, list[float]],
                      rtol: float) -> list[str]:
    """Where ``submitted`` departs from ``reference`` by more than ``rtol`` (relative, >= 1).

    One problem per model at most: its length, or the first iteration that
    differs, with both values. An empty list means they agree.
    """
    problems: list[str] = []
    for key in KEYS:
        model = MODEL_NAMES[key]
        mine, theirs = submitted.get(key), reference.get(key)
        if mine is None:
            problems.append(f"{key} ({model}): missing")
            continue
        if not theirs:
            problems.append(f"{key} ({model}): the grader's own run produced no losses")
            continue
        if len(mine) != len(theirs):
            problems.append(f"{key} ({model}): {len(mine)} losses, the grader's run has "
                            f"{len(theirs)}")
            continue
        for i, (a, b) in enumerate(zip(mine, theirs, strict=True)):
            if not abs(a - b) <= rtol * max(1.0, abs(b)):  # NaN never agrees
                problems.append(f"{key} ({model}): iteration {i + 1} is {a:.6g}, the grader's "
                                f"run gives {b:.6g}")
                break
    return problems
