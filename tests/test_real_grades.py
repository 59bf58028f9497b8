"""Right grades on real student code (issue 14): no point lost to the course's starter,
to requirements the handout never states, or to the grader itself.

One test (or more) per class of false failure found on real submissions:
1. the starter's float32 attention buffer; 2. ``ignore_index=None``, never asked for;
3. arguments changed in place; 4. the from-scratch rule (too harsh and too lenient);
5. unused extra parameters; 6. misleading feedback; 7. instructor papercuts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from grader.harness.engine import run_checks
from grader.harness.plugin import load_rubric
from tests.corpus import Job, job_for
from tests.correct_variants import CORRECT, MUTATE_ARGUMENTS, Correct
from tests.variants import only_expression, reference_source

from .conftest import REFERENCE, ROOT

pytestmark = pytest.mark.slow  # grades whole submissions in sandboxed workers

STARTER = ROOT / "tests" / "starter" / "rnn_lstm_captioning.py"
FUNCTION_CHECKS = load_rubric(include_slow=False)


def _write(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "rnn_lstm_captioning.py"
    path.write_text(source)
    return path


def _checks(path: Path, ids=None) -> dict:
    result = run_checks(path, hidden=True,
                        only=only_expression(ids) if ids else None)
    assert result.status == "graded", result.message
    return {c.id: c for c in result.checks}


def _full_marks(checks: dict) -> list[str]:
    """Every point-bearing check passed with all its points; advisories never fail."""
    return [f"{c.id}: {c.status} {c.score}/{c.max_score}: {c.message}" for c in checks.values()
            if (c.advisory and c.status in ("failed", "error"))
            or (not c.advisory and (c.status != "passed" or c.score != c.max_score))]


# -- 1, 2, 3, 5: correct styles lose nothing -------------------------------------------------


def _correct_job(variant: Correct) -> Job:
    return Job(variant.apply(reference_source()), hidden=True, only=only_expression(variant.checks))


def _starter_job() -> Job:
    return job_for(STARTER)


def _mutate_arguments_job() -> Job:
    return Job(reference_source() + MUTATE_ARGUMENTS)


def corpus_jobs(items: list[pytest.Item]) -> list[Job]:
    """The correct variants and the two whole-module gradings, started at collection."""
    names = {item.originalname for item in items}
    jobs = [_correct_job(item.callspec.params["variant"]) for item in items
            if hasattr(item, "callspec") and "variant" in item.callspec.params]
    if "test_unfilled_course_starter_scores_zero" in names:
        jobs.append(_starter_job())
    if "test_arguments_overwritten_in_place_change_no_verdict" in names:
        jobs.append(_mutate_arguments_job())
    return jobs


@pytest.mark.parametrize("variant", CORRECT, ids=lambda v: v.name)
def test_correct_style_gets_every_point(variant: Correct, corpus):
    result = corpus.result(_correct_job(variant))
    assert result.status == "graded", result.message
    checks = {c.id: c for c in result.checks}
    assert sorted(checks) == sorted(variant.checks)
    assert not _full_marks(checks), "\n".join(_full_marks(checks))


def test_advisories_are_reported_worth_nothing_and_never_fail(tmp_path):
    """The course's one-line loss crashes on ignore_index=None: an advisory, not a failure."""
    straight = next(v for v in CORRECT if v.name == "one_line_loss_ignore_index_straight")
    ids = ("temporal_softmax_loss_hidden[none]", "captioning_ignore_index_none_hidden",
           "temporal_softmax_loss_hidden[null]")
    result = run_checks(straight.write(tmp_path), hidden=True, only=only_expression(ids))
    checks = {c.id: c for c in result.checks}
    for cid in ids[:2]:
        c = checks[cid]
        assert c.advisory and c.status == "advisory" and c.score == c.max_score == 0, c
        assert "TypeError" in c.message and "worth no points" in c.message
    assert checks[ids[2]].status == "passed"
    assert result.all_passed, "an advisory counted as a failure"
    assert result.score == result.max_score == 2


def test_arguments_overwritten_in_place_change_no_verdict(corpus):
    """Every argument of every probed function is the grader's own copy (class 3)."""
    result = corpus.result(_mutate_arguments_job())
    assert result.status == "graded", result.message
    checks = {c.id: c for c in result.checks}
    assert set(checks) == set(FUNCTION_CHECKS)
    assert not _full_marks(checks), "\n".join(_full_marks(checks))
    assert sum(c.score for c in checks.values()) == 100


