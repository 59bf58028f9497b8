"""The overfit checks' setup and verdict: can the submission's CaptioningRNN learn?

Unit checks compare outputs; they cannot tell whether a model *trains*. Here
the grader's own training loop (``grader.course.training``, the course's semantics)
trains the submission's ``CaptioningRNN`` on fixed synthetic images (rnn and
lstm: 50 samples in batches of 32, so the first 32 are used, as in the course;
attn: the first 16, in one batch) and the final loss must fall under a bound
calibrated from the reference (see
``grader/checks/overfit_calibration.md``, written by
``scripts/calibrate_overfit.py``).

Why the bounds mean something: the captions of a batch are distinct, so a
model that ignores the image cannot do better than guessing which of the B it
is, a loss of at least ln B per caption (Gibbs' inequality; ln 32 = 3.47,
ln 16 = 2.77). Every bound is below that, so passing proves the model reads
the image, and learns (the untrained loss is about 40).

The setups differ from the course's notebook only where time forces it: the
course's sizes (hidden 512, words 256, 80 iterations) are used for the vanilla
RNN; the LSTM takes hidden 192 / words 96 and 240 iterations, the attention
LSTM hidden 256 / words 128, 16 images and 150 iterations, so that each check
runs in a few seconds on one CPU thread. Smaller or faster setups were tried
and rejected because a correct model sometimes ended above the blind floor
(an LSTM at 128 / 64, lr 2e-3: 3.8 in one run of 40; an attention LSTM at
128 / 64 on 32 images: 9.1; the present attention setup at lr 1e-3: 2.67).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from grader.course import synthetic

if TYPE_CHECKING:  # tensors are made in the worker; the harness judges with numbers only
    import torch

DATA_SEED = 20261124
NUM_SAMPLES, BATCH_SIZE = 50, 32
BACKGROUND = (40, 40, 48)  # one shade for all: only the shapes tell the images apart
FINAL_WINDOW = 5  # the final loss is the mean of the last 5 iterations (Adam is not monotone)


@dataclass(frozen=True)
class OverfitSetup:
    """One cell type's training configuration and its calibrated bound."""

    cell_type: str
    hidden_dim: int
    wordvec_dim: int
    learning_rate: float
    num_epochs: int
    bound: float
    samples: int = NUM_SAMPLES
    batch_size: int = BATCH_SIZE
    seed: int = 0

    @property
    def dims(self) -> dict[str, int]:
        return {"input_dim": 400, "wordvec_dim": self.wordvec_dim, "hidden_dim": self.hidden_dim}

    @property
    def iterations(self) -> int:
        return self.num_epochs * (self.samples // self.batch_size)

    @property
    def blind_floor(self) -> float:
        """The best loss of a model that ignores the image, on one batch of distinct captions."""
        return math.log(self.batch_size)

    def data(self) -> tuple[torch.Tensor, torch.Tensor]:
        images, captions = overfit_set()
        return images[:self.samples], captions[:self.samples]


#: Bounds: see grader/checks/overfit_calibration.md (the rule is ``calibrated_bound``).
SETUPS: dict[str, OverfitSetup] = {
    "rnn": OverfitSetup("rnn", hidden_dim=512, wordvec_dim=256, learning_rate=1e-3,
                        num_epochs=80, bound=1.0),
    "lstm": OverfitSetup("lstm", hidden_dim=192, wordvec_dim=96, learning_rate=1e-3,
                         num_epochs=240, bound=3.25),
    "attn": OverfitSetup("attn", hidden_dim=256, wordvec_dim=128, learning_rate=1.5e-3,
                         num_epochs=150, bound=1.95, samples=16, batch_size=16),
}


def calibrated_bound(worst: float, blind_floor: float) -> float:
    """The bound for a reference whose worst calibration run ended at ``worst``.

    25% above the worst run, rounded up to 0.05. When the reference always
    beats the blind floor, the bound also stays at most halfway from its worst
    run to the floor, so passing proves the model reads the image; otherwise
    it only proves the model learns.
    """
    bound = 1.25 * worst
    if worst < blind_floor - 0.2:
        bound = min(bound, (worst + blind_floor) / 2)
    return math.ceil(bound * 20) / 20


def vocab() -> dict[str, int]:
    return {w: i for i, w in enumerate(synthetic.vocabulary())}


@lru_cache(maxsize=1)
def overfit_set() -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed 50 images and captions every submission is trained on."""
    images, captions = synthetic.make_split(NUM_SAMPLES, np.random.default_rng(DATA_SEED),
                                            vocab(), background=BACKGROUND)
    return images, captions


@lru_cache(maxsize=1)
def overfit_captions() -> np.ndarray:
    """The captions of ``overfit_set``, made without torch (for judging in the harness)."""
    return synthetic.make_captions(NUM_SAMPLES, np.random.default_rng(DATA_SEED), vocab())


def uniform_loss(setup: OverfitSetup) -> float:
    """The loss of a model that spreads its guesses evenly over the vocabulary."""
    captions = overfit_captions()[:setup.samples]
    targets = captions[:setup.batch_size, 1:]
    return float((targets != 0).sum(axis=1).astype(np.float32).mean()) * math.log(len(vocab()))


def final_loss(losses: list[float]) -> float:
    return float(np.mean(losses[-FINAL_WINDOW:]))


def judge(losses: object, setup: OverfitSetup) -> str | None:
    """Why the training run fails the check, or None when it passes."""
    what = f"overfitting {setup.cell_type}"
    if not isinstance(losses, list) or not all(isinstance(x, float) for x in losses):
        return f"{what}: the training loop did not produce a list of losses"
    if len(losses) != setup.iterations:
        return f"{what}: {len(losses)} losses recorded, expected {setup.iterations}"
    bad = [i for i, x in enumerate(losses) if not math.isfinite(x)]
    if bad:
        return (f"{what}: the loss became {losses[bad[0]]} at iteration {bad[0] + 1} "
                "(exploding values: check the scaling of scores and the gates)")
    uniform = uniform_loss(setup)
    if losses[0] < 0.5 * uniform:
        return (f"{what}: the untrained model's loss is {losses[0]:.3g}, but guessing uniformly "
                f"already costs about {uniform:.3g}; the loss must be summed over time and "
                "averaged over the batch only")
    final = final_loss(losses)
    if final >= setup.bound:
        floor = setup.blind_floor
        hint = (f" - no better than a model that ignores the image (ln {setup.batch_size} = "
                f"{floor:.2f}); check that the image features reach h0 / the attention"
                if final >= floor - 0.02 else "")
        return (f"{what}: final loss {final:.3f} (mean of the last {FINAL_WINDOW} of "
                f"{setup.iterations} iterations, from {losses[0]:.3g}) is not below "
                f"{setup.bound:g}{hint}")
    return None


#: What a passing overfit check says where no reference verified it (a student's own run).
UNVERIFIED = ("unverified here: the loss curve is what your module reported; when your "
              "instructor grades it, the grader evaluates the trained parameters itself")


def judge_verified(verified: dict, setup: OverfitSetup, reported: float) -> str | None:
    """Why the grader's own evaluation of the trained parameters fails the check, or None.

    ``verified`` is ``probes.trained_loss``'s reply, computed by the reference with
    the submission's trained parameters; ``reported`` the final loss the training
    claimed. Only the verified loss decides.
    """
    what = f"overfitting {setup.cell_type}"
    loss = verified.get("loss") if isinstance(verified, dict) else None
    if not isinstance(loss, (int, float)) or not math.isfinite(loss):
        given = verified.get("given", 0) if isinstance(verified, dict) else 0
        return (f"{what}: the training reported a final loss of {reported:.3f}, but its trained "
                f"parameters ({given} tensors) cannot be used in the course's model: the layers "
                "must be the ones CaptioningRNN.__init__ describes (feature projection, "
                "WordEmbedding, the cell, output projection)")
    if loss > setup.bound:
        return (f"{what}: the training reported a final loss of {reported:.3f}, but its trained "
                f"parameters give {loss:.3f} in the course's model (not below {setup.bound:g}): "
                "the model your module trains computes something other than the course's "
                "CaptioningRNN (see the captioning_loss checks)")
    return None
