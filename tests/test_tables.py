"""Issue 27, item 5: the table fits an 80-column terminal and a notebook cell (115).

Every check's status and score stay visible, a failing check's whole message (its "got ...
expected ...") is printed unbroken below the table, the isolation footer is one line
unless asked, and checks come in the notebook's order. Reporting only: the verdicts are
whatever grading said.
"""

from __future__ import annotations

import html
import io
import json
import re

import pytest
from rich.console import Console

from grader.results import CheckResult, SubmissionResult
from grader.results.render import render_table
from grader.rubric import load_rubric
from tests import buggy
from tests.conftest import ROOT

RUBRIC = ROOT / "grader" / "checks" / "rubric.toml"
BUGGY = "b16_attn_by_H_h0_every_step"  # an entry of tests/solutions/buggy/manifest.toml
#: The width rich gives a Jupyter kernel's output, and a classic terminal's.
WIDTHS = (80, 115)

#: What grading b16 (attention scores divided by H) says, as the engine returns it: the
#: checks in the check files' order (attention first), as in ``run_checks``.
ATTN_MESSAGE = (
    "dot_product_attention: attn: values differ; worst element at index (1, 0) (got 0.812229, "
    "expected 0.814126); course rel_error 5.59e-04 (the course's measure, relative to the "
    "largest value; this check holds every element to rtol=1e-08, atol=1e-10 of its own "
    "value)\nRequirement: dot_product_attention: scores prev_h . A[:, :, i, j] / sqrt(H), "
    "softmax over the 16 positions, weighted sum of A (course check 13)")
ATTN_CAUSE = ("Likely cause: This is what dot_product_attention computes when the scores are "
              "divided by H instead of sqrt(H). The scale is the square root of the hidden "
              "size: divide by math.sqrt(H). (2 checks agree.)")
LAYERS = [
    "separate process", "own session", "scrubbed environment", "fresh temp dir as cwd and HOME",
    "process group and stragglers killed at the end",
    "forked from the grader's fork server (Python and torch preloaded, no student code), then "
    "confined",
    "resource limits (address space 10 GiB, CPU 1800 s, 256 processes, files 256 MiB, 1024 "
    "open files, no core files)",
    "home: a tmpfs of 512 MiB of its own (its quota; what it wrote goes back to the grader's "
    "folder at the end)",
    "memory cgroup of its own (all its processes and their files in memory, together: 10 GiB, "
    "swap included)",
    "private /tmp, /var/tmp and /dev/shm (a tmpfs of 256 MiB each)",
    "network namespace (no interface up)",
    "IPC namespace (System V shared memory, semaphores and message queues, POSIX message "
    "queues: its own, gone with it)",
    "UTS namespace (host name of its own)",
    "mount namespace (an allowlist, read-only: the system folders, what the loader and "
    "libraries read of /etc, Python, the venv and grader/; every other folder empty, secrets "
    "covered)",
    "PID namespace (host processes invisible; all die with it)",
    "unprivileged user of its own (a uid no other process has)"]
ENVIRONMENT = {"capgrade": "0.1.0", "machine": "x86_64", "python": "3.11.7",
               "platform": "Linux-6.18.44-fc-v1045-x86_64-with-glibc2.36", "torch": "2.14.1"}


def b16_result() -> SubmissionResult:
    """A graded result of the shape the engine returns, every status and kind of score."""
    checks = [
        CheckResult("dot_product_attention_public", "failed", 0.0, 4.0, message=ATTN_MESSAGE,
                    error=5.586e-04, tolerance="rtol=1e-08, atol=1e-10", group="attention",
                    diagnoses=[{"id": "attention_scaled_by_H", "confidence": 0.75,
                                "text": ATTN_CAUSE}]),
        CheckResult("attention_lstm_step_forward_public", "passed", 4.0, 4.0),
        CheckResult("captioning_loss_public[rnn]", "passed", 4.0, 4.0),
        CheckResult("word_embedding_public", "passed", 3.0, 3.0),
        CheckResult("lstm_forward_hidden[float64]", "passed", 0.5, 0.5, "hidden"),
        CheckResult("temporal_softmax_loss_hidden[none]", "advisory", 0.0, 0.0, "hidden",
                    "advisory, worth no points: raised TypeError (got ignore_index=None)",
                    advisory=True),
        CheckResult("overfit[rnn]", "skipped", 0.0, 3.0, message="slow: run with --all"),
        CheckResult("rnn_step_forward_public", "passed", 4.0, 4.0, error=3.1e-9,
                    tolerance="rtol=1e-08, atol=1e-10"),
        CheckResult("rnn_forward_public", "error", 0.0, 4.0,
                    message="rnn_forward raised IndexError: index 7 is out of bounds for "
                            "dimension 1 with size 7 (got h of shape (2, 7, 3), expected "
                            "(2, 8, 3))"),
    ]
    return SubmissionResult(submission=f"tests/solutions/buggy/{BUGGY}.py", checks=checks,
                            environment=ENVIRONMENT, isolation=list(LAYERS), duration=21.0)


