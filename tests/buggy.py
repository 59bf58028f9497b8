"""The student-style buggy submissions, stored as edits on the independent student solutions.

``tests/solutions/buggy/manifest.toml`` has one table per submission: its ``base`` (a
``tests/solutions/students/<base>.py``), the misconception ids it makes (``mistakes``), a
``describe`` line, and ``[[<name>.edits]]``: ``old``/``new`` texts applied in order, as
``tests/variants.py`` applies a variant to the reference. Each ``old`` must occur exactly
once in the text it is applied to, so a change to a base breaks the entry loudly instead of
silently producing a copy without the bug.
"""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path

SOLUTIONS = Path(__file__).resolve().parent / "solutions"
STUDENTS = SOLUTIONS / "students"
MANIFEST = SOLUTIONS / "buggy" / "manifest.toml"


@cache
def manifest() -> dict[str, dict]:
    """Every entry of the manifest, by name, in the manifest's order."""
    with open(MANIFEST, "rb") as f:
        return tomllib.load(f)


def names() -> list[str]:
    return list(manifest())


def base_path(name: str) -> Path:
    return STUDENTS / f"{manifest()[name]['base']}.py"


def apply(name: str, text: str, edits: list[dict]) -> str:
    """``text`` with ``edits`` applied in order (fails unless each ``old`` is there once)."""
    for k, edit in enumerate(edits, 1):
        count = text.count(edit["old"])
        assert count == 1, (f"buggy {name}: edit {k}'s `old` occurs {count} times in "
                            f"{manifest()[name]['base']}.py (with the earlier edits applied): "
                            f"{edit['old']!r}")
        text = text.replace(edit["old"], edit["new"])
    return text


def source(name: str) -> str:
    """The buggy submission's module source: its base with its edits applied."""
    return apply(name, base_path(name).read_text(encoding="utf-8"), manifest()[name]["edits"])


def write(name: str, directory: Path) -> Path:
    """Write the submission to ``directory/<name>.py`` and return that path."""
    path = Path(directory) / f"{name}.py"
    path.write_text(source(name), encoding="utf-8")
    return path


def paths(directory: Path) -> list[Path]:
    """Write every submission into ``directory`` (as ``<name>.py``); their paths, in order."""
    return [write(name, directory) for name in names()]
