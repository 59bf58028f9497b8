"""Throughput, per-submission overhead and peak memory of `capgrade grade` (a benchmark).

Grades 20 distinct copies of the reference (public + hidden checks) with 1
and with 2 workers, by the real command line in a subprocess, and samples the
resident memory of the pool processes and of the sandboxed check workers
every 0.2 s. The overhead is measured on the stub, whose functions raise at
once, so all that is left is the grader's own cost:

- per submission in a grading process, cold (a worker started for it: Python,
  torch, sandbox) and warm (``WorkerSupply.keep_warm``: the worker was started
  while the previous submission was graded): pytest, the import, messages;
- the whole `capgrade grade` of 20 stub copies with 1 worker, where nothing
  hides the warm-up (the next worker's start) behind student compute.

`capgrade grade` warms workers by default only when fewer workers than cores
(`--warm auto`): here 1 worker is warm and 2 workers on 2 cores are cold.

    .venv/bin/python scripts/bench.py batch
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COUNT = 20


def make_class(folder: Path, source: Path) -> Path:
    for i in range(COUNT):
        (folder / f"s{i:02d}").mkdir(parents=True)
        text = source.read_text() + f"\n# submission {i}\n"  # distinct: no reuse of results
        (folder / f"s{i:02d}" / "rnn_lstm_captioning.py").write_text(text)
    return folder


def _rss_kib(pid: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemorySampler(threading.Thread):
    """Peak RSS of pool processes and of sandboxed check workers, sampled from /proc."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.pool_peak = self.worker_peak = 0

    def run(self) -> None:
        while not self.stop.is_set():
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"multiprocessing.spawn" in cmd:
                    self.pool_peak = max(self.pool_peak, _rss_kib(pid))
                elif b"grader.worker.process" in cmd and b"sandbox_launch" not in cmd:
                    self.worker_peak = max(self.worker_peak, _rss_kib(pid))
            time.sleep(0.2)


def grade(submissions: Path, out: Path, workers: int) -> tuple[float, MemorySampler]:
    sampler = MemorySampler()
    sampler.start()
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "grader.cli", "grade", str(submissions), "-o",
                           str(out), "--workers", str(workers), "--no-slow", "--no-notebook",
                           "--quiet"], cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    if done.returncode != 0:
        sys.exit(f"capgrade grade failed:\n{done.stdout}{done.stderr}")
    return elapsed, sampler


def overhead_in_process(stub: Path, repeat: int = 8) -> tuple[float, float]:
    """Mean seconds to grade the stub (public + hidden) with a cold and with a warm worker."""
    from grader.batch.grading import DEFAULT_OPTIONS, hidden_path
    from grader.harness import client as harness
    from grader.harness.engine import run_checks
    from grader.harness.workers import WorkerSupply

    only = None  # public + hidden, no slow checks
    run_checks(stub, hidden=True, only=only)  # imports, caches: not measured
    times: dict[bool, list[float]] = {False: [], True: []}
    supply = WorkerSupply()
    for warm in (False, True):
        supply.keep_warm = warm
        if warm:
            supply.prepare(False, harness.grading_secrets(hidden_path(DEFAULT_OPTIONS)))
        for _ in range(repeat):
            time.sleep(6.0 if warm else 0.5)  # the warm worker's start, not measured
            start = time.perf_counter()
            run_checks(stub, supply, hidden=True, only=only)
            times[warm].append(time.perf_counter() - start)
    supply.close()
    return sum(times[False]) / repeat, sum(times[True]) / repeat


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="scripts/bench.py batch", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter
                            ).parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="capgrade-bench-"))
    try:
        reference = make_class(work / "reference", ROOT / "reference" / "rnn_lstm_captioning.py")
        stub = make_class(work / "stub", ROOT / "student" / "rnn_lstm_captioning.py")
        for workers in (1, 2):
            elapsed, mem = grade(reference, work / f"out-ref-{workers}", workers)
            print(f"{COUNT} reference submissions, {workers} worker(s): {elapsed:.1f} s, "
                  f"{COUNT / elapsed * 60:.1f} per minute; peak RSS: pool process "
                  f"{mem.pool_peak / 1024:.0f} MiB, sandboxed check worker "
                  f"{mem.worker_peak / 1024:.0f} MiB")
        cold, warm = overhead_in_process(stub / "s00" / "rnn_lstm_captioning.py")
        print(f"stub in a grading process: cold worker {cold:.2f} s, warm worker {warm:.2f} s "
              "per submission")
        elapsed, _ = grade(stub, work / "out-stub-1", 1)
        print(f"{COUNT} stub submissions (no student compute), 1 worker: {elapsed:.1f} s, "
              f"overhead {elapsed / COUNT:.2f} s per submission")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