def _render(result: SubmissionResult, width: int, compact: bool, **kw) -> str:
    out = io.StringIO()
    render_table(result, console=Console(file=out, width=width), compact=compact, **kw)
    return out.getvalue()


def _score(c: CheckResult) -> str:
    return f"{'-' if c.status == 'skipped' else f'{c.score:g}'}/{c.max_score:g}"


def _words(text: str) -> str:
    return " ".join(text.split())


def assert_fits(text: str, result: SubmissionResult) -> None:
    """Each check's row shows its status and score in full; every message is there whole."""
    lines = text.splitlines()
    for c in result.checks:
        rows = [line for line in lines if f" {c.id} " in line and "│" in line]
        assert len(rows) == 1, (c.id, text)
        cells = [cell.strip() for cell in rows[0].split("│")[1:-1]]
        assert cells[:3] == [c.id, c.status, _score(c)], (cells, text)
        if c.feedback:  # whole, word for word, outside the table
            assert _words(c.feedback) in _words(text), (c.id, text)
    assert "…" not in text and "..." not in text.replace("Traceback ...", "")


@pytest.mark.parametrize("compact", [True, False], ids=["notebook", "cli"])
@pytest.mark.parametrize("width", WIDTHS)
def test_status_score_and_whole_messages_fit(width, compact):
    result = b16_result()
    text = _render(result, width, compact)
    assert_fits(text, result)
    assert max(map(len, text.splitlines())) <= width
    assert "(got 0.812229, expected 0.814126)" in _words(text)


def test_a_console_narrower_than_the_table_folds_the_ids_not_the_status():
    result = b16_result()
    text = _render(result, 50, compact=True)
    for c in result.checks:
        assert re.search(rf"│\s*{re.escape(c.status)}\s*│\s*{re.escape(_score(c))}\s*│", text)


@pytest.mark.parametrize("width", WIDTHS)
def test_the_isolation_footer_is_one_line_unless_asked(width):
    result = b16_result()
    for compact, hint in ((True, "verbose=True"), (False, "--verbose")):
        text = _render(result, width, compact)
        footer = [line for line in text.splitlines() if "isolation" in line]
        line = f"capgrade 0.1.0, python 3.11.7, torch 2.14.1 | isolation: {len(LAYERS)} layers"
        # the hint goes only where it fits (80 columns have no room for "verbose=True")
        assert footer in ([f"{line} ({hint})"], [line]) and len(footer[0]) <= width, text
        if width >= 115:
            assert footer == [f"{line} ({hint})"]
        assert "PID namespace" not in text and "Linux-6.18" not in text
    verbose = _words(_render(result, width, compact=False, verbose=True))
    assert all(_words(layer) in verbose for layer in LAYERS)
    assert "platform Linux-6.18.44" in verbose


def test_weakened_layers_are_counted_and_a_secrets_warning_is_always_shown():
    result = b16_result()
    result.isolation = [
        *LAYERS[:5],
        "no memory cgroup of its own (no cgroup v2): each process's memory is limited alone",
        "same user as the grader (not root: no user switch)",
        "WARNING: secrets readable from the sandbox: /srv/hidden.pt"]
    text = _render(result, 80, compact=False)
    assert "isolation: 8 layers, 3 weakened\n" in text
    assert "WARNING: secrets readable from the sandbox: /srv/hidden.pt" in text
    assert "no memory cgroup" not in text
    assert "(weakened) no memory cgroup" in _render(result, 80, compact=False, verbose=True)


def _rubric_ids() -> list[str]:
    return list(load_rubric(RUBRIC))  # expanded: one id per check, in the rubric's order


