"""The Gradescope bundle on one submission under several container limits: what it needs.

Builds the bundle once (``capgrade gradescope`` defaults: every check, the notebook
and the loss file), then for each ``--memory`` setting runs ``run_autograder`` as
Gradescope would, in a fresh cgroup with that memory and ``--cpus``, no sandbox
namespaces and a cold page cache (``grader.integrations.container``), one setting
after the other. Prints a Markdown table: wall time, the cgroup's peak memory
(page cache included), out-of-memory kills, the score and the checks that could
not be judged (regrade). Needs root and cgroups.

    .venv/bin/python scripts/bench.py container SUBMISSION_DIR --cpus 0.5 \
        --memory 768M --memory 1024M --memory 1536M
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from grader.integrations import gradescope
from grader.integrations.container import cgroups_usable, parse_memory, run_limited
from grader.results.render import LIMITS_TEST

ROOT = Path(__file__).resolve().parents[2]


def trial(bundle: Path, submission: Path, memory: int, cpus: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="capgrade-bench-") as tmp:
        root = Path(tmp) / "autograder"
        script = gradescope.unpack_for_trial(bundle, root)
        shutil.copytree(submission, root / "submission", dirs_exist_ok=True)
        env = {**os.environ, "CAPGRADE_AUTOGRADER_ROOT": str(root),
               "CAPGRADE_PYTHON": sys.executable}
        run = run_limited(["bash", str(script)], env, memory=memory, cpus=cpus, cold=True,
                          quiet=True)
        results = json.loads((root / "results" / "results.json").read_text())
    tests = [t for t in results.get("tests", []) if t.get("name") != LIMITS_TEST]
    return {"run": run, "score": results.get("score", 0),
            "max": sum(t.get("max_score", 0) for t in tests),
            "regrade": [t["name"] for t in tests if "regrade" in t.get("tags", [])],
            "lost": [t["name"] for t in tests
                     if t.get("status") == "failed" and "regrade" not in t.get("tags", [])],
            "output": results.get("output", "")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench.py container",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("submission", type=Path)
    parser.add_argument("--memory", action="append", required=True)
    parser.add_argument("--cpus", type=float, default=0.5)
    parser.add_argument("--no-notebook", action="store_true",
                        help="a bundle without the notebook checks (capgrade gradescope's)")
    parser.add_argument("--hidden-expected", type=Path,
                        default=ROOT / "reference" / "expected" / "hidden.safetensors")
    args = parser.parse_args(argv)
    why = cgroups_usable()
    if why:
        print(f"bench_container: {why}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="capgrade-bench-bundle-") as tmp:
        bundle = gradescope.build_bundle(Path(tmp) / "autograder.zip", args.hidden_expected,
                                         notebook=not args.no_notebook)
        print("| memory | CPUs | wall | peak (page cache incl.) | OOM kills | score | "
              "regrade | lost |\n|---|---|---|---|---|---|---|---|", flush=True)
        for setting in args.memory:
            got = trial(bundle, args.submission, parse_memory(setting), args.cpus)
            run = got["run"]
            peak = f"{run.peak / 2**20:.0f} MiB" if run.peak is not None else "?"
            print(f"| {setting}{' (no notebook)' if args.no_notebook else ''} | {args.cpus:g} | "
                  f"{run.wall:.0f} s | {peak} | {run.oom_kills} | "
                  f"{got['score']:g} / {got['max']:g} | {len(got['regrade'])} | "
                  f"{', '.join(got['lost']) or '-'} |", flush=True)
            if got["regrade"]:
                print(f"  regrade: {', '.join(got['regrade'])}", file=sys.stderr)
                print(f"  output: {got['output'][:300]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
