"""Right grades on real student code, second set: student code called the way the course
calls it, one penalty per missing piece, feedback that describes what the code did.

Each test grades a student-style module written for it (the reference with the edit a
student makes), never a held-out submission:
1. ``cell_type is "attn"``: works in the course, where arguments are literals;
2. a TODO left as ``pass`` costs its own checks and nothing else;
3. sample feedback read from the captions returned;
4. a hard-coded device, named with the student's line;
5. a check stopped by another student function names that function.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.harness.plugin import load_rubric
from tests.corpus import Corpus, Job
from tests.variants import only_expression, reference_source

pytestmark = pytest.mark.slow  # grades edits of the reference in sandboxed workers

FUNCTION_CHECKS = load_rubric(include_slow=False)


def _module(tmp_path: Path, *edits: tuple[str, str]) -> Path:
    source = reference_source()
    for old, new in edits:
        assert source.count(old) >= 1, f"`{old[:50]}` is not in the reference"
        source = source.replace(old, new)
    path = tmp_path / "rnn_lstm_captioning.py"
    path.write_text(source)
    return path


def corpus_jobs(items: list[pytest.Item]) -> list[Job]:
    return []  # each test grades its own edit of the reference, through the session's pool


def _grade(corpus: Corpus, path: Path, ids=None) -> dict:
    result = corpus.grade(path.read_text(), hidden=True,
                          only=only_expression(ids) if ids else None)
    assert result.status == "graded", result.message
    return {c.id: c for c in result.checks}


# -- 1: Python-level identities of the arguments ---------------------------------------------


def test_is_with_a_literal_grades_as_in_the_course_and_is_named_in_an_advisory(tmp_path, corpus):
    """The grader's cell_type is the course's interned literal; the comparison is advice."""
    path = _module(tmp_path, ('cell_type == "attn"', 'cell_type is "attn"'),
                   ('cell_type == "rnn"', 'cell_type is "rnn"'),
                   ('cell_type == "lstm"', 'cell_type is "lstm"'))
    lines = [i for i, text in enumerate(path.read_text().splitlines(), 1)
             if 'cell_type is "' in text]
    ids = ("captioning_loss_public[rnn]", "captioning_loss_public[lstm]",
           "captioning_loss_public[attn]", "sample_hidden[attn]", "literal_comparisons_public")
    checks = _grade(corpus, path, ids)
    for cid in ids[:4]:
        assert checks[cid].status == "passed", (cid, checks[cid].message)
    advice = checks["literal_comparisons_public"]
    assert advice.status == "advisory" and advice.score == advice.max_score == 0, advice
    assert f"line {lines[0]} in " in advice.message and 'is "' in advice.message, advice.message
    assert "use ==" in advice.message


def test_a_module_without_literal_comparisons_gets_no_advice(tmp_path, corpus):
    checks = _grade(corpus, _module(tmp_path), ("literal_comparisons_public",))
    assert checks["literal_comparisons_public"].status == "passed"


def test_arguments_reach_student_code_as_plain_interned_python_values():
    """Strings (values and dict keys) interned, numbers plain, as the course's calls give."""
    import sys

    from grader.protocol import decode, encode
    from grader.worker.values import from_wire

    sent = {"cell_type": "".join(["at", "tn"]), "vocab": {"<NULL>": 0, "w" + "ord": 5},
            "max_length": 3, "gain": 1.5, "flag": True}
    got = from_wire(decode(encode(sent)))
    assert got["cell_type"] is sys.intern("attn")
    assert all(k is sys.intern(k) for k in got["vocab"])
    assert [type(got[k]) for k in ("max_length", "gain", "flag")] == [int, float, bool]
    assert type(got["vocab"]) is dict and type(got["vocab"]["word"]) is int


# -- 2: a TODO is charged once ---------------------------------------------------------------

SAMPLE_BODY_START = "        N = images.shape[0]\n        features = self.image_encoder(images)\n"


def _sample_left_as_pass(tmp_path: Path) -> Path:
    source = reference_source()
    start = source.index(SAMPLE_BODY_START)
    end = source.index("        return captions\n", start) + len("        return captions\n")
    path = tmp_path / "rnn_lstm_captioning.py"
    path.write_text(source[:start] + "        # TODO: greedy decoding\n        pass\n"
                    + source[end:])
    return path


def test_an_unimplemented_sample_costs_its_own_checks_only(tmp_path, corpus):
    checks = _grade(corpus, _sample_left_as_pass(tmp_path))
    assert set(checks) == set(FUNCTION_CHECKS)
    lost = {cid: c for cid, c in checks.items() if c.score < c.max_score and not c.advisory}
    assert sorted(lost) == sorted(cid for cid, c in checks.items()
                                  if c.target == "CaptioningRNN.sample"), sorted(lost)
    assert all("not implemented yet" in c.message for c in lost.values())
    rule = checks["from_scratch_public"]
    assert rule.status == "passed" and rule.score == rule.max_score == 4, rule.message
    assert "CaptioningRNN.sample" in rule.message  # said, not charged


# -- 3: sample feedback from the captions ------------------------------------------------------

WRITES_NULL_FOR_END = (
    ("        word = torch.full((N,), self._start, dtype=torch.long, device=h.device)\n",
     "        word = torch.full((N,), self._start, dtype=torch.long, device=h.device)\n"
     "        done = torch.zeros(N, dtype=torch.bool, device=h.device)\n"),
    ("            captions[:, t] = word\n",
     "            done = done | (word == self._end)\n"
     "            captions[:, t] = torch.where(done, torch.full_like(word, self._null), word)\n"),
)


