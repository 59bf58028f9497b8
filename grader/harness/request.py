"""TRUSTED side: one grading request, the only place grading options are declared.

The CLI, batch grading, Gradescope and the notebook's ``check()`` each build a
``GradingRequest``; the engine hands it to the pytest plugin object as it is
(no argv round trip), so an option is added in one place and cannot be passed
in the wrong position.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

#: The check catalogue's folder: a group is one of its ``test_<group>.py`` modules.
_CHECKS_DIR = Path(__file__).resolve().parent.parent / "checks"
_CUDA = re.compile(r"cuda(:\d+)?")
#: Run with the workers' interpreter: whether torch there sees the GPU (the harness never
#: imports torch itself).
_CUDA_PROBE = ("import json, torch; ok = torch.cuda.is_available(); print(json.dumps("
               "{'build': torch.version.cuda or torch.version.hip, "
               "'count': torch.cuda.device_count() if ok else 0}))")


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
        from grader.harness.expected import hidden_values_path

        return hidden_values_path(self.hidden_expected)

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
        changes: dict[str, Any] = dict(paths)  # each a Path | None field of the request
        return replace(self, submission=submission, **changes)

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

    def selection_problem(self) -> str | None:
        """What is wrong with ``groups`` and ``only`` (None: nothing), before a worker starts.

        A mistyped group or a malformed ``-k`` expression is the caller's mistake: it
        must read as one (exit 2), never as the catalogue failing on the student's code.
        """
        return selection_problem(self.only, self.groups)

    def verdict_options(self) -> dict[str, Any]:
        """The options that can change a verdict (what batch grading keys its reuse on)."""
        return {"hidden": self.hidden, "slow": self.slow, "notebook": self.notebook,
                "only": self.only, "groups": list(self.groups), "device": self.device,
                "timeout": self.timeout}


def check_groups() -> list[str]:
    """The catalogue's groups (rnn, lstm, ...), read from its file names: nothing imported."""
    return sorted(p.stem.removeprefix("test_") for p in _CHECKS_DIR.glob("test_*.py"))


def selection_problem(only: str | None, groups: tuple[str, ...] | list[str] = ()) -> str | None:
    """Why this ``--only``/``--group`` selection cannot select anything (None: it may)."""
    import difflib

    known = check_groups()
    for group in groups:
        if group not in known:
            close = difflib.get_close_matches(group, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return (f"unknown group {group!r}{hint}; groups are: {', '.join(known)}")
    if only is not None:
        if not only.strip():
            return "--only needs part of a check id, e.g. --only rnn_step_forward"
        try:  # pytest's own -k parser (SyntaxError since pytest 8.4, ParseError before)
            from _pytest.mark.expression import Expression
        except ImportError:  # pytest moved it: the catalogue's own error will say
            return None
        try:
            Expression.compile(only)
        except Exception as exc:  # whichever class this pytest raises
            why = getattr(exc, "msg", None) or getattr(exc, "message", None) or str(exc)
            return (f"--only {only!r} is not a valid selection ({why}): give part of a check "
                    "id, e.g. --only rnn_step_forward, or combine parts with and, or, not: "
                    "--only \"lstm and not hidden\"")
    return None


def device_problem(device: str) -> str | None:
    """Why student code cannot run on ``device`` here (None: it can).

    Asked before grading: on a machine without a usable GPU every check would fail
    ("Found no NVIDIA driver"), a correct function included, and a batch would give
    every student 0. Cheap: nothing for cpu; for cuda, no process when the machine has
    no GPU driver at all, else one short ``import torch`` with the workers' interpreter.
    """
    if device == "cpu":
        return None
    if not _CUDA.fullmatch(device):
        return f"--device {device!r}: expected cpu or cuda (cuda:N for the N-th GPU)"
    todo = ("grading there would fail every check. Use --device cpu (the default), or run "
            "on a machine with an NVIDIA GPU and a CUDA build of torch")
    if sys.platform.startswith("linux") and not any(
            os.path.exists(p) for p in ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/kfd")):
        return f"--device {device}: this machine has no GPU driver (no /proc/driver/nvidia); {todo}"
    try:
        probe = subprocess.run([sys.executable, "-c", _CUDA_PROBE], capture_output=True,
                               text=True, timeout=120, stdin=subprocess.DEVNULL, check=False)
        import json

        found = json.loads(probe.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return f"--device {device}: could not ask torch whether a GPU is usable here; {todo}"
    wanted = int(device.partition(":")[2] or 0)
    if found["build"] is None:
        return (f"--device {device}: this torch is a CPU-only build (torch.version.cuda is "
                f"None); {todo}")
    if found["count"] <= wanted:
        seen = f"torch sees {found['count']} GPU(s)" if found["count"] else \
            "torch.cuda.is_available() is False"
        return f"--device {device}: no usable GPU ({seen}); {todo}"
    return None
