"""Generate the student stub from the reference solution.

The stub is never edited by hand: a test regenerates it and compares, so the
reference is the single source of both. Region syntax (inside the reference):

    # BEGIN SOLUTION: next_h, cache      <- names the student must fill (optional)
    # Task: what to do, in one or more   <- becomes the TODO text (optional)
    # comment lines.
    ...solution code...
    # END SOLUTION

A region inside a function becomes a course-style TODO block whose names are
set to None and whose body raises ``NotImplementedError`` with a message the
grader recognises (``STUB_MARKER``). A region at module level is dropped.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from grader.contract import STUB_MARKER

BEGIN = re.compile(r"^(?P<indent>[ \t]*)# BEGIN SOLUTION(?::\s*(?P<names>.*?))?\s*$")
END = re.compile(r"^[ \t]*# END SOLUTION\s*$")
TASK = re.compile(r"^[ \t]*# Task:\s?(?P<text>.*)$")
COMMENT = re.compile(r"^[ \t]*#\s?(?P<text>.*)$")

#: Every TODO block raises NotImplementedError with a message starting so.

HEADER = (
    "# Student stub generated from the reference by `capgrade build-stub`.\n"
    "# Fill in every TODO block; check your work with `capgrade check`.\n"
)
RULE_WIDTH = 78


class StubError(ValueError):
    """The reference's solution markers are malformed."""


@dataclass
class Region:
    start: int  # index of the BEGIN line
    end: int  # index of the END line
    indent: str
    names: list[str]
    task: list[str]


def find_regions(lines: list[str]) -> list[Region]:
    """Parse the solution regions, rejecting nesting and unterminated ones."""
    regions: list[Region] = []
    open_at: int | None = None
    for i, line in enumerate(lines):
        begin, end = BEGIN.match(line), END.match(line)
        if begin:
            if open_at is not None:
                raise StubError(f"line {i + 1}: BEGIN SOLUTION inside the region opened "
                                f"at line {open_at + 1}")
            open_at = i
            names = [n.strip() for n in (begin["names"] or "").split(",") if n.strip()]
            for name in names:
                if not name.isidentifier():
                    raise StubError(f"line {i + 1}: {name!r} is not a variable name")
            regions.append(Region(i, -1, begin["indent"], names, []))
        elif end:
            if open_at is None:
                raise StubError(f"line {i + 1}: END SOLUTION without a BEGIN SOLUTION")
            regions[-1].end = i
            regions[-1].task = _task_text(lines[open_at + 1 : i])
            open_at = None
    if open_at is not None:
        raise StubError(f"line {open_at + 1}: BEGIN SOLUTION is never closed by END SOLUTION")
    return regions


def _task_text(body: list[str]) -> list[str]:
    """The 'Task:' comment and the comment lines that continue it."""
    first = TASK.match(body[0]) if body else None
    if not first:
        return []
    text = [first["text"]]
    for line in body[1:]:
        comment = COMMENT.match(line)
        if not comment:
            break
        text.append(comment["text"])
    return text


def _enclosing_names(source: str) -> dict[int, str]:
    """Map each line number (1-based) to the qualified name of its innermost function."""
    owner: dict[int, str] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    for line in range(child.lineno, (child.end_lineno or child.lineno) + 1):
                        owner[line] = name
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return owner


def _todo_block(region: Region, owner: str) -> list[str]:
    ind = region.indent
    rule = ind + "#" * (RULE_WIDTH - len(ind))
    out = []
    if region.names:
        out.append(f"{ind}{', '.join(region.names)} = {', '.join(['None'] * len(region.names))}")
    out.append(rule)
    task = region.task or [f"implement {owner}."]
    out.append(f"{ind}# TODO: {task[0]}".rstrip())
    out.extend(f"{ind}# {line}".rstrip() for line in task[1:])
    out.append(rule)
    out.append(f'{ind}# Replace the "raise" line below with your code.')
    out.append(f'{ind}raise NotImplementedError("{STUB_MARKER} TODO: {owner}")')
    out.append(rule)
    out.append(f"{ind}#{'END OF YOUR CODE'.center(RULE_WIDTH - len(ind) - 2)}#")
    out.append(rule)
    return out


def make_stub(reference_source: str) -> str:
    """Return the student stub for the given reference source text."""
    lines = reference_source.splitlines()
    regions = find_regions(lines)
    owners = _enclosing_names(reference_source)
    out: list[str] = []
    cursor = 0
    for region in regions:
        out.extend(lines[cursor : region.start])
        owner = owners.get(region.start + 1)
        if region.indent and owner is None:
            raise StubError(f"line {region.start + 1}: an indented region must be inside a "
                            "function or method")
        if owner is not None:
            out.extend(_todo_block(region, owner))
        cursor = region.end + 1
    out.extend(lines[cursor:])
    text = HEADER + "\n".join(out) + "\n"
    # Dropped module-level regions leave runs of blank lines: keep at most two.
    text = re.sub(r"\n{4,}", "\n\n\n", text)
    ast.parse(text)  # the stub must at least be valid Python
    return text


def build_stub(reference: Path, out: Path) -> bool:
    """Write the stub; return True when the file changed."""
    stub = make_stub(reference.read_text(encoding="utf-8"))
    if out.exists() and out.read_text(encoding="utf-8") == stub:
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(stub, encoding="utf-8")
    return True


def stub_is_current(reference: Path, out: Path) -> bool:
    """True when ``out`` is exactly what build_stub would write."""
    return out.exists() and out.read_text(encoding="utf-8") == make_stub(
        reference.read_text(encoding="utf-8")
    )