def test_a_sample_that_drops_its_end_token_is_told_so(tmp_path, corpus):
    """Every chosen word fed back, stopping at <END>, <NULL> written where <END> belongs."""
    checks = _grade(corpus, _module(tmp_path, *WRITES_NULL_FOR_END),
                    ("sample_hidden[rnn]", "sample_hidden[lstm]", "sample_hidden[attn]"))
    failed = [c for c in checks.values() if c.status == "failed"]
    assert failed, "every cell's seeds include a caption that ends early"
    for check in failed:
        assert "<END> belongs" in check.message, check.message
        assert "feed each chosen word back" not in check.message, check.message


def test_a_sample_that_feeds_back_start_every_step_is_told_so(tmp_path, corpus):
    checks = _grade(corpus, _module(tmp_path, ("            captions[:, t] = word\n",
                                       "            captions[:, t] = word\n"
                                       "            word = torch.full_like(word, self._start)\n")),
                    ("sample_hidden[rnn]",))
    assert "feed each chosen word back" in checks["sample_hidden[rnn]"].message


# -- 4: a hard-coded device --------------------------------------------------------------------

CUDA_BUFFER = (
    "    hs, cache = [], []\n    prev_h = h0\n    for t in range(x.shape[1]):\n"
    "        prev_h, step_cache = rnn_step_forward(x[:, t], prev_h, Wx, Wh, b)\n"
    "        hs.append(prev_h)\n        cache.append(step_cache)\n"
    "    h = torch.stack(hs, dim=1)\n",
    "    N, T, _ = x.shape\n    h = torch.zeros(N, T, h0.shape[1], dtype=x.dtype, device='cuda')\n"
    "    cache = []\n    prev_h = h0\n    for t in range(T):\n"
    "        prev_h, step_cache = rnn_step_forward(x[:, t], prev_h, Wx, Wh, b)\n"
    "        h[:, t] = prev_h\n        cache.append(step_cache)\n",
)


def test_a_hard_coded_cuda_device_is_a_catalogued_mistake_with_its_line(tmp_path, corpus):
    import torch

    if torch.cuda.is_available():
        pytest.skip("on a GPU machine a 'cuda' buffer works for CPU inputs only by failing later")
    path = _module(tmp_path, CUDA_BUFFER)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1)
                if "device='cuda'" in text)
    check = _grade(corpus, path, ("rnn_forward_public",))["rnn_forward_public"]
    assert check.status == "failed"
    assert f"creates a tensor on 'cuda', at line {line} in rnn_forward" in check.message, \
        check.message
    assert "device of the inputs" in check.message
    assert "NVIDIA" not in check.message.split("Requirement")[0] or "no GPU" in check.message
    assert [d["id"] for d in check.diagnoses] == ["hard_coded_device"], check.diagnoses


# -- 5: a check stopped by another student function --------------------------------------------


def test_a_forward_that_crashes_at_n1_is_named_in_the_backward_checks(tmp_path, corpus):
    path = _module(tmp_path, ("    prev_h = h0\n    for t in range(x.shape[1]):\n",
                              "    prev_h = h0\n    N, T, D = x.squeeze().shape\n"
                              "    for t in range(T):\n"))
    ids = ("rnn_forward_public", "rnn_backward_public", "rnn_backward_hidden[float64]")
    checks = _grade(corpus, path, ids)
    assert checks["rnn_forward_public"].status == "passed"  # N = 2 there
    backward = checks["rnn_backward_hidden[float64]"]
    assert backward.status == "failed"
    assert backward.message.startswith("rnn_backward: could not be judged because of your "
                                       "rnn_forward"), backward.message
    assert "ValueError" in backward.message


def test_a_crash_inside_a_part_the_subject_calls_names_that_part(tmp_path, corpus):
    path = _module(tmp_path)
    source = path.read_text()
    start = source.index("def dot_product_attention(")
    body = source.index("    # BEGIN SOLUTION", start)
    path.write_text(source[:body] + "    raise IndexError('student bug')\n" + source[body:])
    cid = "attention_lstm_forward_public"
    check = _grade(corpus, path, (cid,))[cid]
    assert "it stopped inside your dot_product_attention, which AttentionLSTM.forward calls" \
        in check.message, check.message
    assert "IndexError: student bug" in check.message


def test_a_cuda_tensor_made_at_import_is_named_in_every_check():
    """`.cuda()` at module level fails the import: the message still names the line."""
    from grader.harness.judging import CheckFailure, require_ok
    from grader.harness.outcome import Outcome
    from grader.protocol import ErrorInfo

    error = ErrorInfo("RuntimeError", "Found no NVIDIA driver on your system. Please check",
                      frames=[{"line": 7, "function": "<module>", "qualname": "<module>",
                               "code": "EYE = torch.eye(4).cuda()"}], stage="import")
    with pytest.raises(CheckFailure) as failed:
        require_ok(Outcome(False, error=error), "rnn_forward", "rnn_forward")
    message = failed.value.message
    assert message.startswith("rnn_forward: not run, because importing your module failed: "
                              "your code creates a tensor on 'cuda', at line 7 in <module>")
    assert failed.value.misconception == "hard_coded_device"
