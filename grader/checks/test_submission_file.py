"""The hand-in's loss file, ``rnn_lstm_attention_submission.pt``, next to the module.

Parsed in a worker that imports no student code, with torch's restricted
unpickler only (``grader.worker.lossfile_reader``): a malicious file fails these
checks and can do nothing else. The rules (length, the
course's final-loss bounds, a curve that goes down) come from the rubric's
``[submission_file]`` table. Run by ``capgrade check --all`` or
``--only submission_file``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.course import lossfile
from grader.harness.judging import CheckFailure


@pytest.fixture(scope="module")
def loss_file(grading) -> Path:
    return grading.loss_file or grading.submission.resolve().parent / lossfile.FILENAME


@pytest.fixture(scope="module")
def rules() -> lossfile.LossFileRules:
    from grader.harness.plugin import RUBRIC_PATH, load_rubric_table

    table = load_rubric_table(RUBRIC_PATH, "submission_file")
    return lossfile.LossFileRules.from_mapping(table)


def _load(path: Path, rules: lossfile.LossFileRules, read_losses) -> dict[str, list[float]]:
    try:
        return read_losses(path, rules.max_bytes)
    except lossfile.LossFileError as exc:
        raise CheckFailure(str(exc)) from None


def test_submission_file_format(loss_file, rules, read_losses):
    """Readable, the three keys, lists of numbers, the right length, finite, not rising."""
    data = _load(loss_file, rules, read_losses)
    shape_rules = lossfile.LossFileRules(
        expected_length=rules.expected_length, max_bytes=rules.max_bytes, tail=rules.tail,
        final_bounds={}, min_drop=1.0)
    problems = lossfile.judge_losses(data, shape_rules)
    if problems:
        raise CheckFailure(f"{loss_file.name}: " + "; ".join(problems))


def test_submission_file_losses(loss_file, rules, read_losses):
    """The course's final-loss bounds and a curve that falls by the rubric's factor."""
    data = _load(loss_file, rules, read_losses)
    problems = lossfile.judge_losses(data, rules)
    if problems:
        raise CheckFailure(f"{loss_file.name}: " + "; ".join(problems))
