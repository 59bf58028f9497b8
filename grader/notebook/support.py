"""What the student notebook imports: its run settings and its set-up.

One definition serves the notebook and the grader. In grading mode (the
notebook's parameters cell says ``GRADING_MODE = True``; ``capgrade
run-notebook`` injects it) the notebook trains small models on a small
synthetic set on the CPU, and the grader re-runs exactly that full-training
configuration on the submitted module (``grader/checks/test_notebook.py``): a
notebook that writes made-up losses cannot match it.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import torch

from grader.contract import CELL_TYPES, MODULE_NAME  # noqa: F401 - the notebook's names
from grader.course.settings import (  # noqa: F401
    COURSE,
    GRADING,
    LAPTOP,
    NotebookRun,
    settings,
)


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
