"""Shared fixtures: the reference module, loaded from its file path."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import pytest

from grader.worker.loader import load_module

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "reference" / "rnn_lstm_captioning.py"
STUB = ROOT / "student" / "rnn_lstm_captioning.py"


@pytest.fixture(scope="session")
def ref() -> ModuleType:
    """The reference solution; CAPGRADE_REFERENCE points at a mutated copy for mutation runs."""
    path = Path(os.environ.get("CAPGRADE_REFERENCE", REFERENCE))
    return load_module(path, "capgrade_reference_under_test")


#: Test modules that grade whole submissions in sandboxed workers: minutes each.
SLOW_MODULES = {"test_alt_style", "test_batch", "test_bug_variants", "test_forkserver",
                "test_gradescope",
                "test_hostile", "test_notebook", "test_overfit", "test_real_grades",
                "test_release", "test_student_styles", "test_warm"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the slow modules, so `pytest -m "not slow"` runs the fast subset."""
    for item in items:
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
