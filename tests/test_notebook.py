"""The student notebook, the sandboxed notebook runner and the notebook checks."""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path

import nbformat
import pytest
import torch

from grader.course import lossfile
from grader.harness.engine import run_checks
from grader.notebook import runner as notebook_runner
from grader.notebook import support as ns
from grader.results import SubmissionResult
from grader.worker.lossfile_reader import load_loss_file
from tests.conftest import REFERENCE
from tests.corpus import Call

pytestmark = pytest.mark.slow  # grades whole submissions in sandboxed workers

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "rnn_lstm_captioning.ipynb"
NOTEBOOK_CHECKS = ["notebook_executes", "notebook_losses_reproduce", "notebook_writes_losses"]


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _write(path: Path, *sources: str, parameters: str | None = "GRADING_MODE = False") -> Path:
    cells = []
    if parameters is not None:
        cells.append(nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    return path


def _statuses(report: notebook_runner.NotebookReport) -> list[str]:
    return [c.status for c in report.cells]


# -- the stored notebook --------------------------------------------------------------------


def test_stored_notebook_is_valid_and_holds_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 15
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "GRADING_MODE = False" in tagged[0].source
    text = "\n".join(c.source for c in code)
    for needed in ("check(", "train_captioner", "captioned_images", "attention_figure",
                   "rnn_lstm_attention_submission.pt", "sample("):
        assert needed in text


def test_stored_notebook_is_what_its_script_writes():
    spec = importlib.util.spec_from_file_location("write_notebook",
                                                  ROOT / "scripts" / "write_notebook.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.sources(nbformat.read(NOTEBOOK, as_version=4)) == script.sources(script.build())


def test_prepare_drops_stored_outputs_and_injects_after_the_parameters_cell(tmp_path):
    nb = nbformat.read(_write(tmp_path / "n.ipynb", "print(1)"), as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="all passed")]
    nb.cells[1].execution_count = 7
    nb = notebook_runner.prepare(nb, {"GRADING_MODE": True, "DATA_PATH": None})
    assert [c.metadata.get("tags", []) for c in nb.cells] == [["parameters"],
                                                              ["injected-parameters"], []]
    assert "GRADING_MODE = True\nDATA_PATH = None" in nb.cells[1].source
    assert nb.cells[2].outputs == [] and nb.cells[2].execution_count is None


def test_grading_mode_is_small_and_the_course_mode_is_the_course():
    assert ns.COURSE.train_iterations == 2340
    assert ns.GRADING.train_iterations == 32 and ns.GRADING.device == "cpu"
    assert ns.settings(True, "cuda").device == "cpu"
    data = {"train_images": torch.arange(10), "train_captions": torch.arange(10)}
    a, _ = ns.training_subset(data, ns.GRADING)
    b, _ = ns.training_subset(data, ns.GRADING)
    assert torch.equal(a, b) and len(a) == ns.GRADING.train_samples


# -- the reference, end to end --------------------------------------------------------------


def reference_notebook_run(folder: Path) -> tuple[dict, float]:
    """In the corpus's pool: the reference and the course notebook, graded in grading mode."""
    shutil.copy(REFERENCE, folder / "rnn_lstm_captioning.py")
    shutil.copy(NOTEBOOK, folder / NOTEBOOK.name)
    start = time.monotonic()
    result = run_checks(folder / "rnn_lstm_captioning.py", only="notebook",
                        notebook_out=folder / "notebook-out")
    return result.to_dict(), time.monotonic() - start


REFERENCE_RUN = Call("tests.test_notebook:reference_notebook_run")


def corpus_jobs(items: list[pytest.Item]) -> list[Call]:
    return [REFERENCE_RUN] if any("reference_run" in i.fixturenames for i in items) else []


@pytest.fixture(scope="module")
def reference_run(corpus):
    result, seconds = corpus.result(REFERENCE_RUN)
    return (SubmissionResult.from_dict(result), corpus.folder(REFERENCE_RUN) / "notebook-out",
            seconds)


def test_reference_notebook_runs_end_to_end_in_grading_mode(reference_run):
    result, out, _ = reference_run
    checks = {c.id: c for c in result.checks}
    assert sorted(checks) == NOTEBOOK_CHECKS
    assert all(c.status == "passed" for c in checks.values()), \
        {c.id: c.message for c in result.checks}
    report = json.loads((out / "notebook_report.json").read_text())
    assert report["status"] == "executed" and report["parameters"] == {"GRADING_MODE": True}
    assert report["cells"] and all(c["status"] == "ok" for c in report["cells"])
    assert not any(_alive(pid) for pid in report["kernel_pids"])
    executed = nbformat.read(out / "executed.ipynb", as_version=4)
    pictures = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs
                if "image/png" in o.get("data", {})]
    assert len(pictures) >= 12  # loss curves, samples under images, attention maps
    assert "<html" in (out / "executed.html").read_text()[:2000].lower()
    saved = load_loss_file(out / "produced" / lossfile.FILENAME)
    assert {k: len(v) for k, v in saved.items()} == dict.fromkeys(lossfile.KEYS, 32)


