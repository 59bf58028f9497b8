"""The check engine end to end: verdicts on the reference and the stub, and survival of
submissions that fail at import, loop forever, exit or flood their output."""

from __future__ import annotations

import io
import pickle
import sys
from pathlib import Path

import pytest
import torch

from grader.harness import expected as ex
from grader.harness.engine import run_checks
from grader.harness.plugin import load_rubric
from grader.protocol import ProtocolError, decode, encode
from tests.corpus import Job, job_for

from .conftest import REFERENCE, STUB


def corpus_jobs(items: list[pytest.Item]) -> list[Job]:
    return [job_for(REFERENCE), job_for(STUB), job_for(REFERENCE, hidden=False)]


@pytest.fixture(scope="module")
def reference_result(corpus):
    return corpus.result(job_for(REFERENCE))


def variant(tmp_path: Path, old: str, new: str, name: str = "submission.py") -> Path:
    """The reference with one substitution, written under any file name."""
    source = REFERENCE.read_text()
    assert source.count(old) == 1, old
    path = tmp_path / name
    path.write_text(source.replace(old, new))
    return path


def by_id(result):
    return {c.id: c for c in result.checks}


@pytest.mark.slow
def test_reference_scores_full_marks_on_public_and_hidden_checks(reference_result):
    r = reference_result
    assert r.status == "graded"
    failed = {c.id: c.message for c in r.checks if not c.passed}
    assert not failed
    assert r.score == r.max_score == 100
    assert {c.visibility for c in r.checks} == {"public", "hidden"}
    assert "separate process" in r.isolation


@pytest.mark.slow
def test_rubric_and_catalogue_agree(reference_result):
    rubric = load_rubric(include_slow=False)
    assert set(by_id(reference_result)) == set(rubric)
    assert sum(e["points"] for e in rubric.values()) == 100
    for check in reference_result.checks:
        assert check.max_score == rubric[check.id]["points"]
        assert check.visibility == rubric[check.id]["visibility"]


@pytest.mark.slow
def test_stub_scores_zero_and_every_check_says_not_implemented(corpus):
    r = corpus.result(job_for(STUB))
    assert r.status == "graded" and len(r.checks) == len(load_rubric(include_slow=False))
    assert r.score == 0
    for check in r.checks:
        if check.id == "literal_comparisons_public":  # advice read from the source: none here
            assert check.status == "passed", check.message
            continue
        assert check.status == ("advisory" if check.advisory else "failed"), check.id
        assert "not implemented yet" in check.message, (check.id, check.message)
        assert "Traceback" not in check.message


@pytest.mark.slow
def test_public_mode_runs_only_public_checks(corpus):
    r = corpus.result(job_for(REFERENCE, hidden=False))
    assert r.checks and all(c.visibility == "public" for c in r.checks)
    assert r.score == r.max_score == 65


def test_expected_values_are_fresh():
    """Fails when the reference or the catalogue changed without `capgrade build`."""
    assert ex.staleness(ex.PUBLIC_PATH, REFERENCE) == []
    assert ex.staleness(REFERENCE.parent / "expected" / "hidden.safetensors", REFERENCE) == []
    meta = ex.load(ex.PUBLIC_PATH)[ex.META]
    assert meta["torch"] and meta["seeds"]["rnn_step_backward_public"] == [0]


def test_staleness_detects_a_changed_reference(tmp_path):
    changed = variant(tmp_path, "Hello from rnn_lstm_captioning.py!", "Hello!")
    assert ex.staleness(ex.PUBLIC_PATH, changed) == ["the reference solution changed"]


def test_hidden_values_missing_is_a_clear_error(tmp_path):
    r = run_checks(REFERENCE, hidden=True, hidden_expected=tmp_path / "none.pt")
    assert r.status == "no-hidden-values" and "capgrade build" in r.message


def test_missing_file_is_reported(tmp_path):
    r = run_checks(tmp_path / "nope.py")
    assert r.status == "missing-file" and "nope.py" in r.message


