"""Correct variants of the reference: the styles real students hand in, which must lose nothing.

Each is one or more text substitutions in ``reference/rnn_lstm_captioning.py``
that keep the solution correct by the handout (../shared/ASSIGNMENT.md, "What
real students hand in"): the course starter's provided float32 attention
buffer, the one-line loss with ``ignore_index`` passed straight through,
in-place updates of arguments, all three cells built in ``__init__``,
``pretrained=True`` hard-coded, stopping at ``<END>``, ... ``checks`` names
the checks that exercise the change; each must give every point.

``MUTATE_ARGUMENTS`` is appended to a module to make every contract function
and method overwrite every tensor argument after computing its result: a
correct solution that does so must get the same verdicts (the grader never
reuses a tensor it handed to student code).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.variants import reference_source


@dataclass(frozen=True)
class Correct:
    name: str
    description: str
    edits: tuple[tuple[str, str], ...]
    checks: tuple[str, ...]

    def apply(self, source: str) -> str:
        for old, new in self.edits:
            count = source.count(old)
            assert count == 1, f"{self.name}: `{old[:40]}` occurs {count} times in the reference"
            source = source.replace(old, new)
        return source

    def write(self, directory: Path) -> Path:
        path = Path(directory) / "rnn_lstm_captioning.py"
        path.write_text(self.apply(reference_source()))
        return path


_SAMPLE = ("sample_hidden[rnn]", "sample_hidden[lstm]", "sample_hidden[attn]",
           "sample_n1_hidden[rnn]", "sample_n1_hidden[lstm]", "sample_n1_hidden[attn]")
_MODEL = ("captioning_loss_public[rnn]", "captioning_loss_public[lstm]",
          "captioning_loss_public[attn]", "captioning_loss_float64_hidden[rnn]",
          "captioning_loss_float64_hidden[lstm]", "captioning_loss_float64_hidden[attn]",
          "captioning_gradients_hidden[rnn]", "captioning_gradients_hidden[lstm]",
          "captioning_gradients_hidden[attn]", "captioning_ignore_index_hidden")

CORRECT: list[Correct] = [
    Correct(
        "starter_float32_attention_buffer",
        "sample keeps the course starter's attention buffer, float32 whatever the input dtype",
        (("attn_weights_all = h.new_zeros(N, max_length, 4, 4)",
          "attn_weights_all = images.new(N, max_length, 4, 4).fill_(0).float()"),),
        ("sample_hidden[attn]", "sample_n1_hidden[attn]"),
    ),
    Correct(
        "one_line_loss_ignore_index_straight",
        "the loss is the course's one line, ignore_index passed straight to F.cross_entropy",
        (("ignore_index=-100 if ignore_index is None else ignore_index,",
          "ignore_index=ignore_index,"),),
        ("temporal_softmax_loss_public", "temporal_softmax_loss_hidden[null]", *_MODEL),
    ),
    Correct(
        "forward_maps_none_to_null",
        "CaptioningRNN.forward ignores <NULL> when ignore_index is None (the TODO's wording)",
        (("ignore_index=self.ignore_index)",
          "ignore_index=self._null if self.ignore_index is None else self.ignore_index)"),),
        _MODEL,
    ),
    Correct(
        "step_backward_in_place",
        "rnn_step_backward multiplies its argument dnext_h in place",
        (("da = dnext_h * (1 - next_h**2)  # gradient at the pre-activation",
          "dnext_h *= 1 - next_h**2\n    da = dnext_h"),),
        ("rnn_step_backward_public", "rnn_backward_public", "rnn_backward_autograd_public",
         "rnn_step_backward_hidden[float32]", "rnn_step_backward_hidden[float64]",
         "rnn_backward_hidden[float32]", "rnn_backward_hidden[float64]"),
    ),
    Correct(
        "three_cells_in_init",
        "__init__ builds all three cells and both projections, and uses the ones it needs",
        (("""        if cell_type == "attn":
            self.feature_proj = nn.Conv2d(input_dim, hidden_dim, kernel_size=1)
        else:
            self.feature_proj = nn.Linear(input_dim, hidden_dim)""",
          """        self.grid_proj = nn.Conv2d(input_dim, hidden_dim, kernel_size=1)
        self.pooled_proj = nn.Linear(input_dim, hidden_dim)
        self.feature_proj = self.grid_proj if cell_type == "attn" else self.pooled_proj"""),
         ("""        cell = {"rnn": RNN, "lstm": LSTM, "attn": AttentionLSTM}[cell_type]
        self.rnn = cell(wordvec_dim, hidden_dim)""",
          """        self.cells = nn.ModuleDict({"rnn": RNN(wordvec_dim, hidden_dim),
                                    "lstm": LSTM(wordvec_dim, hidden_dim),
                                    "attn": AttentionLSTM(wordvec_dim, hidden_dim)})
        self.rnn = self.cells[cell_type]""")),
        (*_MODEL, *_SAMPLE),
    ),
    Correct(
        "hardcoded_pretrained_and_frozen_cnn",
        "the encoder is always ImageEncoder(pretrained=True), frozen through its `cnn`",
        (("self.image_encoder = ImageEncoder(pretrained=image_encoder_pretrained)",
          "self.image_encoder = ImageEncoder(pretrained=True, verbose=False)\n"
          "        self.image_encoder.cnn.requires_grad_(False)"),),
        (*_MODEL, "sample_hidden[rnn]"),
    ),
    Correct(
        "sample_stops_at_end",
        "sample leaves <NULL> after a caption's <END> and stops when every caption ended",
        (("""            word = self.output_proj(h).argmax(dim=1)
            captions[:, t] = word""",
          """            word = self.output_proj(h).argmax(dim=1)
            captions[:, t] = torch.where(done, torch.full_like(word, self._null), word)
            done = done | (word == self._end)
            if bool(done.all()):
                break"""),
         ("word = torch.full((N,), self._start, dtype=torch.long, device=h.device)",
          "word = torch.full((N,), self._start, dtype=torch.long, device=h.device)\n"
          "        done = torch.zeros(N, dtype=torch.bool, device=h.device)")),
        _SAMPLE,
    ),
]


MUTATE_ARGUMENTS = '''

# --- appended by tests/correct_variants.py: every contract function and method works
# on copies of its tensor arguments, then overwrites the caller's tensors in place.
import functools as _functools

_DEPTH = [0]


def _overwrite_arguments(fn):
    @_functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if _DEPTH[0]:
            return fn(*args, **kwargs)  # only the grader's own calls
        originals = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        copy = (lambda a: a.clone() if isinstance(a, torch.Tensor) else a)
        _DEPTH[0] += 1
        try:
            result = fn(*[copy(a) for a in args], **{k: copy(v) for k, v in kwargs.items()})
        finally:
            _DEPTH[0] -= 1
        with torch.no_grad():
            for a in originals:
                a.data.fill_(float("nan") if a.is_floating_point() else 1)
        return result
    return wrapper


# Spelled out, not looped over globals(): a student who wrapped functions would write
# it this way, and names computed at run time are (rightly) sent for review.
rnn_step_forward = _overwrite_arguments(rnn_step_forward)
rnn_step_backward = _overwrite_arguments(rnn_step_backward)
rnn_forward = _overwrite_arguments(rnn_forward)
rnn_backward = _overwrite_arguments(rnn_backward)
temporal_softmax_loss = _overwrite_arguments(temporal_softmax_loss)
dot_product_attention = _overwrite_arguments(dot_product_attention)
RNN.forward = _overwrite_arguments(RNN.forward)
RNN.step_forward = _overwrite_arguments(RNN.step_forward)
LSTM.forward = _overwrite_arguments(LSTM.forward)
LSTM.step_forward = _overwrite_arguments(LSTM.step_forward)
AttentionLSTM.forward = _overwrite_arguments(AttentionLSTM.forward)
AttentionLSTM.step_forward = _overwrite_arguments(AttentionLSTM.step_forward)
WordEmbedding.forward = _overwrite_arguments(WordEmbedding.forward)
CaptioningRNN.forward = _overwrite_arguments(CaptioningRNN.forward)
CaptioningRNN.sample = _overwrite_arguments(CaptioningRNN.sample)
'''
