"""``capgrade gradescope``: write the autograder zip and, with ``--trial``, run it locally.

The trial unpacks the bundle into a temporary ``autograder/`` root, copies the
submission in, runs ``run_autograder`` as Gradescope would (optionally under a
container's memory and CPU limits, ``grader.integrations.container``) and reads
back Gradescope's ``results.json``: the score, the tests that lost points, and
whether the grading machine ran out (exit 1: raise the settings).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from grader.settings import AUTOGRADER_ROOT, PYTHON
from grader.usage import UsageError


def build_and_try(out: Path, hidden: Path, *, slow: bool, notebook: bool,
                  timeout: float | None, deadline: float, trial: Path | None = None,
                  memory: str | None = None, cpus: float | None = None) -> int:
    """Write the bundle to ``out``; then, given ``trial``, grade that folder with it."""
    from grader.authoring.release import ReleaseError
    from grader.integrations import gradescope

    try:
        bundle = gradescope.build_bundle(out, hidden, slow=slow, notebook=notebook,
                                         timeout=timeout, deadline=deadline)
    except ReleaseError as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote {bundle} ({bundle.stat().st_size:,} bytes): upload it as the assignment's "
          "autograder (Configure Autograder > Zip file upload)")
    if trial is None:
        return 0
    return run_trial(bundle, trial, memory=memory, cpus=cpus)


def _limits(trial: Path, memory: str | None, cpus: float | None) -> int | None:
    """The container's memory in bytes (None: no limit), once the options are found valid."""
    from grader.integrations.container import parse_memory

    if not trial.is_dir():
        raise UsageError(f"--trial {trial}: not a folder")
    try:
        limit = parse_memory(memory) if memory else None
    except ValueError as exc:
        raise UsageError(f"--memory: {exc}") from None
    if cpus is not None and cpus <= 0:
        raise UsageError("--cpus must be above 0 (e.g. 0.5)")
    return limit


def run_trial(bundle: Path, trial: Path, memory: str | None = None,
              cpus: float | None = None) -> int:
    """Run ``bundle`` on the submission folder ``trial`` as Gradescope would; say how it went."""
    from grader.integrations import gradescope
    from grader.integrations.container import run_limited

    limit = _limits(trial, memory, cpus)
    with tempfile.TemporaryDirectory(prefix="capgrade-trial-") as tmp:
        root = Path(tmp) / "autograder"
        script = gradescope.unpack_for_trial(bundle, root)
        shutil.copytree(trial, root / "submission", dirs_exist_ok=True)
        env = {**os.environ, AUTOGRADER_ROOT: str(root), PYTHON: sys.executable}
        if limit or cpus:
            run = run_limited(["bash", str(script)], env, memory=limit, cpus=cpus, cold=True)
        else:
            start = time.monotonic()
            subprocess.run(["bash", str(script)], env=env, check=False)
            run = None
            wall = time.monotonic() - start
        results = json.loads((root / "results" / "results.json").read_text())
        kept = bundle.with_name("trial-results.json")
        shutil.copyfile(root / "results" / "results.json", kept)
    return report(results, trial, kept,
                  f"under {run.describe()}" if run is not None else f"wall {wall:.0f} s, no limits",
                  oom_kills=bool(run is not None and run.oom_kills))


def report(results: dict[str, Any], trial: Path, kept: Path, how: str, oom_kills: bool) -> int:
    """Gradescope's results.json, in a few lines: 1 when the grading machine ran out."""
    from grader.results.render import LIMITS_TEST

    graded = [t for t in results.get("tests", []) if t.get("name") != LIMITS_TEST
              and (t.get("max_score", 0) or "status" in t)]
    regrade = [t["name"] for t in graded if "regrade" in t.get("tags", [])]
    print(f"trial on {trial}: score {results.get('score', 0):g} / "
          f"{sum(t['max_score'] for t in graded):g}; "
          f"{sum(t.get('status') == 'passed' for t in graded)} of {len(graded)} tests passed")
    print(f"  {how}")
    print(f"  Gradescope's results.json: {kept}")
    for t in graded:
        if t.get("status") == "failed":
            reason = next((line for line in t.get("output", "").splitlines() if line.strip()), "")
            print(f"  lost {t['max_score'] - t['score']:g}: {t['name']}: {reason[:160]}")
    if regrade or oom_kills:
        print(f"  the grading machine ran out on {len(regrade)} check(s): "
              f"{', '.join(regrade) or 'the grader itself'}. A correct submission needs more "
              "than these settings: raise them on Gradescope (and here) and try again.")
        return 1
    return 0
