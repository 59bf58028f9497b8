"""Print the markdown table of docs/bug-catalogue.md: what the full catalogue says per bug.

Runs every check (public and hidden) on each variant of tests/variants.py, one
variant at a time (~7 s each), so the doc shows every check that fires, not
just the ones a variant names. Run from the project root:

    .venv/bin/python -m tests.tools.make_bug_table > /tmp/table.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from grader.harness.engine import run_checks
from tests.variants import VARIANTS, write_variant


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _fmt(score: float) -> str:
    return f"{score:g}"


def row(variant, result) -> str:
    """One table row; named checks that did not fire are flagged as gaps."""
    lost = [c for c in result.checks if c.score < c.max_score]
    fired = {c.id for c in lost}
    caught = ", ".join(f"`{c.id}` (-{_fmt(c.max_score - c.score)})" for c in lost) or "**none**"
    missed = [cid for cid in variant.catch + variant.gaps if cid not in fired]
    if missed:
        caught += "; **missed:** " + ", ".join(f"`{cid}`" for cid in missed)
    advised = [c.id for c in result.checks if c.status == "advisory"]
    if advised:
        caught += "; advisory (0 points): " + ", ".join(f"`{cid}`" for cid in advised)
    score = f"{_fmt(result.score)} / {_fmt(result.max_score)}"
    if result.status != "graded":
        score += f" ({result.status})"
    return (f"| `{variant.name}` | {_cell(variant.description)} | {_cell(caught)} "
            f"| {score} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", dest="names", nargs="*", help="only these variant names")
    args = parser.parse_args(argv)
    chosen = [v for v in VARIANTS if not args.names or v.name in args.names]
    print("| variant | the bug | checks that lost points (points lost) | score |")
    print("|---|---|---|---|")
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for variant in chosen:
            directory = Path(tmp) / variant.name
            directory.mkdir()
            result = run_checks(write_variant(variant, directory), hidden=True)
            print(row(variant, result), flush=True)
    print(f"\n{len(chosen)} variants in {time.monotonic() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