def test_import_failure_still_gives_a_complete_report(tmp_path):
    path = variant(tmp_path, "import math\n", "import math\nimport no_such_module_xyz\n")
    r = run_checks(path)
    assert r.status == "import-error" and "no_such_module_xyz" in r.message
    assert len(r.checks) == sum(e["visibility"] == "public"
                                for e in load_rubric(include_slow=False).values())
    for check in r.checks:
        assert check.status == ("advisory" if check.advisory else "failed"), check.id
        assert "importing your module failed" in check.message, check.message


@pytest.mark.slow  # every check that calls rnn_forward waits out its 4 s timeout
@pytest.mark.alone  # and the others must finish within it
def test_infinite_loop_in_one_function_fails_only_its_checks(tmp_path):
    path = variant(tmp_path, "    hs, cache = [], []\n", "    while True:\n        pass\n")
    r = run_checks(path, timeout=4)
    checks = by_id(r)
    assert len(checks) == sum(e["visibility"] == "public"
                                for e in load_rubric(include_slow=False).values())
    assert checks["rnn_forward_public"].status == "error"
    assert "timed out after 4 s" in checks["rnn_forward_public"].message
    # Checks that never call rnn_forward still pass: the worker was restarted.
    for cid in ("rnn_step_forward_public", "lstm_forward_public", "word_embedding_public",
                "captioning_loss_public[attn]"):
        assert checks[cid].passed, (cid, checks[cid].message)


@pytest.mark.parametrize(
    ("exit_call", "expected"),
    [("sys.exit(0)", "called sys.exit(0)"), ("os._exit(0)", "exited with code 0")],
)
def test_exit_inside_a_function_fails_that_check_only(tmp_path, exit_call, expected):
    module = exit_call.split(".")[0]
    path = variant(tmp_path, "    next_h = torch.tanh(x @ Wx + prev_h @ Wh + b)\n",
                   f"    import {module}\n    {exit_call}\n")
    r = run_checks(path, only="rnn_step_forward_public or lstm_step_forward_public")
    checks = by_id(r)
    assert expected in checks["rnn_step_forward_public"].message
    assert checks["rnn_step_forward_public"].score == 0
    assert checks["lstm_step_forward_public"].passed


def test_exit_at_import_is_an_import_failure(tmp_path):
    path = variant(tmp_path, "import math\n", "import math\nimport os\nos._exit(3)\n")
    r = run_checks(path, only="rnn_step_forward_public")
    assert r.status == "import-error" and "exited with code 3" in r.message
    assert r.checks[0].status == "failed"


def test_output_flood_is_capped_and_the_verdict_unchanged(tmp_path):
    path = variant(tmp_path, "    next_h = torch.tanh(x @ Wx + prev_h @ Wh + b)\n",
                   "    for _ in range(100):\n        print('x' * 1_000_000)\n"
                   "    next_h = torch.tanh(x @ Wx + prev_h @ Wh + b)\n")
    r = run_checks(path, only="rnn_step_forward_public")
    check = r.checks[0]
    assert check.passed
    assert 0 < len(check.output) <= 4_000


def test_exception_feedback_points_at_the_students_line(tmp_path):
    path = variant(tmp_path, "    next_h = torch.tanh(x @ Wx + prev_h @ Wh + b)\n",
                   "    next_h = torch.tanh(x @ Wh + prev_h @ Wh + b)\n")
    r = run_checks(path, only="rnn_step_forward_public")
    message = r.checks[0].message
    assert "raised RuntimeError" in message
    line = REFERENCE.read_text().splitlines().index(
        "    next_h = torch.tanh(x @ Wx + prev_h @ Wh + b)") + 1
    assert f"at line {line} in rnn_step_forward" in message


