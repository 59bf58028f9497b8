"""Fingerprints of the known misconceptions, built by `capgrade build` with the expected values.

Each misconception of ``grader/diagnosis/catalogue.toml`` (except rules) has a
mutation in the instructors' ``reference/misconceptions.toml``: edits scoped to
one function of the reference, as the stub generator scopes its regions. The
mutated reference runs through every (non-slow) check in record mode, and what
it computes is kept wherever the check's own comparison tells it from the
reference's value. Public checks' fingerprints go with the public expected
values (students may see them: they are wrong values), hidden ones stay with the
hidden values.
"""

from __future__ import annotations

import ast
import tempfile
import tomllib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from grader.diagnosis import catalogue as misconceptions

MUTATIONS_FILE = "misconceptions.toml"


class MutationError(ValueError):
    """A mutation no longer fits the reference (or the catalogue)."""


@dataclass(frozen=True)
class Edit:
    function: str
    old: str
    new: str


def mutations_path(reference: Path) -> Path:
    """The mutations live beside the reference module (instructors only)."""
    return Path(reference).parent / MUTATIONS_FILE


def load_mutations(path: Path) -> dict[str, list[Edit]]:
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    try:
        return {mid: [Edit(**e) for e in entry["edits"]] for mid, entry in raw.items()}
    except (KeyError, TypeError) as exc:
        raise MutationError(f"{path}: malformed entry ({exc}); each needs "
                            "edits = [{ function, old, new }, ...]") from None


def _span(source: str, qualname: str) -> tuple[int, int]:
    """Character offsets of the function or method ``qualname`` ("Class.method") in source."""
    tree = ast.parse(source)
    parts, body = qualname.split("."), tree.body
    node: ast.FunctionDef | ast.ClassDef | None = None
    for part in parts:
        node = next((n for n in body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
                     and n.name == part), None)
        if node is None:
            raise MutationError(f"no function {qualname!r} in the reference")
        body = node.body
    assert node is not None  # str.split gives at least one part
    lines = source.splitlines(keepends=True)
    start = sum(len(line) for line in lines[:node.lineno - 1])
    end = sum(len(line) for line in lines[:node.end_lineno])
    return start, end


def apply(source: str, edits: list[Edit], name: str = "") -> str:
    """The source with each edit made inside its function (``old`` unique there)."""
    for edit in edits:
        start, end = _span(source, edit.function)
        body = source[start:end]
        count = body.count(edit.old)
        if count != 1:
            raise MutationError(f"mutation {name}: {edit.old!r} occurs {count} times in "
                                f"{edit.function} of the reference (must be exactly once)")
        source = source[:start] + body.replace(edit.old, edit.new) + source[end:]
    return source


def plan(reference: Path) -> dict[str, list[Edit]]:
    """The mutations to fingerprint, checked against the catalogue and the reference."""
    entries = misconceptions.load()
    mutations = load_mutations(mutations_path(reference))
    needed = {mid for mid, e in entries.items() if not e.rule}
    lacking = sorted(needed - set(mutations))
    if lacking:
        raise MutationError(f"catalogue entries without a mutation in "
                            f"{mutations_path(reference)}: {', '.join(lacking)}")
    if set(mutations) - needed:
        raise MutationError(f"mutations of no catalogue entry: "
                            f"{', '.join(sorted(set(mutations) - needed))}")
    source = Path(reference).read_text(encoding="utf-8")
    for mid, edits in mutations.items():
        if apply(source, edits, mid) == source:
            raise MutationError(f"mutation {mid} changes nothing")
    return {mid: mutations[mid] for mid in entries if mid in mutations}


def _fingerprint_one(reference: str, hidden_expected: str, mid: str,
                     edits: list[Edit]) -> tuple[str, dict[str, dict[str, Any]], float]:
    from grader.harness.engine import record
    from grader.harness.request import GradingRequest

    source = apply(Path(reference).read_text(encoding="utf-8"), edits, mid)
    with tempfile.TemporaryDirectory(prefix="capgrade-mutant-") as tmp:
        mutant = Path(tmp) / Path(reference).name
        mutant.write_text(source, encoding="utf-8")
        result, recorded = record(GradingRequest(submission=mutant,
                                                 hidden_expected=Path(hidden_expected),
                                                 fingerprint=mid))
    return mid, {"public": recorded["public"], "hidden": recorded["hidden"]}, result.duration


def build(reference: Path, hidden_expected: Path, jobs: int = 2,
          progress: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Every misconception's fingerprints: {"public": {...}, "hidden": {...}}.

    The reference's expected values must already be written (they are what the
    mutants are told apart from).
    """
    todo = plan(reference)
    out: dict[str, dict[str, Any]] = {"public": {}, "hidden": {}}
    empty = []
    with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_fingerprint_one, str(reference), str(hidden_expected), mid,
                               edits) for mid, edits in todo.items()]
        for done, future in enumerate(futures, 1):
            mid, recorded, seconds = future.result()
            found = len(recorded["public"]) + len(recorded["hidden"])
            progress(f"  [{done}/{len(todo)}] {mid}: {found} fingerprinted values "
                     f"({seconds:.1f} s)")
            if not found:
                empty.append(mid)
            out["public"].update(recorded["public"])
            out["hidden"].update(recorded["hidden"])
    if empty:
        raise MutationError(f"mutations that no check tells from the reference: "
                            f"{', '.join(empty)}")
    return out
