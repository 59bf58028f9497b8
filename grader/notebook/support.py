"""What the student notebook imports: its run settings and its set-up.

One definition serves the notebook and the grader. In grading mode (the
notebook's parameters cell says ``GRADING_MODE = True``; ``capgrade
run-notebook`` injects it) the notebook trains small models on a small
synthetic set on the CPU, and the grader re-runs exactly that full-training
configuration on the submitted module (``grader/checks/test_notebook.py``): a
notebook that writes made-up losses cannot match it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType

import torch

from grader.contract import MODULE_NAME


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


def settings(grading: bool, device: str | None = None) -> NotebookRun:
    """The run's settings; grading mode always runs on the CPU."""
    run = GRADING if grading else COURSE
    if grading or device is None:
        return run
    return NotebookRun(**{**asdict(run), "device": device})


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_student_module(path: str | Path = f"{MODULE_NAME}.py", grading: bool = False
                        ) -> ModuleType:
    """(Re-)import the student's module and give it the grader's ImageEncoder.

    Re-importing picks up edits without restarting the kernel. The grader's
    encoder never downloads (see grader.course.encoder); in grading mode it always
    uses the packaged weights, as the grader's own runs do.
    """
    from grader.worker.loader import load_submission

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path.resolve()} not found: keep {MODULE_NAME}.py next to "
                                "the notebook (or change MODULE_PATH in the parameters cell)")
    return load_submission(path, allow_imagenet=False if grading else None)


def load_notebook_data(run: NotebookRun, path: str | Path | None = None) -> dict:
    """The course's coco.pt when given (or $CAPGRADE_COCO), else the synthetic set."""
    from grader.course.dataset import load_data

    return load_data(path, n_train=run.n_train, n_val=run.n_val, seed=run.data_seed)


def overfit_subset(data: dict, run: NotebookRun) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``overfit_samples`` training images and captions, as the course."""
    n = run.overfit_samples
    return data["train_images"][:n], data["train_captions"][:n]


def training_subset(data: dict, run: NotebookRun) -> tuple[torch.Tensor, torch.Tensor]:
    """``train_samples`` pairs drawn with replacement, from a private seeded generator."""
    generator = torch.Generator().manual_seed(run.seed)
    index = torch.randint(len(data["train_images"]), (run.train_samples,), generator=generator)
    return data["train_images"][index], data["train_captions"][index]
