"""Terminal and document hygiene: student-chosen text reaches no rendering raw.

Bidi controls ("Trojan Source"), ESC sequences and other control characters in a
student's exception message, captured output, traceback code lines, notebook
cells and file names are written out visibly (``\\u202e``) where they enter a
result, so the terminal table, Markdown, JSON, JUnit, CSV and Gradescope
renderings all show the same clean text.
"""

from __future__ import annotations

import argparse
import io
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from grader import protocol
from grader.harness.judging import require_ok
from grader.harness.outcome import Outcome
from grader.harness.plugin import GradingPlugin
from grader.harness.request import GradingRequest
from grader.notebook.terminal import notebook_table
from grader.results import SubmissionResult
from grader.results.render import (
    build_table,
    render_csv_row,
    render_gradescope,
    render_json,
    render_junit,
    render_markdown,
)
from grader.results.reports import feedback_html
from grader.results.sanitize import MESSAGE_CAP, OUTPUT_CAP, sanitize, student_text

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
#: What no rendering may contain: bidi controls, C0 but \t \n, DEL, C1 (ESC and CSI among them).
RAW = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c"
                 "\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: A student's message that reads as something else in a terminal or a review tool.
EVIL = "loss is fine\u202e  ,detaerc elif\u202c \x1b[2J\x1b]0;pwned\x07 \x9b31m end\r\nnext"


# -- the sanitiser --------------------------------------------------------------------------


def test_every_bidi_control_is_written_out():
    assert sanitize(BIDI) == ("\\u202a\\u202b\\u202c\\u202d\\u202e\\u2066\\u2067\\u2068\\u2069"
                              "\\u200e\\u200f\\u061c")


def test_control_characters_are_written_out_but_tab_and_newline_kept():
    assert sanitize("a\tb\nc") == "a\tb\nc"
    assert sanitize("\x1b[31mred\x1b[0m") == "\\x1b[31mred\\x1b[0m"
    assert sanitize("\x00\x07\x08\x0b\x0c\r\x7f\x85\x9b") == \
        "\\x00\\x07\\x08\\x0b\\x0c\\x0d\\x7f\\x85\\x9b"
    assert sanitize("line\r\nnext") == "line\nnext"
    assert sanitize("\u2028\ufeff\ud800") == "\\u2028\\ufeff\\ud800"


def test_ordinary_text_is_unchanged_and_sanitising_is_idempotent():
    text = "café ≤ 1e-5 — 日本語 😀 `x = tanh(a)`\n\tindented"
    assert sanitize(text) == text
    once = sanitize(EVIL)
    assert sanitize(once) == once and not RAW.search(once)


def test_student_text_is_capped_after_cleaning():
    huge = ("\u202e" + "x" * 99) * 50_000  # 5 MB
    kept = student_text(huge, MESSAGE_CAP)
    assert len(kept) <= MESSAGE_CAP and not RAW.search(kept)
    assert kept.startswith("\\u202ex") and "5,000,000 characters in all" in kept
    assert student_text("\u202e" * 10, 20).startswith("\\u202e\\u202e")
    assert len(student_text("\u202e" * 10, 20)) <= 20


# -- a student's exception message, through the harness, into every rendering ---------------


def _check(tmp_path: Path) -> SubmissionResult:
    """The result of one check whose student code raised ``EVIL`` (through the real path)."""
    error = {"type": "ValueError", "message": EVIL, "not_implemented": False,
             "grader_encoder": False, "stage": "",
             "frames": [{"line": 3, "function": "rnn_step_forward\u202e",
                         "code": "raise ValueError('\u2066' + s)  # \x1b[8m"}]}
    reply = protocol.Reply.decode(protocol.encode({"ok": False, "value": None, "error": error,
                                                   "output": ""}))
    outcome = Outcome(reply.ok, reply.value, reply.error, reply.output)
    try:
        require_ok(outcome, "rnn_step_forward")
    except Exception as exc:  # the CheckFailure a check raises
        failure = exc
    plugin = GradingPlugin(GradingRequest(submission=tmp_path / "rnn_lstm_captioning.py"))
    printed = "step 1\x1b[1A\x1b[2K\u202eoverwritten\n"
    plugin.submission = SimpleNamespace(take_output=lambda: printed)

    def test_rnn_step_forward_public():
        pass

    item = SimpleNamespace(name="test_rnn_step_forward_public",
                           module=SimpleNamespace(__name__="grader.checks.test_rnn"),
                           path=Path(__file__), function=test_rnn_step_forward_public,
                           location=(__file__, 0, "test_rnn_step_forward_public"))
    report = SimpleNamespace(passed=False, skipped=False, duration=0.1, when="call",
                             user_properties=[])
    call = SimpleNamespace(excinfo=SimpleNamespace(value=failure))
    check = plugin._result(item, report, call)
    assert check.status == "failed"
    return SubmissionResult(submission="rnn_lstm_captioning.py", checks=[check])


