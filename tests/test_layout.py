"""The trust boundary, as the tree draws it: who may import whom, and no torch on the trusted side.

``grader/worker`` is everything that runs inside the sandbox beside student code;
``grader/harness`` judges and must never load it (nor torch, nor pickle), and
the worker must never load the harness, batch grading or the authoring tools.
Imports are read from the source (module level and inside functions), and
followed transitively through every other grader module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REFERENCE

GRADER = Path(__file__).resolve().parent.parent / "grader"


def _module_name(path: Path) -> str:
    parts = path.relative_to(GRADER.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """grader module -> the grader modules it imports anywhere in its source."""
    modules = {_module_name(p): p for p in GRADER.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            found.update(t for t in targets if t in modules and t != "grader")
        graph[name] = found
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def _inside(module: str, package: str) -> bool:
    return module == f"grader.{package}" or module.startswith(f"grader.{package}.")


@pytest.mark.parametrize(("side", "forbidden"), [
    ("harness", ("worker",)),
    ("worker", ("harness", "batch", "authoring", "integrations", "cli")),
])
def test_the_boundary_holds(side, forbidden):
    graph = import_graph()
    crossings = [f"{m} -> {r}" for m in sorted(graph) if _inside(m, side)
                 for r in sorted(reachable(graph, m)) if any(_inside(r, f) for f in forbidden)]
    assert crossings == [], "\n".join(crossings)


def test_every_subpackage_says_which_side_it_is_on():
    for init in sorted(GRADER.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert doc, f"{init.parent.name}/ has no docstring saying what it holds and which side"


def test_the_graph_sees_real_imports():
    """The analysis itself: known edges are found, so an empty crossing list means something."""
    graph = import_graph()
    assert "grader.worker.probes" in reachable(graph, "grader.worker.process")
    assert "grader.harness.client" in reachable(graph, "grader.harness.engine")
    assert "grader.sandbox" in reachable(graph, "grader.harness.client")


HARNESS_RUN = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from grader.harness.engine import grade
    from grader.harness.request import GradingRequest
    result = grade(GradingRequest(submission=Path(sys.argv[1]), hidden=True, slow=True,
                                  only=sys.argv[2], loss_file=Path(sys.argv[3])))
    heavy = sorted(m for m in ("torch", "torchvision") if m in sys.modules)
    print(json.dumps({"statuses": {c.id: c.status for c in result.checks}, "heavy": heavy,
                      "run": result.status}))
""")


@pytest.mark.slow
def test_grading_never_imports_torch_in_the_harness(tmp_path):
    """Public, hidden, an overfit training and the loss file: torch stays in the worker."""
    import json

    import torch

    losses = {k: [3.0 - i * 0.001 for i in range(2340)]
              for k in ("rnn_losses", "lstm_losses", "attn_losses")}
    loss_file = tmp_path / "rnn_lstm_attention_submission.pt"
    torch.save(losses, loss_file)
    only = "rnn or embedding or captioning_loss or sample or overfit and rnn or submission_file"
    done = subprocess.run([sys.executable, "-c", HARNESS_RUN, str(REFERENCE), only,
                           str(loss_file)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["run"] == "graded"
    statuses = report["statuses"]
    assert statuses["overfit[rnn]"] == "passed" and statuses["sample_hidden[attn]"] == "passed"
    assert statuses["submission_file_format"] == "passed"
    assert statuses["submission_file_losses"] == "failed"  # 2.9 is above the course's bounds
    assert "torch" not in report["heavy"] and "torchvision" not in report["heavy"]
