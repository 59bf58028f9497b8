"""The notebook's hand-in helpers: ``export()`` zips exactly the handout's files, vetted;
``check_all()`` runs every public check; ``capgrade --version``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import grader
from grader.batch.submissions import discover
from grader.contract import LOSS_FILE, MODULE_FILE, NOTEBOOK_FILE
from grader.notebook import handin
from tests.conftest import REFERENCE, ROOT, STUB

NOTEBOOK = ROOT / "notebooks" / NOTEBOOK_FILE
EXPECTED = [MODULE_FILE, NOTEBOOK_FILE, LOSS_FILE]


def _losses(final: float, length: int = 2340) -> list[float]:
    """A falling curve from 30 to ``final``: what the course's full training hands in."""
    t = torch.linspace(0, 1, length)
    return (final + (30 - final) * torch.exp(-8 * t)).tolist()


def _good(folder: Path) -> Path:
    """A hand-in that passes every rule: the reference, the notebook, a course-sized loss file."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(REFERENCE, folder / MODULE_FILE)
    torch.save({"rnn_losses": _losses(1.5), "lstm_losses": _losses(1.2),
                "attn_losses": _losses(0.3)}, folder / LOSS_FILE)
    shutil.copy(NOTEBOOK, folder / NOTEBOOK_FILE)  # saved after the losses, as in a real run
    later = (folder / LOSS_FILE).stat().st_mtime + 10
    os.utime(folder / NOTEBOOK_FILE, (later, later))
    return folder


def _zips(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.zip"))


@pytest.fixture
def in_process_reader(monkeypatch):
    """The loss-file parser the sandboxed worker runs, run here: no worker start (seconds).

    For tests about everything else; the good hand-in and "not from torch.save"
    go through the real sandboxed reader.
    """
    from grader.harness import client
    from grader.worker.lossfile_reader import load_loss_file

    monkeypatch.setattr(client, "read_loss_file",
                        lambda path, max_bytes, *secrets: load_loss_file(path, max_bytes))


def test_a_good_hand_in_zips_exactly_the_handout_files(tmp_path, capsys):
    folder = _good(tmp_path / "work")
    path = grader.export(folder)
    out = capsys.readouterr().out
    assert path is not None and path.parent == folder and _zips(folder) == [path]
    assert path.name.startswith("rnn_lstm_captioning_submission_") and path.suffix == ".zip"
    assert str(path.resolve()) in out and "error" not in out and "warning" not in out
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == EXPECTED
        for name in EXPECTED:
            assert zf.read(name) == (folder / name).read_bytes(), name
    assert not list(folder.glob(".*.part"))  # the temporary file was renamed, not left
    # Batch grading (and so Gradescope's find_file) finds all three in the zip.
    classroom = tmp_path / "class"
    classroom.mkdir()
    shutil.copy(path, classroom / "ann.zip")
    (entry,) = discover(classroom, tmp_path / "scratch")
    assert entry.problem is None and entry.student == "ann"
    assert [Path(p).name for p in (entry.module, entry.notebook, entry.loss_file)] == EXPECTED


def test_out_names_the_zip_or_its_folder_and_exports_never_overwrite(tmp_path,
                                                                     in_process_reader):
    folder = _good(tmp_path / "work")
    named = grader.export(folder, out=tmp_path / "mine.zip")
    assert named == tmp_path / "mine.zip" and zipfile.ZipFile(named).namelist() == EXPECTED
    first = grader.export(folder, out=tmp_path / "zips")
    second = grader.export(folder, out=tmp_path / "zips")
    assert first != second and _zips(tmp_path / "zips") == sorted([first, second])


def _break(folder: Path, what: str) -> None:
    if what == "missing module":
        (folder / MODULE_FILE).unlink()
    elif what == "unchanged stub":
        shutil.copy(STUB, folder / MODULE_FILE)
    elif what == "syntax error":
        with open(folder / MODULE_FILE, "a") as f:
            f.write("\ndef broken(:\n    pass\n")
    elif what == "missing loss file":
        (folder / LOSS_FILE).unlink()
    elif what == "truncated loss file":
        data = (folder / LOSS_FILE).read_bytes()
        (folder / LOSS_FILE).write_bytes(data[: len(data) // 2])
    elif what == "loss file not from torch.save":
        (folder / LOSS_FILE).write_bytes(b"rnn_losses = [3.0, 2.0]\n")
    elif what == "malformed notebook":
        (folder / NOTEBOOK_FILE).write_text('{"cells": [', encoding="utf-8")
    elif what == "not a notebook":
        (folder / NOTEBOOK_FILE).write_text('{"cells": 3}', encoding="utf-8")
    elif what == "missing notebook":
        (folder / NOTEBOOK_FILE).unlink()


BROKEN = {  # what is broken -> the file named and words of the message
    "missing module": (MODULE_FILE, "not found"),
    "unchanged stub": (MODULE_FILE, "unmodified stub"),
    "syntax error": (MODULE_FILE, "syntax error on line"),
    "missing loss file": (LOSS_FILE, "not found"),
    "truncated loss file": (LOSS_FILE, "truncated or corrupt"),
    "loss file not from torch.save": (LOSS_FILE, "could not be read as a torch.save file"),
    "malformed notebook": (NOTEBOOK_FILE, "not valid notebook JSON"),
    "not a notebook": (NOTEBOOK_FILE, "not a valid Jupyter notebook"),
    "missing notebook": (NOTEBOOK_FILE, "not found"),
}


@pytest.mark.parametrize("what", list(BROKEN))
def test_a_broken_hand_in_is_named_and_not_zipped_unless_forced(tmp_path, capsys, what,
                                                                 request):
    if what != "loss file not from torch.save":
        request.getfixturevalue("in_process_reader")
    folder = _good(tmp_path)
    _break(folder, what)
    assert grader.export(folder) is None
    out = capsys.readouterr().out
    name, words = BROKEN[what]
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"error: {name}: " in errors[0] and words in errors[0], out
    assert "No zip written" in out and "force=True" in out
    assert _zips(folder) == []

    path = grader.export(folder, force=True)
    out = capsys.readouterr().out
    assert path is not None and words in out and "force=True" in out
    present = [n for n in EXPECTED if (folder / n).is_file()]
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == present
        assert all(zf.read(n) == (folder / n).read_bytes() for n in present)


def test_stub_todos_are_those_of_the_generated_stub():
    assert set(handin.stub_todos(STUB.read_text())) == handin.STUB_TODOS
    assert handin.stub_todos(REFERENCE.read_text()) == []


def test_a_partly_done_module_and_losses_from_older_code_only_warn(tmp_path, capsys,
                                                                   in_process_reader):
    folder = _good(tmp_path)
    source = (folder / MODULE_FILE).read_text()
    (folder / MODULE_FILE).write_text(
        source + '\n\ndef rnn_forward(*args):\n'
                 '    raise NotImplementedError("[capgrade stub] TODO: rnn_forward")\n')
    later = (folder / LOSS_FILE).stat().st_mtime + 60
    os.utime(folder / MODULE_FILE, (later, later))
    path = grader.export(folder)
    out = capsys.readouterr().out
    assert path is not None and "error:" not in out
    assert f"warning: {MODULE_FILE}: 1 TODO(s) not filled in yet" in out and "rnn_forward" in out
    assert f"changed after {LOSS_FILE} was written" in out


def test_short_loss_histories_warn_what_the_grader_will_say(tmp_path, capsys,
                                                            in_process_reader):
    folder = _good(tmp_path)
    torch.save({k: [3.0, 2.0, 1.0] for k in ("rnn_losses", "lstm_losses", "attn_losses")},
               folder / LOSS_FILE)
    assert grader.export(folder, force=False) is not None
    out = capsys.readouterr().out
    assert "expected 2340 losses" in out and "error:" not in out
    assert f"warning: {NOTEBOOK_FILE}: was last saved before {LOSS_FILE}" not in out


def test_a_reader_that_cannot_start_only_warns(tmp_path, capsys, monkeypatch):
    from grader.harness import client
    from grader.harness.outcome import WorkerFailure

    def fail(*args):
        raise WorkerFailure("timed out after 60 s")

    monkeypatch.setattr(client, "read_loss_file", fail)
    assert grader.export(_good(tmp_path)) is not None
    out = capsys.readouterr().out
    assert f"warning: {LOSS_FILE}: could not be checked here" in out and "error:" not in out


def test_grading_mode_exports_nothing(tmp_path, capsys, monkeypatch):
    folder = _good(tmp_path)
    assert grader.export(folder, grading=True) is None
    monkeypatch.setattr(sys.modules["__main__"], "GRADING_MODE", True, raising=False)
    assert grader.export(folder) is None
    assert capsys.readouterr().out.count("grading mode: nothing to export") == 2
    assert _zips(folder) == []


@pytest.mark.slow
def test_check_all_runs_every_public_check_and_totals_them(tmp_path, capsys):
    result = grader.check_all(str(REFERENCE))
    out = capsys.readouterr().out
    assert result.status == "graded" and result.all_passed
    ran = [c for c in result.checks if c.status != "skipped"]
    assert len(ran) >= 17 and all(c.visibility == "public" for c in ran)
    assert f"All {len(ran)} public checks passed ({result.score:g} / {result.max_score:g}" in out


def test_capgrade_version():
    capgrade = Path(sys.executable).parent / "capgrade"
    done = subprocess.run([str(capgrade), "--version"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"capgrade {grader.__version__} (torch ")
