"""TRUSTED side: latent bugs read from the submission's source (parsed, never run).

Advice only: what is found here is reported by an advisory check, worth no
points. Its one finding today is a comparison with ``is`` against a literal
(``cell_type is "attn"``): it tests identity, and holds only while both sides
happen to be the same object. Python warns about it (``SyntaxWarning``); in the
course's notebook it works, because the argument is the same literal, and the
grader passes its arguments the same way (``grader.worker.values.from_wire``
interns strings), so the code is graded on what it computes, and told about
the comparison here.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from grader.harness.source_rules import MAX_SOURCE_BYTES


@dataclass(frozen=True)
class Advice:
    line: int
    function: str
    code: str
    fix: str

    def describe(self) -> str:
        return f"line {self.line} in {self.function}: `{self.code}` {self.fix}"


def _literal(node: ast.AST) -> bool:
    """A constant that ``is`` cannot sensibly compare with (not None, True, False or ...)."""
    if isinstance(node, ast.Constant):
        return node.value is not None and node.value is not Ellipsis \
            and not isinstance(node.value, bool)
    if isinstance(node, (ast.Tuple, ast.List, ast.Dict, ast.Set, ast.JoinedStr)):
        return True
    return isinstance(node, ast.UnaryOp) and isinstance(node.operand, ast.Constant) \
        and isinstance(node.operand.value, (int, float, complex))


class _Reader(ast.NodeVisitor):
    def __init__(self, source: str):
        self.lines = source.splitlines()
        self.scope: list[str] = []
        self.found: list[Advice] = []

    def _scoped(self, node: ast.AST, name: str) -> None:
        self.scope.append(name)
        self.generic_visit(node)
        self.scope.pop()

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._scoped(node, node.name)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._scoped(node, node.name)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_Compare(self, node: ast.Compare) -> None:
        sides = [node.left, *node.comparators]
        for i, op in enumerate(node.ops):
            if isinstance(op, (ast.Is, ast.IsNot)) and (_literal(sides[i])
                                                        or _literal(sides[i + 1])):
                better = "!=" if isinstance(op, ast.IsNot) else "=="
                self.found.append(Advice(
                    line=node.lineno, function=".".join(self.scope) or "module level",
                    code=ast.get_source_segment("\n".join(self.lines), node) or "",
                    fix=(f"compares identity, not value: use {better}. It holds only while "
                         "both sides are the same object (Python warns: SyntaxWarning "
                         "'\"is\" with a literal'); a value built at run time, read from a "
                         "file or typed by a user, would fail it")))
                break
        self.generic_visit(node)


def scan(path: str | Path) -> list[Advice]:
    """The latent bugs in the module at ``path``; [] when it cannot be read (other checks
    say why)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_SOURCE_BYTES:
            return []
        source = path.read_bytes().decode("utf-8", errors="replace")
        tree = ast.parse(source, filename=path.name)
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    reader = _Reader(source)
    try:
        reader.visit(tree)
    except RecursionError:
        return reader.found
    return reader.found