# -- 4: the from-scratch rule --------------------------------------------------------------


def test_unfilled_course_starter_scores_zero(corpus):
    """The course-style starter (every TODO a `pass`) earns nothing, from_scratch included."""
    result = corpus.result(_starter_job())
    assert result.status == "graded", result.message
    assert result.score == 0, [(c.id, c.score) for c in result.checks if c.score]
    checks = {c.id: c for c in result.checks}
    assert "nothing verified yet" in checks["from_scratch_public"].message
    # Everything the student has to write says "not implemented yet", not a crash.
    crashes = [f"{c.id}: {c.message}" for c in result.checks
               if c.status == "failed" and "not implemented yet" not in c.message]
    assert not crashes, "\n".join(crashes)
    # The provided bookkeeping (course code) is an advisory that holds.
    assert checks["captioning_attributes_hidden"].status == "passed"


def test_a_crash_elsewhere_does_not_fail_the_from_scratch_rule(tmp_path):
    source = reference_source().replace(
        "    N, H, h_a, w_a = A.shape\n", "    N, H, h_a, w_a = A.shape\n    A = A.view(N, H)\n")
    checks = _checks(_write(tmp_path, source),
                     ("from_scratch_public", "dot_product_attention_public",
                      "rnn_step_forward_public"))
    assert checks["dot_product_attention_public"].status == "failed"
    rule = checks["from_scratch_public"]
    assert rule.status == "passed" and rule.score == 4, rule.message


def test_from_scratch_is_earned_for_the_parts_that_run(tmp_path):
    """Half a module: the rule earned in full, the missing part named, not charged twice."""
    source = reference_source()
    for old, new in (("        a = x @ self.Wx + prev_h @ self.Wh + self.b  # (N, 4H)\n"
                      "        next_h, next_c = _lstm_update(a, prev_c)\n",
                      "        next_h, next_c = None, None\n"),):
        assert source.count(old) == 1
        source = source.replace(old, new)
    # The rule is earned from the verdicts of the function checks run with it.
    checks = _checks(_write(tmp_path, source), ("from_scratch_public", "rnn_step_forward_public",
                                                "lstm_step_forward_public"))
    rule = checks["from_scratch_public"]
    assert rule.status == "passed" and rule.score == 4, rule
    assert "LSTM.step_forward" in rule.message and "not implemented yet" in rule.message


def test_a_forbidden_api_still_fails_the_rule(tmp_path):
    source = reference_source().replace("out = self.W_embed[x]",
                                        "out = torch.nn.functional.embedding(x, self.W_embed)")
    checks = _checks(_write(tmp_path, source), ("from_scratch_public",))
    rule = checks["from_scratch_public"]
    assert rule.status == "failed" and rule.score == 0 and "embedding" in rule.message


# -- 6: feedback that names the cause from the student's side -------------------------------


def _message(tmp_path: Path, old: str, new: str, check: str) -> str:
    source = reference_source()
    assert source.count(old) == 1, old
    c = _checks(_write(tmp_path, source.replace(old, new)), (check,))[check]
    assert c.status == "failed", c
    return c.message.splitlines()[0]  # what the student's code did (then the requirement)


def test_sample_not_implemented_is_named_as_such(tmp_path):
    starter_sample = (
        "        N = images.shape[0]\n        captions = self._null * "
        "images.new(N, max_length).fill_(1).long()\n"
        "        attn_weights_all = images.new(N, max_length, 4, 4).fill_(0).float()\n"
        "        return (captions, attn_weights_all.cpu()) if self.cell_type == 'attn' "
        "else captions\n")
    source = reference_source()
    start = source.index("        N = images.shape[0]\n        features = self.image_encoder")
    end = source.index("        # END SOLUTION", start)
    source = source[:start] + starter_sample + source[end:]
    for cell in ("rnn", "attn"):
        c = _checks(_write(tmp_path, source), (f"sample_hidden[{cell}]",))[f"sample_hidden[{cell}]"]
        assert "not implemented yet" in c.message, c.message
        assert "feed" not in c.message


def test_feed_back_is_named_only_with_evidence(tmp_path):
    """A decoder that does feed back but never updates h is not told to feed back."""
    message = _message(tmp_path, "h = self.rnn.step_forward(x, h)",
                       "h_next = self.rnn.step_forward(x, h)",
                       "sample_hidden[rnn]")
    assert "feed" not in message, message
    message = _message(tmp_path, "x = self.embedding(word)",
                       "x = self.embedding(torch.full_like(word, self._start))",
                       "sample_hidden[lstm]")
    assert "is not the input word of step 1" in message, message


