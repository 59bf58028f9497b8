"""Shared fixtures: the reference module, loaded from its file path."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import pytest

from grader.worker.loader import load_module
from tests.corpus import Corpus

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "reference" / "rnn_lstm_captioning.py"
STUB = ROOT / "student" / "rnn_lstm_captioning.py"


@pytest.fixture(scope="session")
def ref() -> ModuleType:
    """The reference solution; CAPGRADE_REFERENCE points at a mutated copy for mutation runs."""
    path = Path(os.environ.get("CAPGRADE_REFERENCE", REFERENCE))
    return load_module(path, "capgrade_reference_under_test")


CORPUS: pytest.StashKey[Corpus] = pytest.StashKey()
LAST_CORPUS_TEST: pytest.StashKey[str | None] = pytest.StashKey()


def _declares(item: pytest.Item) -> bool:
    """A test that reads the corpus, in a module that says what it will read."""
    return (item.module is not None and hasattr(item.module, "corpus_jobs")
            and "corpus" in getattr(item, "fixturenames", ()))


def _phase(item: pytest.Item) -> int:
    """0: runs beside the corpus's pool; 1: reads the corpus; 2: needs the machine to itself."""
    if _declares(item):
        return 1
    return 2 if item.get_closest_marker("alone") else 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """While the corpus's gradings fill both cores, the tests that do not mind company run
    (this process would only wait otherwise); then the corpus's readers, whose gradings are
    mostly done by then; then, the pool gone, the tests marked ``alone``."""
    items.sort(key=_phase)  # stable: each phase keeps the files' order


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start every grading the selected tests will read (see tests/corpus.py)."""
    corpus = session.config.stash[CORPUS] = Corpus()
    readers = [i for i in session.items if _declares(i)]
    session.config.stash[LAST_CORPUS_TEST] = readers[-1].nodeid if readers else None
    if session.config.option.collectonly:
        return
    by_module: dict[ModuleType, list[pytest.Item]] = {}
    for item in readers:
        by_module.setdefault(item.module, []).append(item)
    corpus.submit(job for module, items in by_module.items() for job in module.corpus_jobs(items))


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """After the corpus's last reader, the pool goes: later tests have the CPUs to themselves."""
    if item.nodeid == item.config.stash.get(LAST_CORPUS_TEST, None):
        item.config.stash[CORPUS].close()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if CORPUS in session.config.stash:
        session.config.stash[CORPUS].remove()


@pytest.fixture(scope="session")
def corpus(request: pytest.FixtureRequest) -> Corpus:
    """The session's gradings of whole submissions, each graded once."""
    return request.config.stash[CORPUS]