def test_the_rubric_lists_the_public_checks_in_the_notebook_s_order():
    """The reporting order is the rubric's: its public checks are course checks 1, 2, ..."""
    checks = load_rubric(RUBRIC)
    numbers = [int(m.group(1)) for spec in checks.values()
               if (m := re.search(r"\(course check (\d+)\)", spec.get("requires", "")))]
    assert numbers == list(range(1, 17))


@pytest.mark.parametrize("compact", [True, False], ids=["notebook", "cli"])
def test_checks_are_listed_in_the_notebook_s_order(compact):
    result = b16_result()
    text = _render(result, 115, compact)
    rank = {cid: i for i, cid in enumerate(_rubric_ids())}
    rows = [line.split("│")[1].strip() for line in text.splitlines()
            if line.startswith("│")]
    assert rows == sorted((c.id for c in result.checks), key=rank.__getitem__)
    assert rows[:3] == ["rnn_step_forward_public", "rnn_forward_public", "word_embedding_public"]
    # the messages below the table follow the same order
    assert text.index("\nrnn_forward_public error") < text.index("\ndot_product_attention_public")
    # reporting only: the result itself keeps the engine's order and verdicts
    assert [c.id for c in result.checks] == [c.id for c in b16_result().checks]


# -- a real run -------------------------------------------------------------------------------

ONLY = ("rnn_step_forward_public or rnn_forward_public or word_embedding_public or "
        "dot_product_attention_public")


@pytest.mark.slow
def test_a_graded_buggy_submission_fits_at_80_and_115(tmp_path):
    """The engine's own result for b16 (two failing checks), rendered both ways."""
    from grader.harness.engine import run_checks

    result = run_checks(buggy.write(BUGGY, tmp_path), only=ONLY)
    assert {c.id: c.status for c in result.checks} == {
        "rnn_step_forward_public": "passed", "rnn_forward_public": "failed",
        "word_embedding_public": "passed", "dot_product_attention_public": "failed"}
    for width in WIDTHS:
        for compact in (True, False):
            text = _render(result, width, compact)
            assert_fits(text, result)
            assert sum("isolation" in line for line in text.splitlines()) == 1, text
            assert "got 0.812229, expected 0.814126" in _words(text)


# -- a notebook cell, executed by nbclient --------------------------------------------------------


def _cell_texts(nb) -> list[tuple[str, str]]:
    """(mime type, text) of every output of every cell; HTML reduced to its text."""
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                found.append(("stream", out["text"]))
            for mime, value in out.get("data", {}).items():
                text = "".join(value) if isinstance(value, list) else value
                if mime == "text/html":
                    text = html.unescape(re.sub(r"<[^>]+>", "", text))
                text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # rich colours text/plain too
                found.append((mime, text))
    return found


@pytest.mark.slow
def test_check_in_a_notebook_cell_shows_every_status_and_score(tmp_path):
    """``grader.check()`` in a real kernel: rich draws at the kernel's width (115)."""
    import nbformat
    from nbclient import NotebookClient

    module = tmp_path / "rnn_lstm_captioning.py"
    module.write_text(buggy.source(BUGGY), encoding="utf-8")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        f"import grader\nresult = grader.check({ONLY!r}, path={str(module)!r})\n"
        "import json\nprint('RESULT', json.dumps([(c.id, c.status, c.score, c.max_score) "
        "for c in result.checks]))")])
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = _cell_texts(nb)
    reported = next(text for mime, text in outputs if "RESULT [" in text)
    checks = [CheckResult(cid, status, score, max_score) for cid, status, score, max_score
              in json.loads(reported.split("RESULT ", 1)[1])]
    assert {c.id for c in checks} == {"rnn_step_forward_public", "rnn_forward_public",
                                      "word_embedding_public", "dot_product_attention_public"}
    tables = [(mime, text) for mime, text in outputs if "Total " in text]
    assert {mime for mime, _ in tables} == {"text/plain", "text/html"}, outputs  # rich makes both
    for mime, text in tables:  # text/plain and, as rich makes it, text/html
        lines = text.splitlines()
        for c in checks:
            row = next(line for line in lines if f" {c.id} " in line)
            cells = [cell.strip() for cell in row.split("│")[1:-1]]
            assert cells[:3] == [c.id, c.status, _score(c)], (mime, text)
        assert max(map(len, lines)) <= 115, (mime, text)
        assert "got 0.812229, expected 0.814126" in _words(text), (mime, text)
