"""The course's settings as plain data (no torch): the trusted side reads them too.

The notebook's run settings (``NotebookRun``; the student notebook imports them
through ``grader.notebook.support``) and the sizes of the course notebook's
check inputs (the tensors themselves are built in the worker:
``grader.course.inputs``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

#: (N, T, V, p) and the course's expected range for check 8.
LOSS_CASES = [
    ((1000, 1, 10, 1.0), (2.00, 2.11)),
    ((1000, 10, 10, 1.0), (20.6, 21.0)),
    ((5000, 10, 10, 0.1), (2.00, 2.11)),
]

#: Checks 9, 12 and 16: the tiny captioning model the course fills by shape.
CAPTIONING_VOCAB = {"<NULL>": 0, "cat": 2, "dog": 3}
CAPTIONING_DIMS = {"input_dim": 400, "wordvec_dim": 30, "hidden_dim": 40}

#: Seconds one notebook cell, and a whole notebook, may run when the grader executes it
#: (``grader.notebook.runner``; ``capgrade run-notebook --cell-timeout/--budget``).
CELL_TIMEOUT = 300.0
NOTEBOOK_BUDGET = 900.0


@dataclass(frozen=True)
class NotebookRun:
    """Data, overfitting and full-training settings of one notebook run."""

    n_train: int  # synthetic images generated (ignored with the course's coco.pt)
    n_val: int
    data_seed: int
    overfit_samples: int
    overfit_batch: int
    overfit_epochs: int
    overfit_lr: dict[str, float]
    train_samples: int  # drawn with replacement from the training split
    train_batch: int
    train_epochs: int
    train_lr: float
    wordvec_dim: int = 256
    hidden_dim: int = 512
    input_dim: int = 400  # channels of the RegNet-X 400MF features
    seed: int = 0  # torch.manual_seed before each model is built, and the draw's seed
    device: str = field(default="cpu", compare=False)

    @property
    def train_iterations(self) -> int:
        return self.train_epochs * (self.train_samples // self.train_batch)

    def dims(self) -> dict[str, int]:
        return {"input_dim": self.input_dim, "wordvec_dim": self.wordvec_dim,
                "hidden_dim": self.hidden_dim}

    def as_dict(self) -> dict:
        return asdict(self)


#: The course's settings (ASSIGNMENT.md): 2,340 losses per model; meant for a GPU.
COURSE = NotebookRun(
    n_train=2000, n_val=200, data_seed=0,
    overfit_samples=50, overfit_batch=32, overfit_epochs=80,
    overfit_lr={"rnn": 1e-3, "lstm": 1e-2, "attn": 1e-3},
    train_samples=10_000, train_batch=256, train_epochs=60, train_lr=1e-3,
)

#: Grading mode: the same steps, small enough for a CPU in about a minute.
GRADING = NotebookRun(
    n_train=500, n_val=50, data_seed=0,
    overfit_samples=50, overfit_batch=32, overfit_epochs=40,
    overfit_lr={"rnn": 1e-3, "lstm": 1e-2, "attn": 1e-3},
    train_samples=256, train_batch=32, train_epochs=4, train_lr=1e-3,
)


#: A laptop's CPU (the notebook's default without a GPU): the course's steps and
#: models, 1/10 of the training (234 losses per model, minutes instead of hours). Its
#: loss file is NOT the hand-in's: that needs ``COURSE``'s 2,340 losses per model.
LAPTOP = NotebookRun(
    n_train=2000, n_val=200, data_seed=0,
    overfit_samples=50, overfit_batch=32, overfit_epochs=80,
    overfit_lr={"rnn": 1e-3, "lstm": 1e-2, "attn": 1e-3},
    train_samples=10_000, train_batch=256, train_epochs=6, train_lr=1e-3,
)


def settings(grading: bool, device: str | None = None, full: bool | None = None) -> NotebookRun:
    """The run's settings; grading mode always runs on the CPU.

    ``full``: the course's whole training (``COURSE``, what the hand-in's loss file
    needs) or the laptop-sized one (``LAPTOP``); None: the course's on CUDA, the
    laptop's elsewhere, so a CPU never starts hours of training unasked.
    """
    if grading:
        return GRADING
    if full is None:
        full = device is not None and device.startswith("cuda")
    run = COURSE if full else LAPTOP
    if device is None:
        return run
    return NotebookRun(**{**asdict(run), "device": device})


