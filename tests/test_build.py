"""`capgrade build [--check]`: every committed generated file, regenerated or verified.

Only the cheap targets (the stub, the notebook, the misconceptions table): the
expected values take minutes to record and are checked by tests/test_engine.py.
Nothing here writes into the checkout: stale files are made in a copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from grader.authoring import build
from grader.cli import main

ROOT = Path(__file__).resolve().parent.parent
CHEAP = ["--only", "stub", "--only", "notebook", "--only", "misconceptions"]
FILES = [build.REFERENCE, build.STUB, build.MISCONCEPTIONS_DOC,
         Path("notebooks") / "rnn_lstm_captioning.ipynb"]


@pytest.fixture
def copy(tmp_path, monkeypatch) -> Path:
    """The generated files and what they are made from, in a folder of their own (the cwd)."""
    for name in FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_committed_tree_is_fresh(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert main(["build", "--check", *CHEAP]) == 0
    said = capsys.readouterr()
    for name in ("stub", "notebook", "misconceptions"):
        assert f"fresh: {name}: " in said.out
    assert said.err == ""


@pytest.mark.parametrize("changed, target", [
    (build.STUB, "stub"),
    (Path("notebooks") / "rnn_lstm_captioning.ipynb", "notebook"),
    (build.MISCONCEPTIONS_DOC, "misconceptions"),
])
def test_a_changed_file_is_reported_stale_and_left_alone(copy, capsys, changed, target):
    path = copy / changed
    text = path.read_text(encoding="utf-8")
    edited = {"stub": text.replace("TODO", "TO DO", 1),
              "notebook": text.replace("# Image captioning", "# Image captions", 1),
              "misconceptions": text.replace("| `rnn_step_forward` |",
                                             "| `rnn_step_forwards` |", 1)}[target]
    assert edited != text
    path.write_text(edited, encoding="utf-8")
    before = {name: (copy / name).read_bytes() for name in FILES}
    assert main(["build", "--check", *CHEAP]) == 1
    said = capsys.readouterr()
    assert f"stale: {target} " in said.err and str(changed) in said.err
    assert "1 of 3 generated file(s) stale: run `capgrade build" in said.err
    assert {name: (copy / name).read_bytes() for name in FILES} == before  # --check wrote nothing
    assert main(["build", *CHEAP]) == 0  # and build puts it right
    assert f"wrote {changed}" in capsys.readouterr().out
    assert main(["build", "--check", *CHEAP]) == 0


def test_the_table_is_replaced_in_place():
    doc = "intro\n" + build.TABLE_MARKER + " -->\n| old |\n|---|\n| row |\n\nafter\n"
    assert build.with_table(doc, "| new |\n") == \
        "intro\n" + build.TABLE_MARKER + " -->\n| new |\n\nafter\n"


def test_build_stub_stays_an_alias_with_its_messages(copy, capsys):
    assert main(["build-stub", "--check"]) == 0
    assert "is in sync with" in capsys.readouterr().out
    assert main(["build", "--check", "--reference", "nope.py", "--only", "stub"]) == 2
    assert "capgrade build-stub: reference not found: nope.py" in capsys.readouterr().err
