"""Shared fixtures: the reference module, loaded from its file path."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import pytest

from grader.loader import load_module

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "reference" / "rnn_lstm_captioning.py"
STUB = ROOT / "student" / "rnn_lstm_captioning.py"


@pytest.fixture(scope="session")
def ref() -> ModuleType:
    """The reference solution; CAPGRADE_REFERENCE points at a mutated copy for mutation runs."""
    path = Path(os.environ.get("CAPGRADE_REFERENCE", REFERENCE))
    return load_module(path, "capgrade_reference_under_test")
