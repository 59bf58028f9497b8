"""Overfit checks: the grader trains the submission's CaptioningRNN and judges the loss.

Setups, bounds and why they mean something: ``grader/course/overfit.py``; the
calibration over seeds and layer-creation orders: ``overfit_calibration.md``
next to this file. Slow (seconds each): run by ``capgrade check --all`` or
``--only overfit``.
"""

from __future__ import annotations

import pytest

from grader.checks.inputs import call, spec
from grader.course import overfit
from grader.harness.judging import CheckFailure
from grader.sandbox import resources

#: A student's training may be much slower than the reference's few seconds.
OVERFIT_TIMEOUT = 120.0


@pytest.mark.parametrize("cell", list(overfit.SETUPS))
def test_overfit(submission, device, cell):
    setup = overfit.SETUPS[cell]
    out = call(submission, f"training CaptioningRNN ({cell})", "overfit",
               timeout=max(OVERFIT_TIMEOUT, submission.timeout), cell_type=cell,
               seed=setup.seed, dims=setup.dims, learning_rate=setup.learning_rate,
               num_epochs=setup.num_epochs, batch_size=setup.batch_size,
               images=spec("overfit_data", "images", cell=cell),
               captions=spec("overfit_data", "captions", cell=cell), vocab=overfit.vocab(),
               device=device, threads=resources.training_threads())
    problem = overfit.judge(out.get("losses") if isinstance(out, dict) else None, setup)
    if problem:
        raise CheckFailure(problem)
