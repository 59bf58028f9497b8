"""The hand-in's loss file as the check catalogue sees it (next to the module, or --loss-file)."""

from __future__ import annotations

import shutil

import torch

from grader.course.lossfile import FILENAME
from grader.harness.engine import run_checks
from tests.conftest import REFERENCE

ONLY = "submission_file or rnn_forward_public"


def _plausible(final: float, length: int = 2340, seed: int = 0) -> list[float]:
    """A falling curve from ~30 to about ``final`` with noise (a fixture, not a real run)."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, length)
    curve = final + (30 - final) * torch.exp(-8 * t) + 0.02 * torch.rand(length, generator=gen)
    curve[-1] = final * 0.95
    return curve.tolist()


def _grade(folder, **kwargs) -> dict:
    module = folder / "rnn_lstm_captioning.py"
    shutil.copy(REFERENCE, module)
    result = run_checks(module, only=ONLY, **kwargs)
    assert result.status == "graded", result.message
    checks = {c.id: c for c in result.checks}
    assert sorted(checks) == ["rnn_forward_public", "submission_file_format",
                              "submission_file_losses"]
    assert checks["rnn_forward_public"].status == "passed"  # nothing else is harmed
    return checks


def test_good_file_next_to_the_module_passes(tmp_path):
    torch.save({"rnn_losses": _plausible(1.5), "lstm_losses": _plausible(1.2),
                "attn_losses": _plausible(0.3)}, tmp_path / FILENAME)
    checks = _grade(tmp_path)
    assert checks["submission_file_format"].status == "passed"
    assert checks["submission_file_losses"].status == "passed"


def test_missing_file_fails_both_with_what_to_do(tmp_path):
    checks = _grade(tmp_path)
    for cid in ("submission_file_format", "submission_file_losses"):
        assert checks[cid].status == "failed" and "not found" in checks[cid].message


def test_losses_above_the_course_bounds_fail_only_the_losses_check(tmp_path):
    elsewhere = tmp_path / "handin" / "losses.pt"
    elsewhere.parent.mkdir()
    torch.save({"rnn_losses": _plausible(1.5), "lstm_losses": _plausible(2.6),
                "attn_losses": _plausible(0.3)}, elsewhere)
    checks = _grade(tmp_path, loss_file=elsewhere)
    assert checks["submission_file_format"].status == "passed"
    assert checks["submission_file_losses"].status == "failed"
    assert "LSTM" in checks["submission_file_losses"].message


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"rnn_losses": Payload(), "lstm_losses": [1.0], "attn_losses": [1.0]},
               tmp_path / FILENAME)
    checks = _grade(tmp_path)
    for cid in ("submission_file_format", "submission_file_losses"):
        assert checks[cid].status == "failed", checks[cid].message
        assert "pickle" in checks[cid].message.lower() or "objects" in checks[cid].message
    assert not marker.exists()