def test_gradient_check_of_an_unfinished_function_says_not_implemented(tmp_path):
    message = _message(tmp_path, "    return attn, attn_weights\n",
                       "    return None, None\n", "attention_gradients_hidden")
    assert "not implemented yet" in message and "cuts the autograd graph" not in message


def test_a_float32_constant_in_a_float64_check_is_named(tmp_path):
    """The diagnosis names it first; the message still says how far off the values are."""
    old = 'scores = torch.einsum("nh,nhp->np", prev_h, A_flat) / math.sqrt(H)'
    new = ('scores = torch.einsum("nh,nhp->np", prev_h, A_flat) / torch.sqrt('
           'torch.tensor(H, dtype=torch.float32))')
    check = "dot_product_attention_hidden[float64]"
    c = _checks(_write(tmp_path, reference_source().replace(old, new)), (check,))[check]
    assert c.status == "failed", c
    assert [d["id"] for d in c.diagnoses] == ["float32_in_float64"], c.diagnoses
    assert c.feedback.startswith("Likely cause: This is what a float64 computation gives when "
                                 "a float32 tensor enters it"), c.feedback
    assert "course rel_error" in c.message, c.message


def test_an_error_is_located_at_the_callers_line_too(tmp_path):
    """A bad value made in rnn_forward crashes in rnn_step_forward: both lines are shown."""
    message = _message(tmp_path,
                       "prev_h, step_cache = rnn_step_forward(x[:, t], prev_h, Wx, Wh, b)",
                       "prev_h, step_cache = rnn_step_forward(x[:, t], prev_h, Wh, Wx, b)",
                       "rnn_forward_public")
    assert "in rnn_step_forward" in message and "called from line" in message
    assert "in rnn_forward: `prev_h, step_cache = rnn_step_forward(x[:, t], prev_h, Wh, Wx" \
        in message, message


def test_an_error_through_the_grader_encoder_says_it_is_substituted(tmp_path):
    message = _message(tmp_path,
                       "self.image_encoder = ImageEncoder(pretrained=image_encoder_pretrained)",
                       "self.image_encoder = ImageEncoder(pretrained=image_encoder_pretrained, "
                       "weights='DEFAULT')", "captioning_loss_public[rnn]")
    assert "grader's copy of the provided class" in message, message


def test_a_failure_names_the_requirement_it_enforces(tmp_path):
    source = reference_source().replace("next_h = torch.tanh(x @ Wx + prev_h @ Wh + b)",
                                        "next_h = x @ Wx + prev_h @ Wh + b")
    check = _checks(_write(tmp_path, source), ("rnn_step_forward_public",))
    message = check["rnn_step_forward_public"].message
    assert message.splitlines()[1].startswith("Requirement: rnn_step_forward returns next_h")


def test_every_point_bearing_check_names_its_requirement():
    rubric = load_rubric()
    assert all(entry.get("requires") for entry in rubric.values())
    advisories = {k for k, e in rubric.items() if e.get("advisory")}
    assert {"temporal_softmax_loss_hidden[none]", "captioning_ignore_index_none_hidden",
            "captioning_attributes_hidden"} <= advisories
    assert all(rubric[k]["points"] == 0 for k in advisories)


# -- 7: instructor papercuts ----------------------------------------------------------------


def _capgrade(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grader.cli", *args], cwd=cwd,
                          capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=600)


def test_all_finds_the_hidden_values_from_any_folder(tmp_path):
    run = _capgrade("check", str(REFERENCE), "--all", "--only",
                    "rnn_step_forward_hidden", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "rnn_step_forward_hidden[float64]" in run.stdout


def test_missing_hidden_values_name_the_flag(tmp_path):
    run = _capgrade("check", str(REFERENCE), "--all", "--hidden-expected",
                    str(tmp_path / "nowhere.pt"), cwd=tmp_path)
    assert run.returncode == 2
    assert "--hidden-expected PATH" in run.stderr


def test_no_temp_folder_outlives_a_notebook_check(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    run = _capgrade("check", str(REFERENCE), "--only", "notebook_executes", cwd=tmp_path,
                    env={"TMPDIR": str(tmp)})
    assert "notebook_executes" in run.stdout, run.stdout + run.stderr
    assert not list(tmp.glob("capgrade-*")), list(tmp.iterdir())
