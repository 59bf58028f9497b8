"""The benchmarks and measurements (not tests): ``python scripts/bench.py NAME [ARGS...]``.

Each benchmark is a module of this package with a ``main(argv)``; ``NAME`` is the
module's name (``-`` and ``_`` alike), ``ARGS`` its own options (``NAME --help``).
``--list`` names them with the first line of each one's docstring. What they
measured, and when, is in docs/benchmarks.md. ``scripts/bench_suite.sh`` (the whole
suite in fresh clones) is a shell script of its own.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
USAGE = "usage: scripts/bench.py NAME [ARGS...] | --list | --help"


def names() -> list[str]:
    """Every benchmark, by its module's name."""
    return sorted(p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_"))


def summary(name: str) -> str:
    """The first line of a benchmark's docstring, read without importing it (torch)."""
    doc = ast.get_docstring(ast.parse((HERE / f"{name}.py").read_text(encoding="utf-8")))
    return (doc or "").strip().splitlines()[0] if doc else ""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"{USAGE}\n\n{__doc__}")
        return 0 if argv else 2
    if argv[0] == "--list":
        for name in names():
            print(f"{name:<18} {summary(name)}")
        return 0
    name = argv[0].replace("-", "_")
    if name not in names():
        print(f"scripts/bench.py: no benchmark {argv[0]!r}; they are: {', '.join(names())}",
              file=sys.stderr)
        return 2
    root = str(HERE.parent.parent)
    if root not in sys.path:  # the benchmarks import grader and tests from the checkout
        sys.path.insert(0, root)
    return importlib.import_module(f"scripts.bench.{name}").main(argv[1:]) or 0
