"""The limits every process running student code starts under (worker and notebook kernel).

One place for them, so the check worker and the notebook kernel are confined
alike: a scrubbed environment (no secrets, no proxies, no site paths), a fresh
temp dir as cwd and HOME, their own session, and the whole process group
killed at the end.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

#: The layers ``scrubbed_environment`` + ``start_new_session`` + ``kill_group`` give.
BASE_LAYERS = ["separate process", "own session", "scrubbed environment",
               "fresh temp dir as cwd and HOME"]


def scrubbed_environment(home: str | Path, **extra: str) -> dict[str, str]:
    """The only variables student code sees; ``home`` is its cwd, HOME and TMPDIR."""
    import torch

    package_root = str(Path(__file__).resolve().parent.parent)
    threads = os.environ.get("CAPGRADE_WORKER_THREADS", "1")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "TMPDIR": str(home),
        "LANG": "C.UTF-8",
        "PYTHONPATH": package_root,
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        # One thread by default: workers run side by side in batch grading, and
        # the grader's re-runs of a notebook's training use the same count.
        "OMP_NUM_THREADS": threads,
        "CAPGRADE_WORKER_THREADS": threads,
        # Where the grader's encoder looks for already-downloaded weights.
        "TORCH_HOME": str(Path(torch.hub.get_dir()).parent),
    }
    env.update(extra)
    return env


def kill_group(pid: int | None) -> None:
    """SIGKILL the process group led by ``pid`` (started with start_new_session)."""
    if pid is None:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
