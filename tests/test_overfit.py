"""The overfit checks: the reference learns, the stub and learning-breaking bugs do not.

Each check trains for a few seconds, so the cases here are chosen to cover each
way of failing once: not implemented, a model that ignores the image (stuck
at the blind floor ln 32), a loss on the wrong scale (caught at iteration 1),
and a loss cut off from the graph (the training loop refuses it).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from grader.course import overfit
from grader.harness.engine import run_checks
from tests.conftest import REFERENCE, STUB
from tests.variants import Variant, by_name, write_variant

CALIBRATION = Path(overfit.__file__).resolve().parent.parent / "checks" / "overfit_calibration.json"


def _overfit(path, only: str = "overfit") -> dict:
    result = run_checks(path, only=only)
    assert result.status == "graded", result.message
    return {c.id: c for c in result.checks}


def test_reference_passes_every_overfit_check():
    checks = _overfit(REFERENCE)
    assert sorted(checks) == ["overfit[attn]", "overfit[lstm]", "overfit[rnn]"]
    for check in checks.values():
        assert check.status == "passed", check.message
        assert check.score == check.max_score == 3


def test_stub_fails_every_overfit_check():
    checks = _overfit(STUB)
    assert len(checks) == 3
    for check in checks.values():
        assert check.status == "failed" and "not implemented" in check.message


IMAGE_IGNORED = Variant(
    "image_ignored", "the image features are multiplied by zero before use",
    "features = self.image_encoder(images)\n        words",
    "features = self.image_encoder(images) * 0\n        words",
    ("overfit[rnn]", "overfit[lstm]", "overfit[attn]"))
LOSS_DETACHED = Variant(
    "loss_detached", "forward returns a detached loss",
    "loss = temporal_softmax_loss(scores, captions_out, ignore_index=self.ignore_index)",
    "loss = temporal_softmax_loss(scores, captions_out, ignore_index=self.ignore_index)"
    ".detach()", ("overfit[rnn]",))


def test_a_model_that_ignores_the_image_fails_all_three(tmp_path):
    checks = _overfit(write_variant(IMAGE_IGNORED, tmp_path))
    assert len(checks) == 3
    for check in checks.values():
        assert check.status == "failed", check.id
        assert "ignores the image" in check.message, check.message


def test_a_loss_averaged_over_tokens_fails_at_the_first_iteration(tmp_path):
    checks = _overfit(write_variant(by_name()["loss_default_mean"], tmp_path),
                      only="overfit and rnn and not attn")
    (check,) = checks.values()
    assert check.status == "failed" and "summed over time" in check.message


def test_a_detached_loss_fails_with_the_reason(tmp_path):
    checks = _overfit(write_variant(LOSS_DETACHED, tmp_path), only="overfit and rnn")
    (check,) = checks.values()
    assert check.status == "failed" and "graph is cut" in check.message


def test_judge_rejects_malformed_histories():
    setup = overfit.SETUPS["rnn"]
    good = [40.0] * (setup.iterations - 5) + [0.1] * 5
    assert overfit.judge(good, setup) is None
    assert "did not produce" in overfit.judge("losses", setup)
    assert "expected 80" in overfit.judge(good[:-1], setup)
    assert "iteration 3" in overfit.judge(good[:2] + [math.nan] + good[3:], setup)
    assert "not below" in overfit.judge(good[:-5] + [setup.bound] * 5, setup)


def test_bounds_match_their_calibration():
    with open(CALIBRATION) as f:
        record = json.load(f)
    assert record["data_seed"] == overfit.DATA_SEED
    assert record["seeds"] >= 10 and len(record["variants"]) >= 3
    for cell, setup in overfit.SETUPS.items():
        summary = record["summary"][cell]
        assert summary["setup"] == {"hidden_dim": setup.hidden_dim,
                                    "wordvec_dim": setup.wordvec_dim,
                                    "learning_rate": setup.learning_rate,
                                    "num_epochs": setup.num_epochs,
                                    "samples": setup.samples,
                                    "batch_size": setup.batch_size}, \
            f"{cell}: the setup changed since calibration: run scripts/calibrate_overfit.py"
        assert setup.bound == overfit.calibrated_bound(summary["worst"], setup.blind_floor)
        assert summary["proves_image_use"] == (setup.bound < setup.blind_floor)
        assert setup.bound < setup.blind_floor  # passing proves the image is used
        assert summary["runs"] == record["seeds"] * len(record["variants"])


@pytest.mark.parametrize("cell", list(overfit.SETUPS))
def test_blind_floor_is_what_the_captions_allow(cell):
    setup = overfit.SETUPS[cell]
    _, captions = setup.data()
    assert setup.samples // setup.batch_size == 1  # one fixed batch is memorised
    used = captions[:setup.batch_size]
    assert len({tuple(c) for c in used.tolist()}) == setup.batch_size  # all distinct


@pytest.mark.parametrize("cell", ["rnn"])
def test_overfit_probe_memo_is_exact(ref, cell, monkeypatch):
    from grader.course import encoder
    from grader.worker import probes

    monkeypatch.setattr(ref, "ImageEncoder", encoder.ImageEncoder)
    setup = overfit.SETUPS[cell]
    images, captions = overfit.overfit_set()
    runs = [probes.overfit(ref, cell, 0, {"input_dim": 400, "wordvec_dim": 8, "hidden_dim": 12},
                           1e-3, 5, setup.batch_size, images, captions, overfit.vocab(),
                           memoise=memo)["losses"] for memo in (False, True)]
    assert runs[0] == runs[1] and len(runs[0]) == 5
    assert setup.cell_type == cell


def test_trainings_side_by_side_give_the_losses_of_one_after_the_other():
    """Each training in a worker of its own, at once: bit-identical to one worker in turn."""
    from grader.checks.test_overfit import _params
    from grader.harness.client import Submission

    cells = ("rnn", "attn")
    with Submission(REFERENCE) as one:
        in_turn = {c: one.call("overfit", timeout=300, **_params(c, "cpu")).value["losses"]
                   for c in cells}
    with Submission(REFERENCE) as main:
        twins = {c: main.sibling() for c in cells}
        pending = {c: twin.begin("overfit", **_params(c, "cpu")) for c, twin in twins.items()}
        at_once = {c: pending[c].outcome(300).value["losses"] for c in cells}
        for twin in twins.values():
            twin.close()
    assert at_once == in_turn
    assert all(len(losses) > 10 for losses in in_turn.values())
