"""The grader's settings: every ``CAPGRADE_*`` knob is read here, and nowhere else.

They are read when asked, not at import: the CLI, batch grading and tests change
them while the process runs. Process-wide things that must be one per process
(the fork server, the sandboxes it started, the cgroup counters it saw, a batch
pool process's worker supply) hang from the same object (``SETTINGS.one``), so
that a reader finds every piece of such state in one place; nothing else in
``grader/`` keeps state at module level (``tests/test_layout.py`` checks).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: Variables the grader only writes, for the processes it starts (never a knob).
AUTOGRADER_ROOT = "CAPGRADE_AUTOGRADER_ROOT"
PYTHON = "CAPGRADE_PYTHON"
NAMESPACES = "CAPGRADE_SANDBOX_NAMESPACES"
PARALLEL_TRAININGS = "CAPGRADE_PARALLEL_TRAININGS"
WORKER_THREADS = "CAPGRADE_WORKER_THREADS"


def _on(name: str) -> bool:
    """A switch, on unless set to 0."""
    return os.environ.get(name, "1") != "0"


def _int(name: str, default: int) -> int:
    try:
        return int(float(os.environ.get(name, default)))
    except ValueError:
        return default


class Settings:
    """The knobs (properties, read from the environment each time) and the process's holders."""

    def __init__(self) -> None:
        self._held: dict[type, Any] = {}
        self._lock = threading.RLock()

    # -- the environment ------------------------------------------------------------

    @property
    def forkserver(self) -> bool:
        """Workers fork from one server (``CAPGRADE_FORKSERVER=0``: each a new Python)."""
        return _on("CAPGRADE_FORKSERVER")

    @property
    def sandbox_cgroup(self) -> bool:
        """A memory cgroup per sandbox where the host gives one (``CAPGRADE_SANDBOX_CGROUP``)."""
        return _on("CAPGRADE_SANDBOX_CGROUP")

    @property
    def sandbox_namespaces(self) -> bool:
        """Namespaces where the host allows them (``CAPGRADE_SANDBOX_NAMESPACES``)."""
        return _on(NAMESPACES)

    @property
    def sandbox_home_quota(self) -> bool:
        """A size-capped tmpfs home where it can be mounted (``CAPGRADE_SANDBOX_HOME_QUOTA``)."""
        return _on("CAPGRADE_SANDBOX_HOME_QUOTA")

    @property
    def sandbox_user(self) -> str | None:
        """Who sandboxes run as under root: None unset, "" none (``CAPGRADE_SANDBOX_USER``)."""
        return os.environ.get("CAPGRADE_SANDBOX_USER")

    def sandbox_memory(self, default: int) -> int:
        return _int("CAPGRADE_SANDBOX_MEMORY", default)

    def sandbox_cpu(self, default: int) -> int:
        return _int("CAPGRADE_SANDBOX_CPU", default)

    def sandbox_tmp_size(self, default: int) -> int:
        return _int("CAPGRADE_SANDBOX_TMP_SIZE", default)

    def sandbox_home_size(self, default: int) -> int:
        return _int("CAPGRADE_SANDBOX_HOME_SIZE", default)

    @property
    def parallel_trainings(self) -> int | None:
        """Overfit trainings side by side, when set (``CAPGRADE_PARALLEL_TRAININGS``)."""
        value = os.environ.get(PARALLEL_TRAININGS)
        try:
            return max(1, int(value)) if value else None
        except ValueError:
            return None

    @property
    def worker_threads(self) -> str:
        """Torch threads per worker (``CAPGRADE_WORKER_THREADS``; 1 unless set)."""
        return os.environ.get(WORKER_THREADS, "1")

    @property
    def coco(self) -> str | None:
        """The course's coco.pt (``CAPGRADE_COCO``), else the synthetic set is used."""
        return os.environ.get("CAPGRADE_COCO") or None

    @property
    def cache(self) -> str | None:
        """Where generated data is cached (``CAPGRADE_CACHE``), else the user's cache folder."""
        return os.environ.get("CAPGRADE_CACHE") or None

    # -- what there is one of per process ---------------------------------------------

    def one(self, kind: Callable[[], T]) -> T:
        """This process's one ``kind()``, made on first use (a fork inherits its parent's)."""
        with self._lock:
            if kind not in self._held:
                self._held[kind] = kind()  # type: ignore[index]
            return self._held[kind]  # type: ignore[index]


#: The one settings object.
SETTINGS = Settings()
