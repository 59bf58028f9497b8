"""The scrubbed environment: the only variables student code sees, and the sandbox's id in it."""

from __future__ import annotations

from pathlib import Path

from grader.sandbox.host import PACKAGE_ROOT, torch_home
from grader.settings import SETTINGS, WORKER_THREADS

SANDBOX_ID_VAR = "CAPGRADE_SANDBOX_ID"


def scrubbed_environment(home: str | Path, **extra: str) -> dict[str, str]:
    """The only variables student code sees; ``home`` is its cwd, HOME and TMPDIR."""
    threads = SETTINGS.worker_threads
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "TMPDIR": str(home),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(PACKAGE_ROOT),
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        # One thread by default: workers run side by side in batch grading, and the
        # grader's re-run of a notebook's training must use the notebook's count.
        "OMP_NUM_THREADS": threads,
        WORKER_THREADS: threads,
        # Where the grader's encoder looks for already-downloaded weights.
        "TORCH_HOME": str(torch_home()),
    }
    env.update(extra)
    return env

