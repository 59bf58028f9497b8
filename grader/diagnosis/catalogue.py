"""The misconception catalogue: what students get wrong, in words a student can act on."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

CATALOGUE_PATH = Path(__file__).resolve().parent / "catalogue.toml"
#: Rules: recognised by a property of a wrong value (float32_precision), or by the error a
#: check's call raised and the student's line (device_error, ``judging.require_ok``).
RULES = ("float32_precision", "device_error")


@dataclass(frozen=True)
class Misconception:
    id: str
    name: str
    #: Where the mistake lives in the student's module ("any" for a rule).
    function: str
    #: The handout requirement it breaks.
    requires: str
    #: Completes "This is what ...".
    behaviour: str
    #: What to look at and what the handout asks instead.
    explanation: str
    #: The mistake may touch only some of the values its mutation changes.
    partial: bool = False
    #: Recognised by a property of the value (``RULES``) instead of a fingerprint.
    rule: str = ""

    def text(self) -> str:
        return f"This is what {self.behaviour}. {self.explanation}"


@lru_cache(maxsize=4)
def load(path: Path = CATALOGUE_PATH) -> dict[str, Misconception]:
    """The catalogue by id, in file order; a malformed entry is refused with its name."""
    with open(path, "rb") as f:
        raw = tomllib.load(f).get("misconceptions", {})
    entries = {}
    for mid, fields in raw.items():
        try:
            entry = Misconception(id=mid, **fields)
        except TypeError as exc:
            raise ValueError(f"{path}: misconception {mid!r}: {exc}") from None
        if entry.rule and entry.rule not in RULES:
            raise ValueError(f"{path}: misconception {mid!r}: unknown rule {entry.rule!r} "
                             f"(known: {', '.join(RULES)})")
        entries[mid] = entry
    return entries


def markdown(entries: dict[str, Misconception] | None = None) -> str:
    """The catalogue as a Markdown table (docs/misconceptions.md, `capgrade misconceptions`)."""
    entries = load() if entries is None else entries

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| mistake | where | what the code computes | what to look at | requirement |",
             "|---|---|---|---|---|"]
    lines += [f"| {cell(e.name)} (`{e.id}`) | `{e.function}` | This is what {cell(e.behaviour)} "
              f"| {cell(e.explanation)} | {cell(e.requires)} |" for e in entries.values()]
    return "\n".join(lines) + "\n"
