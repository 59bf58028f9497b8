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
from tests.conftest import REFERENCE, STUB
from tests.corpus import Corpus, Job
from tests.variants import Variant, by_name, reference_source

pytestmark = pytest.mark.slow  # grades whole submissions in sandboxed workers

CALIBRATION = Path(overfit.__file__).resolve().parent.parent / "checks" / "overfit_calibration.json"


def _overfit(corpus: Corpus, job: Job) -> dict:
    result = corpus.result(job)
    assert result.status == "graded", result.message
    return {c.id: c for c in result.checks}


def _job(source: str, only: str = "overfit") -> Job:
    return Job(source, hidden=False, only=only)


def test_reference_passes_every_overfit_check(corpus):
    checks = _overfit(corpus, JOBS["reference"])
    assert sorted(checks) == ["overfit[attn]", "overfit[lstm]", "overfit[rnn]"]
    for check in checks.values():
        assert check.status == "passed", check.message
        assert check.score == check.max_score == 3


def test_stub_fails_every_overfit_check(corpus):
    checks = _overfit(corpus, JOBS["stub"])
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

JOBS = {
    "reference": _job(REFERENCE.read_text()),
    "stub": _job(STUB.read_text()),
    "image_ignored": _job(IMAGE_IGNORED.apply(reference_source())),
    "loss_default_mean": _job(by_name()["loss_default_mean"].apply(reference_source()),
                              "overfit and rnn and not attn"),
    "loss_detached": _job(LOSS_DETACHED.apply(reference_source()), "overfit and rnn"),
}


def corpus_jobs(items: list[pytest.Item]) -> list[Job]:
    """The overfit gradings of the selected tests, started at collection."""
    wanted = {"reference": "test_reference_passes_every_overfit_check",
              "stub": "test_stub_fails_every_overfit_check",
              "image_ignored": "test_a_model_that_ignores_the_image_fails_all_three",
              "loss_default_mean": "test_a_loss_averaged_over_tokens_fails_at_the_first_iteration",
              "loss_detached": "test_a_detached_loss_fails_with_the_reason",
              "patched_probe": "test_a_patched_overfit_probe_earns_nothing"}
    names = {item.originalname for item in items}
    return [JOBS[key] for key, test in wanted.items() if test in names]


def test_a_model_that_ignores_the_image_fails_all_three(corpus):
    checks = _overfit(corpus, JOBS["image_ignored"])
    assert len(checks) == 3
    for check in checks.values():
        assert check.status == "failed", check.id
        assert "ignores the image" in check.message, check.message


def test_a_loss_averaged_over_tokens_fails_at_the_first_iteration(corpus):
    checks = _overfit(corpus, JOBS["loss_default_mean"])
    (check,) = checks.values()
    assert check.status == "failed" and "summed over time" in check.message


def test_a_detached_loss_fails_with_the_reason(corpus):
    checks = _overfit(corpus, JOBS["loss_detached"])
    (check,) = checks.values()
    assert check.status == "failed" and "graph is cut" in check.message


def test_judge_rejects_malformed_histories():
    setup = overfit.SETUPS["rnn"]
    good = [40.0] * (setup.iterations - 5) + [0.1] * 5
    assert overfit.judge(good, setup) is None
    assert "did not produce" in overfit.judge("losses", setup)
    assert "expected 80" in overfit.judge(good[:-1], setup)
    assert "iteration 3" in overfit.judge([*good[:2], math.nan, *good[3:]], setup)
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


# -- the verdict rests on the grader's own evaluation of the trained parameters -------------


def _trained(ref, cell: str, monkeypatch, epochs: int = 3) -> tuple[dict, dict]:
    from grader.course import encoder
    from grader.worker import probes

    monkeypatch.setattr(ref, "ImageEncoder", encoder.ImageEncoder)
    setup = overfit.SETUPS[cell]
    images, captions = setup.data()
    dims = {"input_dim": 400, "wordvec_dim": 8, "hidden_dim": 12}
    out = probes.overfit(ref, cell, 0, dims, 1e-2, epochs, setup.batch_size, images, captions,
                         overfit.vocab(), parameters=True)
    args = dict(cell_type=cell, dims=dims, vocab=overfit.vocab(), images=images,
                captions=captions, batch_size=setup.batch_size)
    return out, args


@pytest.mark.parametrize("cell", ["rnn", "attn"])
def test_trained_parameters_are_found_in_any_order_and_layout(ref, cell, monkeypatch):
    """Shuffled, a linear weight stored transposed, a 1x1 conv as a matrix: the same loss."""
    import torch

    from grader.worker import probes

    out, args = _trained(ref, cell, monkeypatch)
    given = out["parameters"]
    loss = probes.trained_loss(ref, parameters=given, **args)["loss"]
    assert loss is not None and math.isfinite(loss)
    other = [t.t() if t.dim() == 2 and t.shape[0] != t.shape[1] else t.squeeze()
             for t in reversed(given)]
    assert probes.trained_loss(ref, parameters=other, **args)["loss"] == pytest.approx(loss,
                                                                                     rel=1e-6)
    assert probes.trained_loss(ref, parameters=[torch.zeros(3)], **args)["loss"] is None


def test_an_invented_loss_curve_is_not_what_the_parameters_give(ref, monkeypatch):
    """A module that reports a low curve but hands back untrained parameters fails."""
    from grader.worker import probes

    out, args = _trained(ref, "rnn", monkeypatch, epochs=1)
    setup = overfit.SETUPS["rnn"]
    verified = probes.trained_loss(ref, parameters=out["parameters"], **args)
    problem = overfit.judge_verified(verified, setup, reported=0.01)
    assert problem is not None and "0.010" in problem and "course's model" in problem
    assert overfit.judge_verified({"loss": None, "given": 0}, setup, 0.01).count("0 tensors")
    assert overfit.judge_verified({"loss": 0.2}, setup, 0.25) is None


PATCHED_PROBE = ("\nimport grader.worker.probes as _probes\n\n\n"
             "def _fake(m, cell_type, seed, dims, learning_rate, num_epochs, batch_size, images,\n"
             "          captions, vocab, **kw):\n"
             "    n = num_epochs * (len(images) // batch_size)\n"
             "    return {'losses': [30.0 * 0.9 ** i + 0.01 for i in range(n)], 'seconds': 1.0,\n"
             "            'parameters': []}\n\n\n"
             "_probes.PROBES['overfit'] = _fake\n")
JOBS["patched_probe"] = _job(STUB.read_text() + PATCHED_PROBE)


def test_a_patched_overfit_probe_earns_nothing(corpus):
    """The stub, rewriting the worker's probe to report a perfect curve: 0 of 9 points."""
    checks = _overfit(corpus, JOBS["patched_probe"])
    assert sum(c.score for c in checks.values()) == 0
    assert all("course's model" in c.message for c in checks.values())


def test_without_a_reference_a_passing_training_says_it_is_unverified(tmp_path):
    from grader.harness.engine import grade
    from grader.harness.request import GradingRequest

    result = grade(GradingRequest(REFERENCE, only="overfit and rnn", slow=True,
                                  reference=tmp_path / "none.py",
                                  hidden_expected=tmp_path / "none.safetensors"))
    (check,) = result.checks
    assert check.status == "passed" and overfit.UNVERIFIED in check.message
