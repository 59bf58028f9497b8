"""What one check's values say about each misconception, gathered while the check runs.

A check compares values under keys ("next_h", "grad_Wx", ...). For every key it
compares, ``observe`` holds the student's value against the expected value and
against each misconception's fingerprint for that key, with the check's own
comparison (its tolerance, its masks), and notes one word per misconception:

- ``hit``: the value is what the misconception computes;
- ``spared``: the misconception would change this value, but it is right;
- ``other``: the misconception would change it, and it is wrong in another way;
- ``right`` / ``unexplained``: the misconception does not touch this value, which is
  right / wrong (another mistake).

Rules (``catalogue.RULES``) are properties of a wrong value instead of stored
fingerprints; they only ever note ``hit``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from grader.diagnosis.catalogue import Misconception
from grader.harness.judging import float32_rounding

PREFIX = "fingerprint/"
Same = Callable[[Any, Any], bool]


def fingerprint_key(mid: str, full_key: str) -> str:
    """Where a fingerprint is stored: ``fingerprint/<misconception>/<check id>/<key>``."""
    return f"{PREFIX}{mid}/{full_key}"


def by_check(values: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """The stored fingerprints as {check id: {misconception: {key: value}}}."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, value in values.items():
        if not name.startswith(PREFIX):
            continue
        mid, cid, key = name[len(PREFIX):].split("/", 2)
        out.setdefault(cid, {}).setdefault(mid, {})[key] = value
    return out


def without_fingerprints(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if not k.startswith(PREFIX)}


RULE_FUNCTIONS: dict[str, Callable[[Any, Any], bool]] = {"float32_precision": float32_rounding}


def safe_same(same: Same, actual: Any, reference: Any) -> bool:
    """``same`` that treats None as a value (a gradient that never arrived) and never raises."""
    if actual is None or reference is None:
        return actual is None and reference is None
    try:
        return bool(same(actual, reference))
    except Exception:  # a malformed student value: not this fingerprint
        return False


def observe(notes: dict[str, list[str]], key: str, actual: Any, expected: Any, same: Same,
            fingerprints: dict[str, dict[str, Any]],
            catalogue: dict[str, Misconception]) -> None:
    """Add one key's words to ``notes`` ({misconception: [word, ...]}) for one check."""
    right = safe_same(same, actual, expected)
    for mid, keys in fingerprints.items():
        if mid not in catalogue:
            continue  # a fingerprint of an entry since removed from the catalogue
        if key in keys:  # a fingerprint differs from the expected value by construction
            word = ("spared" if right else
                    "hit" if safe_same(same, actual, keys[key]) else "other")
        else:
            word = "right" if right else "unexplained"
        notes.setdefault(mid, []).append(word)
    if right:
        return
    for mid, entry in catalogue.items():
        if entry.rule in RULE_FUNCTIONS and RULE_FUNCTIONS[entry.rule](actual, expected):
            notes.setdefault(mid, []).append("hit")


def verdict(words: list[str], entry: Misconception, failed: bool) -> str:
    """One check's verdict on one misconception: "match", "contradicts" or "" (no evidence)."""
    if "other" in words or ("spared" in words and not entry.partial):
        return "contradicts"
    if failed and "hit" in words and "unexplained" not in words:
        return "match"
    return ""
