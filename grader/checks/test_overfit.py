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
from grader.harness.judging import CheckFailure, require_ok
from grader.sandbox import resources

#: A student's training may be much slower than the reference's few seconds.
OVERFIT_TIMEOUT = 120.0


def _params(cell: str, device: str) -> dict:
    setup = overfit.SETUPS[cell]
    return dict(cell_type=cell, seed=setup.seed, dims=setup.dims,
                learning_rate=setup.learning_rate, num_epochs=setup.num_epochs,
                batch_size=setup.batch_size, images=spec("overfit_data", "images", cell=cell),
                captions=spec("overfit_data", "captions", cell=cell), vocab=overfit.vocab(),
                device=device)


@pytest.fixture(scope="module")
def side_by_side(request: pytest.FixtureRequest, submission, device):
    """The selected trainings, all started at once in workers of their own, where the run has
    the cores (``resources.parallel_trainings``); else nothing, and each check trains in turn.

    Each worker is a fresh sandbox with the student's module, one thread, the same
    inputs: the same losses as one after the other, in less wall time.
    """
    cells = [item.callspec.params["cell"] for item in request.session.items
             if getattr(item, "originalname", "") == "test_overfit"]
    started: dict = {}
    if resources.parallel_trainings() > 1 and len(cells) > 1 and not device.startswith("cuda"):
        for cell in cells:
            worker = submission.sibling()
            started[cell] = (worker, worker.begin("overfit", **_params(cell, device)))
    yield started
    for worker, _ in started.values():
        worker.close()


@pytest.mark.parametrize("cell", list(overfit.SETUPS))
def test_overfit(submission, device, cell, side_by_side):
    setup = overfit.SETUPS[cell]
    what = f"training CaptioningRNN ({cell})"
    timeout = max(OVERFIT_TIMEOUT, submission.timeout)
    if cell in side_by_side:
        worker, pending = side_by_side[cell]
        out = require_ok(pending.outcome(timeout), what)
        submission.merge_output(worker)
    else:
        out = call(submission, what, "overfit", timeout=timeout, **_params(cell, device))
    problem = overfit.judge(out.get("losses") if isinstance(out, dict) else None, setup)
    if problem:
        raise CheckFailure(problem)
