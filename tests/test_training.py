"""The shared training loop, caption decoding, the encoder's feature memo, and the plots."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
from torch import nn

from grader.course import encoder, overfit, plots
from grader.course.training import decode_captions, freeze_image_encoder, train_captioner


class Recorder(nn.Module):
    """A stand-in model that records the batches it sees and has one trainable weight."""

    def __init__(self):
        super().__init__()
        self.image_encoder = nn.Linear(2, 2)  # must end up frozen and in eval mode
        self.w = nn.Parameter(torch.ones(()))
        self.seen: list[list[int]] = []

    def forward(self, images, captions):
        self.seen.append(captions[:, 0].tolist())
        return (self.w - 3.0) ** 2 * images.float().mean()


def test_batches_in_order_last_partial_dropped_one_loss_per_iteration():
    model = Recorder()
    images = torch.ones(10, 3, 4, 4)
    captions = torch.arange(10).view(10, 1).repeat(1, 3)
    _, losses = train_captioner(model, images, captions, num_epochs=2, batch_size=4,
                                learning_rate=0.1, progress=False)
    assert model.seen == [[0, 1, 2, 3], [4, 5, 6, 7]] * 2  # samples 8 and 9 never used
    assert len(losses) == 4 and all(isinstance(x, float) for x in losses)
    assert losses[-1] < losses[0]  # AdamW moves w towards 3
    assert not model.image_encoder.training
    assert not any(p.requires_grad for p in model.image_encoder.parameters())


def test_learning_rate_decays_per_epoch():
    # lr_decay = 0: after the first epoch the learning rate is 0 and w stops moving.
    model = Recorder()
    images, captions = torch.ones(4, 3, 2, 2), torch.zeros(4, 2, dtype=torch.long)
    _, losses = train_captioner(model, images, captions, num_epochs=3, batch_size=2,
                                learning_rate=0.1, lr_decay=0.0, progress=False)
    assert losses[0] != losses[1]  # two iterations in the first epoch
    assert losses[2] == losses[3] == losses[4] == losses[5]


def test_training_rejects_what_cannot_be_trained():
    images, captions = torch.ones(4, 3, 2, 2), torch.zeros(4, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="larger than"):
        train_captioner(Recorder(), images, captions, 1, 8, 0.1, progress=False)

    class Detached(Recorder):
        def forward(self, images, captions):
            return super().forward(images, captions).detach()

    with pytest.raises(RuntimeError, match="graph is cut"):
        train_captioner(Detached(), images, captions, 1, 2, 0.1, progress=False)


def test_decode_captions_follows_the_course():
    words = ["<NULL>", "<START>", "<END>", "<UNK>", "a", "cat"]
    assert decode_captions(torch.tensor([1, 4, 5, 2, 0]), words) == "<START> a cat <END>"
    assert decode_captions(torch.tensor([[4, 0, 5, 2, 4], [5, 5, 0, 0, 0]]), words) == \
        ["a cat <END>", "cat cat"]


def _reference_rnn(ref, cell: str = "rnn"):
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        return ref.CaptioningRNN(overfit.vocab(), input_dim=400, wordvec_dim=16, hidden_dim=24,
                                 cell_type=cell, image_encoder_pretrained=False, ignore_index=0)


@pytest.fixture
def grader_encoder_ref(ref, monkeypatch):
    monkeypatch.setattr(ref, "ImageEncoder", encoder.ImageEncoder)
    return ref


@pytest.mark.parametrize("cell", ["rnn", "attn"])
def test_memoised_features_give_the_same_training(grader_encoder_ref, cell):
    images, captions = overfit.overfit_set()
    runs = []
    for memo in (False, True):
        model = _reference_rnn(grader_encoder_ref, cell)
        with encoder.memoised_features() if memo else contextlib.nullcontext():
            _, losses = train_captioner(model, images, captions, 6, 32, 1e-3, progress=False)
        runs.append(losses)
    assert runs[0] == runs[1]  # bit-identical, not merely close


def test_memo_misses_when_the_encoder_weights_change(grader_encoder_ref):
    images = overfit.overfit_set()[0][:4]
    model = _reference_rnn(grader_encoder_ref)
    enc = freeze_image_encoder(model)
    with encoder.memoised_features():
        first = enc(images)
        assert torch.equal(enc(images), first)  # a hit
        with torch.no_grad():
            next(enc.parameters()).mul_(1.5)
        changed = enc(images)
    assert not torch.equal(changed, first)
    with torch.no_grad():
        uncached = enc(images)
    assert torch.equal(changed, uncached)


def test_plots_draw_what_they_are_given(tmp_path):
    ax = plots.plot_losses({"rnn": [3.0, 2.0, 1.0], "lstm": [3.0, 2.5]})
    assert [line.get_label() for line in ax.get_lines()] == ["rnn", "lstm"]
    assert list(ax.get_lines()[1].get_ydata()) == [3.0, 2.5]

    image = torch.zeros(3, 112, 112, dtype=torch.uint8)
    weights = torch.zeros(4, 4)
    weights[0, 3] = 1.0  # top right
    ax = plots.attention_visualizer(image, weights, "circle")
    overlay = ax.get_images()[1].get_array()
    assert overlay.shape == (112, 112) and ax.get_title() == "circle"
    assert overlay[10, 100] > overlay[100, 10]  # the bright region is where the weight is

    fig = plots.attention_figure(image, ["a", "red", "circle"], torch.rand(3, 4, 4))
    assert len(fig.axes) == 3
    fig = plots.captioned_images(torch.zeros(2, 3, 112, 112, dtype=torch.uint8),
                                 ["a red circle", "a blue square on the left"])
    fig.savefig(tmp_path / "captions.png")
    assert (tmp_path / "captions.png").stat().st_size > 1000