def test_made_up_losses_are_caught(tmp_path, reference_run):
    """A notebook that writes a plausible curve without training passes the format, not this."""
    _, out, _ = reference_run
    real = load_loss_file(out / "produced" / lossfile.FILENAME)
    forged = {k: [round(x, 2) * 0.98 for x in v] for k, v in real.items()}
    shutil.copy(REFERENCE, tmp_path / "rnn_lstm_captioning.py")
    _write(tmp_path / NOTEBOOK.name, "import torch",
           f"torch.save({forged!r}, 'rnn_lstm_attention_submission.pt')")
    result = run_checks(tmp_path / "rnn_lstm_captioning.py", only="notebook")
    checks = {c.id: c for c in result.checks}
    assert checks["notebook_executes"].status == "passed"
    assert checks["notebook_writes_losses"].status == "passed"
    reproduce = checks["notebook_losses_reproduce"]
    assert reproduce.status == "failed" and reproduce.score == 0
    assert "iteration 1 is" in reproduce.message and "grader's run gives" in reproduce.message


def test_compare_histories_names_the_first_differing_iteration():
    ref = {k: [3.0, 2.0, 1.0] for k in lossfile.KEYS}
    assert lossfile.compare_histories(ref, ref, 1e-4) == []
    off = {**ref, "lstm_losses": [3.0, 2.01, 1.0]}
    assert lossfile.compare_histories(off, ref, 1e-4) == [
        "lstm_losses (LSTM): iteration 2 is 2.01, the grader's run gives 2"]
    short = {**ref, "attn_losses": [3.0]}
    assert "1 losses, the grader's run has 3" in lossfile.compare_histories(short, ref, 1e-4)[0]
    nan = {**ref, "rnn_losses": [float("nan"), 2.0, 1.0]}
    assert "iteration 1" in lossfile.compare_histories(nan, ref, 1e-4)[0]


# -- hostile and broken notebooks -------------------------------------------------------------


def test_a_cell_that_loops_forever_is_interrupted_and_later_cells_run(tmp_path):
    nb = _write(tmp_path / "loop.ipynb", "x = 41", "while True:\n    pass", "print(x + 1)")
    start = time.monotonic()
    report = notebook_runner.run_notebook(nb, out_dir=tmp_path / "out", cell_timeout=3)
    assert time.monotonic() - start < 60
    assert _statuses(report) == ["ok", "ok", "ok", "timeout", "ok"]
    assert report.kernel_restarts == 0  # the interrupt worked: the state survived
    executed = nbformat.read(report.executed_path, as_version=4)
    assert executed.cells[-1].outputs[0]["text"] == "42\n"


def test_a_cell_that_ignores_interrupts_gets_a_new_kernel(tmp_path):
    nb = _write(tmp_path / "stubborn.ipynb",
                "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n"
                "    pass", "print('still here')")
    start = time.monotonic()
    report = notebook_runner.run_notebook(nb, out_dir=tmp_path / "out", cell_timeout=2)
    assert time.monotonic() - start < 60
    assert _statuses(report) == ["ok", "ok", "timeout", "ok"]
    assert report.kernel_restarts == 1 and "replaced" in report.cells[2].message
    assert not any(_alive(pid) for pid in report.kernel_pids)


def test_a_kernel_that_kills_itself_is_reported_and_replaced(tmp_path):
    nb = _write(tmp_path / "kill.ipynb", "import os\nos.kill(os.getpid(), 9)",
                "print('after')", "import os\nos._exit(0)", "print('after again')")
    report = notebook_runner.run_notebook(nb, out_dir=tmp_path / "out", cell_timeout=20)
    assert _statuses(report) == ["ok", "ok", "kernel-died", "ok", "kernel-died", "ok"]
    assert report.kernel_restarts == 2 and len(report.kernel_pids) == 3
    assert not any(_alive(pid) for pid in report.kernel_pids)


