"""docs/adding-a-check.md stays true: its test functions and rubric lines, added to a copy of
the catalogue, are collected as checks with the points the lines give (nothing is graded)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from grader.harness import plugin as plugin_module
from grader.harness.plugin import GradingPlugin, check_id
from grader.harness.request import GradingRequest
from grader.rubric import load_rubric
from tests.conftest import ROOT

DOC = ROOT / "docs" / "adding-a-check.md"
CHECKS = ROOT / "grader" / "checks"


def _blocks(language: str) -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    return [m.group(1) for m in re.finditer(rf"^```{language}\n(.*?)^```", text, re.M | re.S)]


def _catalogue_with_the_example(tmp_path: Path) -> Path:
    """A copy of grader/checks with the doc's functions in test_rnn.py and its lines in
    the rubric's [checks] table."""
    checks = tmp_path / "checks"
    shutil.copytree(CHECKS, checks, ignore=shutil.ignore_patterns("__pycache__"))
    functions, lines = _blocks("python"), _blocks("toml")
    assert len(functions) == len(lines) == 2, "the page shows two checks, each with its line"
    with open(checks / "test_rnn.py", "a", encoding="utf-8") as f:
        f.write("".join(f"\n\n{block}" for block in functions))
    rubric = (checks / "rubric.toml").read_text(encoding="utf-8")
    assert "\n[checks]\n" in rubric
    rubric = rubric.replace("\n[checks]\n", "\n[checks]\n" + "".join(lines), 1)
    (checks / "rubric.toml").write_text(rubric, encoding="utf-8")
    return checks


class _Collected:
    def __init__(self) -> None:
        self.items: list[pytest.Item] = []

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.items = list(session.items)


def _collect(checks: Path) -> dict[str, float]:
    """Check id -> the points the grading plugin gave it, for every check it collected."""
    found = _Collected()
    request = GradingRequest(Path("unused.py"), hidden=True, slow=True, notebook=True)
    code = pytest.main([str(checks), "-c", str(checks / "pytest.ini"), "--rootdir", str(checks),
                        "--collect-only", "-qq", "-p", "no:cacheprovider"],
                       plugins=[GradingPlugin(request, checks / "rubric.toml"), plugin_module,
                                found])
    assert code == pytest.ExitCode.OK, f"collection failed ({code})"
    return {check_id(i): i.get_closest_marker("points").args[0] for i in found.items}


NEW = {"rnn_step_forward_batch_hidden": 1,
       "rnn_step_forward_wide_hidden[float32]": 0.5,
       "rnn_step_forward_wide_hidden[float64]": 0.5}


def test_the_example_is_a_function_and_a_rubric_line_each(tmp_path, capsys):
    checks = _catalogue_with_the_example(tmp_path)
    rubric = load_rubric(checks / "rubric.toml")
    shipped = load_rubric()
    assert {k: rubric[k]["points"] for k in NEW} == NEW
    assert all(rubric[k]["visibility"] == "hidden" for k in NEW)  # from the _hidden suffix
    assert rubric["rnn_step_forward_wide_hidden[float64]"]["requires"] == \
        "rnn_step_forward works in float64 for H larger than D"
    assert {k: v for k, v in rubric.items() if k not in NEW} == shipped  # nothing else moved

    collected = _collect(checks)
    capsys.readouterr()
    assert {k: collected.get(k) for k in NEW} == NEW
    assert set(collected) == set(shipped) | set(NEW)  # every check has its line, and only those