def test_a_bidi_override_in_a_student_exception_renders_clean_everywhere(tmp_path):
    result = _check(tmp_path)
    check = result.checks[0]
    assert "\\u202e" in check.message and "\\x1b[2J" in check.message
    assert "\\u2066" in check.message  # the frame's code line
    assert "\\u202eoverwritten" in check.output and "\\x1b[1A" in check.output

    console = Console(file=io.StringIO(), width=200)
    console.print(build_table(result))
    table = console.file.getvalue()
    markdown = render_markdown(result)
    gradescope = render_gradescope(result)
    texts = {"table": table, "markdown": markdown, "gradescope": gradescope,
             "json": render_json(result), "junit": render_junit(result),
             "csv": json.dumps(render_csv_row(result), ensure_ascii=False),
             "html": feedback_html("alice", "graded", "", result.to_dict())}
    for name, text in texts.items():
        assert not RAW.search(text), (name, RAW.search(text))
    for name in ("table", "markdown", "html"):  # a reviewer sees that something was there
        assert "\\u202e" in texts[name], name
    shown = json.loads(gradescope)["tests"][0]["output"]
    assert "\\u202e" in shown and not RAW.search(shown)


def test_a_5_mb_message_and_output_give_a_bounded_result(tmp_path):
    from grader.harness.judging import CheckFailure

    plugin = GradingPlugin(GradingRequest(submission=tmp_path / "rnn_lstm_captioning.py"))
    plugin.submission = SimpleNamespace(take_output=lambda: "\u202e" * 5_000_000)
    item = SimpleNamespace(name="test_rnn_step_forward_public",
                           module=SimpleNamespace(__name__="grader.checks.test_rnn"),
                           path=Path(__file__), function=None, location=(__file__, 0, ""))
    report = SimpleNamespace(passed=False, skipped=False, duration=0.1, when="call",
                             user_properties=[])
    call = SimpleNamespace(excinfo=SimpleNamespace(value=CheckFailure("m" * 5_000_000)))
    big = plugin._result(item, report, call)
    assert len(big.message) <= MESSAGE_CAP and len(big.output) <= OUTPUT_CAP
    result = SubmissionResult(submission="s.py", checks=[big])
    assert len(render_json(result)) < 3 * (MESSAGE_CAP + OUTPUT_CAP)
    console = Console(file=io.StringIO(), width=120)
    console.print(build_table(result))
    assert len(console.file.getvalue()) < 5 * (MESSAGE_CAP + OUTPUT_CAP)


# -- the notebook report and `capgrade run-notebook` ----------------------------------------


def test_the_notebook_report_and_its_files_are_clean(tmp_path):
    from grader.notebook import runner

    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    chosen = "losses\x1b[31m\u202etxt.pt"
    (work / chosen).write_text("data")
    report = runner.NotebookReport(notebook=str(tmp_path / "nb\u202e.ipynb"),
                                   cells=[runner.CellRun(3, "error", message=EVIL,
                                                         first_line="x = '\u2067'\x1b[2J")],
                                   out_dir=str(out))
    runner._collect_produced(work, out, report)
    report = runner._finish(report, None, out, 0.0, html=False)
    assert report.produced == ["losses\\x1b[31m\\u202etxt.pt"]
    assert report.file(report.produced[0]).read_text() == "data"
    stream = io.StringIO()
    notebook_table(report, stream)
    written = (out / "notebook_report.json").read_text()
    for text in (stream.getvalue(), json.loads(written)["cells"][0]["message"],
                 json.loads(written)["notebook"]):
        assert not RAW.search(text), text
    assert "\\u202etxt.pt" in stream.getvalue()


def test_run_notebook_prints_no_raw_escape(monkeypatch, capsys, tmp_path):
    from grader import cli
    from grader.notebook import runner

    report = runner.NotebookReport(notebook="nb.ipynb", status="invalid-notebook",
                                   message="nb\x1b]0;owned\x07\u202e.ipynb is not readable")
    monkeypatch.setattr(runner, "run_notebook", lambda *a, **k: report)
    args = argparse.Namespace(as_is=True, param=[], notebook=Path("nb.ipynb"), module=None,
                              out=tmp_path, cell_timeout=1.0, budget=1.0, no_html=True)
    assert cli._run_notebook(args) == 2
    printed = capsys.readouterr()
    assert "capgrade run-notebook:" in printed.err
    assert not RAW.search(printed.err + printed.out), printed.err
    assert "\\u202e" in printed.err


@pytest.mark.parametrize("text", [EVIL, BIDI, "\x1b[31m" * 1000])
def test_student_text_never_returns_raw_characters(text):
    assert not RAW.search(student_text(text)) and not RAW.search(student_text(text, 50))