def test_printing_50_mb_is_capped(tmp_path):
    nb = _write(tmp_path / "flood.ipynb",
                "import sys\nfor _ in range(500):\n    sys.stdout.write('x' * 100_000)",
                "print('next')")
    start = time.monotonic()
    report = notebook_runner.run_notebook(nb, out_dir=tmp_path / "out", cell_timeout=60)
    assert time.monotonic() - start < 60
    assert _statuses(report) == ["ok", "ok", "ok", "ok"]
    flood = report.cells[2]
    assert flood.truncated and flood.output_chars == 50_000_000
    assert Path(report.executed_path).stat().st_size < 2 * notebook_runner.CELL_OUTPUT_CAP
    assert Path(report.html_path).stat().st_size < 3 * notebook_runner.CELL_OUTPUT_CAP + 10**6


def test_an_early_error_is_reported_by_reply_status_and_the_rest_runs(tmp_path):
    nb = _write(tmp_path / "early.ipynb", "raise RuntimeError('no data here')",
                "print('independent')", "print(undefined_name)")
    report = notebook_runner.run_notebook(nb, out_dir=tmp_path / "out")
    assert _statuses(report) == ["ok", "ok", "error", "ok", "error"]
    assert report.cells[2].message == "RuntimeError: no data here"
    assert report.cells[4].message.startswith("NameError")
    assert not report.clean and report.status == "executed"


def test_a_broken_notebook_fails_its_checks_and_every_other_check_still_runs(tmp_path):
    shutil.copy(REFERENCE, tmp_path / "rnn_lstm_captioning.py")
    _write(tmp_path / NOTEBOOK.name, "raise ValueError('early')", "x = 1")
    result = run_checks(tmp_path / "rnn_lstm_captioning.py",
                        only="notebook or rnn_step_forward_public")
    checks = {c.id: c for c in result.checks}
    assert sorted(checks) == sorted([*NOTEBOOK_CHECKS, "rnn_step_forward_public"])
    assert checks["rnn_step_forward_public"].status == "passed"
    assert checks["notebook_executes"].status == "failed"
    assert "ValueError: early" in checks["notebook_executes"].message
    for cid in ("notebook_writes_losses", "notebook_losses_reproduce"):
        assert checks[cid].status == "failed"
        assert "did not write rnn_lstm_attention_submission.pt" in checks[cid].message


@pytest.mark.parametrize("content, expected", [
    (b"{not json", "is not a readable Jupyter notebook"),
    (json.dumps({"cells": "nope", "nbformat": 4, "nbformat_minor": 5,
                 "metadata": {}}).encode(), "does not follow the notebook format"),
])
def test_malformed_notebooks_get_a_clear_message(tmp_path, content, expected):
    path = tmp_path / "bad.ipynb"
    path.write_bytes(content)
    report = notebook_runner.run_notebook(path, out_dir=tmp_path / "out")
    assert report.status == "invalid-notebook" and expected in report.message
    assert json.loads((tmp_path / "out" / "notebook_report.json").read_text())["status"] == \
        "invalid-notebook"


def test_a_missing_notebook_fails_the_notebook_checks_with_a_message(tmp_path):
    shutil.copy(REFERENCE, tmp_path / "rnn_lstm_captioning.py")
    result = run_checks(tmp_path / "rnn_lstm_captioning.py", only="notebook_executes")
    (check,) = result.checks
    assert check.status == "failed" and "no notebook at" in check.message


def test_the_kernel_runs_in_a_scrubbed_temp_dir_and_symlinks_are_not_copied_out(tmp_path,
                                                                              monkeypatch):
    monkeypatch.setenv("CAPGRADE_SECRET_TOKEN", "do-not-leak")
    nb = _write(tmp_path / "env.ipynb",
                "import os\nprint(os.getcwd() == os.environ['HOME'], "
                "'CAPGRADE_SECRET_TOKEN' in os.environ)",
                "os.symlink('/etc/passwd', 'rnn_lstm_attention_submission.pt')\n"
                "open('result.txt', 'w').write('hi')")
    report = notebook_runner.run_notebook(nb, out_dir=tmp_path / "out")
    executed = nbformat.read(report.executed_path, as_version=4)
    assert executed.cells[-2].outputs[0]["text"] == "True False\n"
    assert report.produced == ["result.txt"]
    assert report.file(lossfile.FILENAME) is None