def test_wrong_values_report_the_worst_element_and_rel_error(tmp_path):
    path = variant(tmp_path, "    next_h = torch.tanh(x @ Wx + prev_h @ Wh + b)\n",
                   "    next_h = torch.tanh(x @ Wx + prev_h @ Wh)\n")
    r = run_checks(path, hidden=True, only="rnn_step_forward")
    checks = by_id(r)
    public = checks["rnn_step_forward_public"]
    assert "worst element at index" in public.message and "rel_error" in public.message
    assert "expected" in public.message and public.error > 1e-3
    hidden = checks["rnn_step_forward_hidden[float64]"]
    assert hidden.status == "failed" and "expected" not in hidden.message


def test_a_hard_coded_pretrained_encoder_is_graded_offline(tmp_path):
    path = variant(tmp_path, "ImageEncoder(pretrained=image_encoder_pretrained)",
                   "ImageEncoder(pretrained=True)")
    r = run_checks(path, only="captioning_loss_public")
    assert [c.status for c in r.checks] == ["passed"] * 3


def test_replies_are_decoded_without_running_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    payload = pickle.dumps({"ok": True, "value": Evil()})
    with pytest.raises(ProtocolError):
        decode(payload)
    buffer = io.BytesIO()
    torch.save({"value": Evil()}, buffer)
    with pytest.raises(ProtocolError):
        decode(buffer.getvalue())
    # A well-formed message cannot smuggle one in either: its JSON is data, never objects.
    sneaky = encode({"value": {"__reduce__": "open", "args": [str(marker), "w"]}})
    assert decode(sneaky) == {"value": {"__reduce__": "open", "args": [str(marker), "w"]}}
    for cut in (0, 7, 20, len(sneaky) - 1):
        with pytest.raises(ProtocolError):
            decode(sneaky[:cut])
    assert not marker.exists()


def test_messages_round_trip_exactly():
    """Arrays keep dtype, shape (0-d and empty included) and bits; tuples stay tuples."""
    import numpy as np

    message = {"scalar": np.array(2.5), "empty": np.zeros((0, 3), np.float32),
               "strided": np.arange(12, dtype=np.int64).reshape(3, 4).T,
               "flags": np.array([True, False]), "nested": (1, [np.float64(2.0), None], "x"),
               "nan": float("nan")}
    back = decode(encode(message))
    for key in ("scalar", "empty", "strided", "flags"):
        assert back[key].dtype == message[key].dtype and back[key].shape == message[key].shape
        assert np.array_equal(back[key], message[key])
    assert back["nested"] == (1, [2.0, None], "x") and back["nan"] != back["nan"]


def test_worker_is_a_separate_process_without_the_harness_environment(tmp_path):
    path = variant(tmp_path, "    next_h = torch.tanh(x @ Wx + prev_h @ Wh + b)\n",
                   "    import os\n    print(os.getpid(), os.environ.get('CAPGRADE_SECRET'))\n"
                   "    next_h = torch.tanh(x @ Wx + prev_h @ Wh + b)\n")
    import os

    os.environ["CAPGRADE_SECRET"] = "hunter2"
    try:
        r = run_checks(path, only="rnn_step_forward_public")
    finally:
        del os.environ["CAPGRADE_SECRET"]
    pid, secret = r.checks[0].output.split()[:2]
    assert int(pid) != os.getpid() and secret == "None"
    assert sys.executable


def test_notebook_helper_and_cli_exit_codes(tmp_path, capsys):
    from grader import check
    from grader.cli import main

    result = check("rnn_step_forward_public", path=str(REFERENCE))
    assert result.all_passed and "rnn_step_forward_public" in capsys.readouterr().out
    assert main(["check", str(REFERENCE), "--only", "rnn_step_forward_public"]) == 0
    assert main(["check", str(STUB), "--only", "rnn_step_forward_public",
                 "--format", "json"]) == 1
    assert "not implemented yet" in capsys.readouterr().out
    assert main(["check", str(tmp_path / "missing.py")]) == 2
