"""Old vs new, alternately: `capgrade check` wall time and memory (a benchmark, not a test).

For each checkout given (each with its own ``.venv``), runs ``capgrade check
reference/rnn_lstm_captioning.py`` (public checks, JSON) in turn, ``--repeat``
rounds, and reports per checkout the median of:

- wall time of the command;
- peak resident memory of the harness process itself (``ru_maxrss`` of the
  process running the CLI, read in-process at exit);
- peak memory of the whole grading process tree (a cgroup v1 memory group
  holding the command and every process it starts: ``memory.max_usage_in_bytes``,
  page cache included; needs root and cgroup v1, else left out).

    python scripts/bench.py boundary OLD_CHECKOUT NEW_CHECKOUT [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup/memory")
# Runs the CLI in-process, then prints the harness's own peak RSS (KiB on Linux).
WRAPPER = ("import resource, sys\n"
           "from grader.cli import main\n"
           "try:\n    code = main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
           "print('CAPGRADE_MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
           " 'torch' in sys.modules, file=sys.stderr)\n")


def one_run(checkout: Path) -> dict[str, float]:
    group = CGROUP / f"capgrade-bench-{uuid.uuid4().hex[:8]}"
    use_cgroup = CGROUP.is_dir() and os.geteuid() == 0
    command = [str(checkout / ".venv" / "bin" / "python"), "-c", WRAPPER, "check",
               "reference/rnn_lstm_captioning.py", "--format", "json"]
    if use_cgroup:
        group.mkdir()
        command = ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh", *command]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=checkout, capture_output=True, text=True)
    wall = time.perf_counter() - start
    try:
        if done.returncode != 0 or json.loads(done.stdout)["status"] != "graded":
            raise SystemExit(f"{checkout}: capgrade check failed:\n{done.stderr[-2000:]}")
        line = [x for x in done.stderr.splitlines() if x.startswith("CAPGRADE_MAXRSS")][-1]
        _, maxrss, torch_loaded = line.split()
        out = {"wall_s": wall, "harness_peak_mib": int(maxrss) / 1024,
               "torch_in_harness": torch_loaded == "True"}
        if use_cgroup:
            out["tree_peak_mib"] = int((group / "memory.max_usage_in_bytes").read_text()) / 2**20
        return out
    finally:
        if use_cgroup:
            for _ in range(50):  # the sandbox's last processes may still be exiting
                try:
                    group.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench.py boundary", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkouts", type=Path, nargs="+")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    runs: dict[Path, list[dict]] = {c: [] for c in args.checkouts}
    for checkout in args.checkouts:
        one_run(checkout.resolve())  # warm the page cache and byte-code, not measured
    for _ in range(args.repeat):
        for checkout in args.checkouts:  # alternate: drift hits every checkout alike
            runs[checkout].append(one_run(checkout.resolve()))
    print(f"capgrade check reference (public checks), median of {args.repeat} alternating runs")
    print(f"{'checkout':<24} {'wall s':>7} {'harness MiB':>12} {'tree MiB':>9}  torch in harness")
    for checkout, results in runs.items():
        def med(key: str, results: list[dict] = results) -> str:
            values = [r[key] for r in results if key in r]
            return f"{statistics.median(values):.1f}" if values else "-"
        print(f"{checkout!s:<24} {med('wall_s'):>7} {med('harness_peak_mib'):>12} "
              f"{med('tree_peak_mib'):>9}  {any(r['torch_in_harness'] for r in results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
