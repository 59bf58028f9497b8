"""How often the diagnoses name the right mistake (a measurement, not a test).

Grades every case of ``tests/diagnosis_cases.py`` (public + hidden checks, no slow
ones) and prints, per kind, how many got exactly their mistakes named (right),
some of them and nothing else (partly), nothing (none), or a mistake that is not
there (wrong), then the cases that were not right.

    .venv/bin/python scripts/bench.py diagnosis_figures [--kinds mutant,pair,variant,buggy,correct]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from tests import diagnosis_cases as cases


def grade(case: cases.Case) -> tuple[cases.Case, set[str], str]:
    from grader.harness.engine import run_checks

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rnn_lstm_captioning.py"
        path.write_text(case.source, encoding="utf-8")
        result = run_checks(path, hidden=True)
    found = {d["id"] for c in result.checks for d in c.diagnoses}
    return case, found, cases.verdict(case.expected, found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench.py diagnosis_figures",
                                     description=__doc__)
    parser.add_argument("--kinds", default="mutant,pair,variant,buggy,correct")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    kinds = args.kinds.split(",")
    sources = {"mutant": cases.mutants, "pair": cases.pairs, "variant": cases.variants,
               "buggy": cases.buggy, "correct": cases.correct}
    todo = [c for kind in kinds for c in sources[kind]()]
    tally: dict[str, Counter] = {}
    misses = []
    with ProcessPoolExecutor(max_workers=args.jobs,
                             mp_context=get_context("spawn")) as pool:
        for case, found, verdict in pool.map(grade, todo):
            tally.setdefault(case.kind, Counter())[verdict] += 1
            if verdict != "right":
                misses.append(f"{case.kind} {case.name}: {verdict}; expected "
                              f"{sorted(case.expected)}, named {sorted(found)}")
            print(f"{case.kind:8} {case.name:45} {verdict}", file=sys.stderr, flush=True)
    print("| cases | count | right | partly | none | wrong |\n|---|---|---|---|---|---|")
    for kind, t in tally.items():
        print(f"| {kind} | {sum(t.values())} | {t['right']} | {t['partly']} | {t['none']} | "
              f"{t['wrong']} |")
    for line in misses:
        print("-", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
