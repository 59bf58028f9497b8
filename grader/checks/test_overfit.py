"""Overfit checks: the grader trains the submission's CaptioningRNN and judges the loss.

Setups, bounds and why they mean something: ``grader/course/overfit.py``; the
calibration over seeds and layer-creation orders: ``overfit_calibration.md``
next to this file. Slow (seconds each): run by ``capgrade check --all`` or
``--only overfit``.

The training runs in the student's worker, so its loss curve is only a claim
(the student's module can rewrite the probe that reports it). The verdict rests
on the trained parameters instead: a worker that imports the reference, never
student code, evaluates them in the course's model on the training batch
(``probes.trained_loss``), and that loss must be under the bound. Where no
reference is at hand (a student's own run) the check says it is unverified.
"""

from __future__ import annotations

from typing import Any

import pytest

from grader.checks.inputs import call, spec, subject_of
from grader.course import overfit
from grader.harness.client import Submission
from grader.harness.judging import CheckFailure, require_ok
from grader.harness.outcome import GraderLimit, WorkerFailure
from grader.harness.workers import retire_between_phases, side_by_side

#: A student's training may be much slower than the reference's few seconds.
OVERFIT_TIMEOUT = 120.0


def _params(cell: str, device: str) -> dict:
    setup = overfit.SETUPS[cell]
    return dict(cell_type=cell, seed=setup.seed, dims=setup.dims,
                learning_rate=setup.learning_rate, num_epochs=setup.num_epochs,
                batch_size=setup.batch_size, images=spec("overfit_data", "images", cell=cell),
                captions=spec("overfit_data", "captions", cell=cell), vocab=overfit.vocab(),
                device=device, parameters=True)


@pytest.fixture(scope="module")
def started_together(request: pytest.FixtureRequest, submission, device):
    """The selected trainings, all started at once in workers of their own, where the policy
    says so (``workers.side_by_side``); else nothing, and each check trains in turn.

    Each worker is a fresh sandbox with the student's module, one thread, the same
    inputs: the same losses as one after the other, in less wall time.
    """
    cells = [str(item.callspec.params["cell"]) for item in request.session.items
             if isinstance(item, pytest.Function) and item.originalname == "test_overfit"]
    started: dict = {}
    if side_by_side(len(cells), device):
        for cell in cells:
            worker = submission.sibling()
            started[cell] = (worker, worker.begin("overfit", **_params(cell, device)))
    yield started
    for worker, _ in started.values():
        worker.close()


@pytest.mark.parametrize("cell", list(overfit.SETUPS))
def test_overfit(submission, device, cell, started_together, grading, secrets, request):
    setup = overfit.SETUPS[cell]
    what = f"training CaptioningRNN ({cell})"
    timeout = max(OVERFIT_TIMEOUT, submission.timeout)
    if cell in started_together:
        worker, pending = started_together[cell]
        out = require_ok(pending.outcome(timeout), what, subject_of("overfit", {}))
        submission.merge_output(worker)
    else:
        if retire_between_phases():
            submission.retire()  # the function checks' worker gives its memory back first
        out = call(submission, what, "overfit", timeout=timeout, **_params(cell, device))
    out = out if isinstance(out, dict) else {}
    losses: Any = out.get("losses")  # a list of floats once judge finds no problem
    problem = overfit.judge(losses, setup)  # the student's own claim may cost points ...
    if problem:
        raise CheckFailure(problem)
    reference = grading.reference_solution()  # ... but only the grader's evaluation earns them
    if reference is None:
        request.node.user_properties.append(("note", overfit.UNVERIFIED))
        return
    if retire_between_phases():
        submission.retire()  # the verifier's worker starts next: not both at once
    verified = verify(reference, secrets, cell, out.get("parameters"), submission.supply)
    problem = overfit.judge_verified(verified, setup, overfit.final_loss(losses))
    if problem:
        raise CheckFailure(problem)


def verify(reference, secrets, cell: str, parameters: object, supply=None) -> dict:
    """The trained parameters' loss in the reference's model, in a worker of the grader's own.

    That worker imports the reference, never the submission: what it computes no
    student code touched. Its failure is the grader's, never the student's.
    """
    setup = overfit.SETUPS[cell]
    if not isinstance(parameters, list):
        return {"loss": None, "given": 0}
    params: dict[str, Any] = dict(cell_type=cell, dims=setup.dims, vocab=overfit.vocab(),
                  images=spec("overfit_data", "images", cell=cell),
                  captions=spec("overfit_data", "captions", cell=cell),
                  batch_size=setup.batch_size, parameters=parameters, bound=setup.bound)
    try:
        with Submission(reference, timeout=OVERFIT_TIMEOUT, secrets=secrets,
                        supply=supply) as clean:
            imported = clean.start()
            if not imported.ok:
                raise WorkerFailure(f"it could not load its reference ({imported.error.type}: "
                                    f"{imported.error.message[:300]})")
            out = clean.call("trained_loss", **params)
    except GraderLimit:
        raise
    except WorkerFailure as exc:
        raise GraderLimit("grader", f"the grader's verification of the training failed: "
                          f"{exc}") from None
    if not out.ok or not isinstance(out.value, dict):
        raise GraderLimit("grader", f"the grader's verification of the training failed "
                          f"({out.error.type}: {out.error.message[:300]})")
    return out.value
