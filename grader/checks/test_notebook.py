"""Notebook checks: the grader executes the submitted notebook itself, in grading mode.

``rnn_lstm_captioning.ipynb`` (next to the module, or ``--notebook``) runs in a
sandboxed kernel with the submitted module beside it (``grader.notebook.runner``);
its stored outputs are never read. Then:

- ``notebook_executes``: every code cell's execute reply says ``ok``;
- ``notebook_writes_losses``: that execution wrote
  ``rnn_lstm_attention_submission.pt`` with the grading-mode histories;
- ``notebook_losses_reproduce``: those losses are the ones the grader gets when
  it trains the same configuration (``grader.notebook.support.GRADING``) on the
  same module in its own worker, so numbers the notebook made up fail.

Slow (a minute or two): run by ``capgrade check --all`` or ``--only notebook``.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator

import pytest

from grader.checks.inputs import call, spec
from grader.contract import CELL_TYPES
from grader.course import lossfile
from grader.course.settings import GRADING
from grader.harness.judging import CheckFailure
from grader.harness.outcome import GraderLimit
from grader.notebook import runner as notebook_runner
from grader.sandbox import forkserver

#: Relative tolerance between the notebook's losses and the grader's re-run.
#: Both run the same code with the same thread count on one machine, so they agree
#: exactly; a rescaled, re-seeded or invented history misses by 1e-2 or more
#: (notebook_calibration.md).
REPRODUCE_RTOL = 1e-4
#: A student's training may be much slower than the reference's seconds.
TRAIN_TIMEOUT = 300.0


@pytest.fixture(scope="module")
def notebook_run(grading, secrets, submission) -> Iterator[notebook_runner.NotebookReport]:
    if submission is not None:  # one torch at a time: the kernel never runs beside a worker
        submission.close()
        submission.discard_launched()
    forkserver.shutdown()  # its torch too; the checks after the notebook start a new one
    module = grading.submission.resolve()
    notebook = grading.notebook_path or module.parent / notebook_runner.NOTEBOOK_NAME
    kept = grading.notebook_out
    # Without --notebook-out the executed copy lives only as long as these checks.
    with contextlib.ExitStack() as stack:
        out = kept or stack.enter_context(tempfile.TemporaryDirectory(prefix="capgrade-notebook-"))
        report = notebook_runner.run_notebook(notebook, module=module, out_dir=out,
                                              secrets=secrets, html=bool(kept))
        yield report


def _executed(report: notebook_runner.NotebookReport) -> None:
    if report.status != "executed":
        raise CheckFailure(f"the notebook could not be run: {report.message}")
    if report.limits:  # the grading machine ran out: no verdict on the notebook at all
        cell = report.limits[0]
        raise GraderLimit(cell.limit, f"running the notebook, cell {cell.index} "
                                      f"`{cell.first_line}`: {cell.message}")


def test_notebook_executes(notebook_run, grading):
    """Every code cell ran to an ``ok`` reply in grading mode."""
    _executed(notebook_run)
    if notebook_run.failures:
        shown = "; ".join(f"cell {c.index} `{c.first_line}`: {c.status}: {c.message}"
                          for c in notebook_run.failures[:5])
        more = len(notebook_run.failures) - 5
        raise CheckFailure(f"{len(notebook_run.failures)} of {len(notebook_run.cells)} code "
                           f"cells failed in grading mode: {shown}"
                           + (f" (and {more} more)" if more > 0 else "")
                           + (f". Executed copy: {notebook_run.executed_path}"
                              if grading.notebook_out else
                              ". To keep the executed copy, pass --notebook-out DIR"))


def _produced_losses(report: notebook_runner.NotebookReport, read_losses
                     ) -> dict[str, list[float]]:
    _executed(report)
    path = report.file(lossfile.FILENAME)
    if path is None:
        raise CheckFailure(f"running the notebook did not write {lossfile.FILENAME} next to it "
                           "(its cell that saves the three loss histories must run)")
    try:
        return read_losses(path, lossfile.DEFAULT_MAX_BYTES)
    except lossfile.LossFileError as exc:
        raise CheckFailure(str(exc)) from None


def test_notebook_writes_losses(notebook_run, read_losses):
    """The execution saved the three grading-mode histories, one loss per iteration."""
    data = _produced_losses(notebook_run, read_losses)
    rules = lossfile.LossFileRules(expected_length=GRADING.train_iterations,
                                   final_bounds={}, min_drop=1.0)
    problems = lossfile.judge_losses(data, rules)
    if problems:
        raise CheckFailure(f"{lossfile.FILENAME} written in grading mode: " + "; ".join(problems))


def grader_losses(submission, device: str = "cpu", run=GRADING) -> dict[str, list[float]]:
    """The grader's own run of the notebook's grading-mode training, on the submitted module."""
    losses = {}
    for cell in CELL_TYPES:
        out = call(submission, f"training CaptioningRNN ({cell}) as the notebook does", "overfit",
                   timeout=max(TRAIN_TIMEOUT, submission.timeout), cell_type=cell, seed=run.seed,
                   dims=run.dims(), learning_rate=run.train_lr, num_epochs=run.train_epochs,
                   batch_size=run.train_batch, images=spec("notebook_training", "images"),
                   captions=spec("notebook_training", "captions"),
                   vocab=spec("notebook_training", "vocab"), device="cpu")
        losses[f"{cell}_losses"] = list(out["losses"]) if isinstance(out, dict) else []
    return losses


def test_notebook_losses_reproduce(notebook_run, submission, read_losses):
    """The saved losses are the grader's own re-run of the same configuration."""
    produced = _produced_losses(notebook_run, read_losses)
    problems = lossfile.compare_histories(produced, grader_losses(submission), REPRODUCE_RTOL)
    if problems:
        raise CheckFailure("the losses the notebook saved are not what its training cells "
                           "produce when the grader runs them: " + "; ".join(problems)
                           + " (keep the training cells and new_model as given)")
