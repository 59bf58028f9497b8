"""TRUSTED side: one grading request, the only place grading options are declared.

The CLI, batch grading, Gradescope and the notebook's ``check()`` each build a
``GradingRequest``; the engine hands it to the pytest plugin object as it is
(no argv round trip), so an option is added in one place and cannot be passed
in the wrong position.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class GradingRequest:
    """How to grade one submission (or, without ``submission``, each of a batch)."""

    # The student's rnn_lstm_captioning.py; None in a batch's template (each entry fills it).
    submission: Path | None = None
    # Also the hidden checks (instructors; needs the hidden expected values).
    hidden: bool = False
    # Also the slow end-to-end checks: the overfit trainings and the hand-in's loss file.
    slow: bool = False
    # Also the notebook checks (execute the notebook, re-run its training).
    notebook: bool = False
    # A pytest -k expression over check ids; slow checks it names run too.
    only: str | None = None
    # Only the checks of these parts (rnn, lstm, attention, ...); their slow checks too.
    groups: tuple[str, ...] = ()
    # Where student code runs: "cpu" or "cuda".
    device: str = "cpu"
    # Seconds one call into student code may take (None: the worker client's default).
    timeout: float | None = None
    # The hidden expected values (None: the checkout's reference/expected/).
    hidden_expected: Path | None = None
    # The hand-in's loss file (None: rnn_lstm_attention_submission.pt next to the module).
    loss_file: Path | None = None
    # The notebook the notebook checks execute (None: rnn_lstm_captioning.ipynb beside it).
    notebook_path: Path | None = None
    # Keep the executed notebook, its HTML and report here (None: a temp dir, removed).
    notebook_out: Path | None = None
    # `capgrade build`: record the submission's outputs as the expected values instead.
    record: bool = False
    # With record: the submission is the reference with this misconception's mutation in
    # it; keep what it computes where it differs from the recorded values (its fingerprint).
    fingerprint: str = ""
    # Show pytest's own output (for debugging the catalogue).
    verbose: bool = False
    # The reference solution that verifies the overfit trainings in a worker of its own
    # (None: the one beside the hidden values, when there is one: instructors' checkout).
    reference: Path | None = None

    def __post_init__(self) -> None:
        for name in ("submission", "hidden_expected", "loss_file", "notebook_path",
                     "notebook_out", "reference"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        object.__setattr__(self, "groups", tuple(self.groups))

    def hidden_values(self) -> Path:
        """Where the hidden expected values are read from (or, in record mode, written to)."""
        from grader.harness.expected import default_hidden_path

        return self.hidden_expected or default_hidden_path()

    def reference_solution(self) -> Path | None:
        """The reference module that verifies trainings, or None where there is none (students).

        Instructors' checkout: ``reference/rnn_lstm_captioning.py`` beside the hidden
        values; the Gradescope bundle names its copy. A student's release has none:
        there the overfit checks say they are unverified.
        """
        from grader.contract import MODULE_FILE

        found = self.reference or self.hidden_values().parent.parent / MODULE_FILE
        return found if found.is_file() else None

    def for_submission(self, submission: Path, **paths: Path | None) -> GradingRequest:
        """This request for one submission (with its own loss file, notebook, output)."""
        return replace(self, submission=submission, **paths)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for a process pool or a Dask worker)."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GradingRequest:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown grading options: {', '.join(unknown)}")
        return cls(**data)

    def verdict_options(self) -> dict[str, Any]:
        """The options that can change a verdict (what batch grading keys its reuse on)."""
        return {"hidden": self.hidden, "slow": self.slow, "notebook": self.notebook,
                "only": self.only, "groups": list(self.groups), "device": self.device,
                "timeout": self.timeout}
