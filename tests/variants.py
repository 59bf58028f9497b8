"""Single-bug variants of the reference: the mistakes students really make.

Each variant is one text substitution in ``reference/rnn_lstm_captioning.py``.
They exist to prove the catalogue catches each mistake where it should (a bug
that scores full marks is a grader bug), and to document which checks fire.
``old`` must occur exactly once in the reference, so a change to the reference
breaks the catalogue loudly instead of silently producing an unmutated copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REFERENCE = Path(__file__).resolve().parent.parent / "reference" / "rnn_lstm_captioning.py"


@dataclass(frozen=True)
class Variant:
    """One bug: where it goes in the reference and which checks must lose points."""

    name: str
    description: str
    old: str
    new: str
    #: Check ids (as in grader/checks/rubric.toml) that must not pass for this bug.
    catch: tuple[str, ...]
    #: Check ids that must still pass (the bug is only a rule violation, not wrong values).
    must_pass: tuple[str, ...] = ()
    #: Advisory check ids (0 points) that must report it: behaviour the handout does not
    #: require, or a change to the course's provided code, costs no points.
    advice: tuple[str, ...] = ()
    #: Known grader gaps: checks that ought to catch this bug but do not yet, and why.
    #: Tested as strict xfails, so fixing the grader flags the entry for promotion to catch.
    gaps: tuple[str, ...] = ()
    gap_reason: str = ""

    def apply(self, source: str) -> str:
        """The reference source with this bug in it (fails if ``old`` is not unique)."""
        count = source.count(self.old)
        assert count == 1, f"variant {self.name}: `old` occurs {count} times in the reference"
        return source.replace(self.old, self.new)


def reference_source() -> str:
    return REFERENCE.read_text()


_COURSE_ATTN_SATURATED = (
    "the course fill (every parameter = linspace(-1.4, 1.3)) makes A ~ 1e3, so every gate of "
    "the attention LSTM saturates and the course attn loss ignores the words and the attention"
)
_H0_SATURATED = (
    "h0 = proj(features) is ~900 under the course fill (every parameter = linspace(-1.4, 1.3)), "
    "so the first step saturates and only the signs of h0 matter; the public checks mirror the "
    "course's inputs, and the hidden gradient checks (fan-in-scaled fill) catch it"
)

_LSTM_CELL = """\
        H = prev_h.shape[1]
        order = torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H),
                           torch.arange(2 * H, 3 * H)]).to(x.device)  # i,f,o,g -> i,f,g,o
        next_h, next_c = torch.lstm_cell(x, (prev_h, prev_c), self.Wx.T[order],
                                         self.Wh.T[order], self.b[order],
                                         torch.zeros_like(self.b))
"""

VARIANTS: list[Variant] = [
    # -- vanilla RNN ------------------------------------------------------------------------
    Variant(
        "rnn_step_no_tanh",
        "rnn_step_forward forgets the tanh: next_h = x Wx + prev_h Wh + b",
        "next_h = torch.tanh(x @ Wx + prev_h @ Wh + b)",
        "next_h = x @ Wx + prev_h @ Wh + b",
        ("rnn_step_forward_public", "rnn_forward_public", "rnn_step_forward_hidden[float64]",
         "rnn_module_public"),
    ),
    Variant(
        "rnn_dtanh_double_tanh",
        "rnn_step_backward applies tanh again to the cached output: 1 - tanh(next_h)^2",
        "da = dnext_h * (1 - next_h**2)",
        "da = dnext_h * (1 - torch.tanh(next_h) ** 2)",
        ("rnn_step_backward_public", "rnn_backward_public", "rnn_backward_autograd_public",
         "rnn_step_backward_hidden[float64]"),
    ),
    Variant(
        "rnn_step_backward_db_before_tanh",
        "rnn_step_backward sums the upstream gradient for db, skipping the tanh derivative",
        "db = da.sum(dim=0)",
        "db = dnext_h.sum(dim=0)",
        ("rnn_step_backward_public", "rnn_backward_public", "rnn_step_backward_hidden[float64]"),
    ),
    Variant(
        "rnn_step_backward_dWh_next_h",
        "rnn_step_backward uses next_h instead of prev_h for dWh",
        "dWh = prev_h.T @ da",
        "dWh = next_h.T @ da",
        ("rnn_step_backward_public", "rnn_backward_public", "rnn_backward_autograd_public"),
    ),
    Variant(
        "rnn_forward_always_h0",
        "rnn_forward feeds h0 to every step instead of the previous hidden state",
        "prev_h, step_cache = rnn_step_forward(x[:, t], prev_h, Wx, Wh, b)",
        "prev_h, step_cache = rnn_step_forward(x[:, t], h0, Wx, Wh, b)",
        ("rnn_forward_public", "rnn_module_public", "rnn_forward_hidden[n1-float64]"),
    ),
    Variant(
        "rnn_backward_no_carry",
        "rnn_backward ignores the gradient flowing back from step t + 1 (uses dh[:, t] only)",
        "rnn_step_backward(dh[:, t] + dprev_h, cache[t])",
        "rnn_step_backward(dh[:, t], cache[t])",
        ("rnn_backward_public", "rnn_backward_autograd_public", "rnn_backward_hidden[float64]"),
    ),
    Variant(
        "rnn_backward_dWx_overwritten",
        "rnn_backward overwrites dWx at each step instead of accumulating it",
        "dWx += dWx_t",
        "dWx = dWx_t",
        ("rnn_backward_public", "rnn_backward_autograd_public", "rnn_backward_hidden[float64]"),
    ),
    Variant(
        "rnn_backward_float32_buffer",
        "rnn_backward allocates dx with torch.zeros(...) (float32) and fills it with float64",
        "dx = dh.new_zeros(N, T, x0.shape[1])",
        "dx = torch.zeros(N, T, x0.shape[1])",
        ("rnn_backward_public", "rnn_backward_autograd_public", "rnn_backward_hidden[float64]"),
    ),
    # -- word embedding and loss --------------------------------------------------------------
    Variant(
        "embedding_detached",
        "WordEmbedding indexes a detached copy of W_embed, so no gradient reaches it",
        "out = self.W_embed[x]",
        "out = self.W_embed.detach()[x]",
        ("word_embedding_hidden", "captioning_gradients_hidden[rnn]",
         "captioning_gradients_hidden[lstm]", "captioning_gradients_hidden[attn]"),
        must_pass=("word_embedding_public",),
    ),
    Variant(
        "embedding_data",
        "WordEmbedding indexes W_embed.data, cutting the autograd graph",
        "out = self.W_embed[x]",
        "out = self.W_embed.data[x]",
        ("word_embedding_hidden", "captioning_gradients_hidden[rnn]"),
        must_pass=("word_embedding_public",),
    ),
    Variant(
        "embedding_library",
        "WordEmbedding uses F.embedding (right values, but the library does the work)",
        "out = self.W_embed[x]",
        "out = F.embedding(x, self.W_embed)",
        ("from_scratch_public",),
        must_pass=("word_embedding_public", "word_embedding_hidden"),
    ),
    Variant(
        "loss_ignore_index_dropped",
        "temporal_softmax_loss never passes ignore_index to F.cross_entropy",
        "ignore_index=-100 if ignore_index is None else ignore_index,",
        "ignore_index=-100,",
        ("temporal_softmax_loss_public", "temporal_softmax_loss_hidden[null]",
         "captioning_loss_public[rnn]", "captioning_ignore_index_hidden"),
        must_pass=("temporal_softmax_loss_hidden[none]",),
    ),
    Variant(
        "loss_divided_by_NT",
        "temporal_softmax_loss averages over time too: sum / (N * T)",
        'reduction="sum",\n    ) / N',
        'reduction="sum",\n    ) / (N * x.shape[1])',
        ("temporal_softmax_loss_public", "temporal_softmax_loss_hidden[null]",
         "captioning_loss_public[rnn]"),
        advice=("temporal_softmax_loss_hidden[none]",),
    ),
    Variant(
        "loss_batch_of_means",
        "temporal_softmax_loss takes each caption's mean loss over time, then the batch mean",
        'reduction="sum",\n    ) / N',
        'reduction="none",\n    ).reshape(N, -1).mean(dim=1).mean()',
        ("temporal_softmax_loss_public", "temporal_softmax_loss_hidden[null]",
         "captioning_loss_public[lstm]"),
        advice=("temporal_softmax_loss_hidden[none]",),
    ),
    Variant(
        "loss_default_mean",
        "temporal_softmax_loss keeps F.cross_entropy's default mean over the kept tokens",
        'reduction="sum",\n    ) / N',
        'reduction="mean",\n    )',
        ("temporal_softmax_loss_public", "temporal_softmax_loss_hidden[null]",
         "captioning_loss_public[attn]"),
    ),
    Variant(
        "loss_not_divided_by_N",
        "temporal_softmax_loss returns the plain sum, not divided by the batch size",
        'reduction="sum",\n    ) / N',
        'reduction="sum",\n    )',
        ("temporal_softmax_loss_public", "temporal_softmax_loss_hidden[null]",
         "captioning_loss_public[rnn]"),
    ),
    # -- CaptioningRNN ------------------------------------------------------------------------
    Variant(
        "captioning_off_by_one",
        "CaptioningRNN.forward reads captions[:, 1:] as inputs (the targets themselves)",
        "captions_in, captions_out = captions[:, :-1], captions[:, 1:]",
        "captions_in, captions_out = captions[:, 1:], captions[:, 1:]",
        ("captioning_loss_public[rnn]", "captioning_loss_public[lstm]",
         "captioning_gradients_hidden[attn]", "captioning_ignore_index_hidden"),
        gaps=("captioning_loss_public[attn]", "captioning_loss_float64_hidden[attn]"),
        gap_reason=_COURSE_ATTN_SATURATED,
    ),
    Variant(
        "captioning_max_pooled_h0",
        "CaptioningRNN.forward max-pools the features for h0 instead of averaging them",
        "h0 = self.feature_proj(features.mean(dim=(2, 3)))  # (N, H)",
        "h0 = self.feature_proj(features.amax(dim=(2, 3)))  # (N, H)",
        ("captioning_gradients_hidden[lstm]", "captioning_gradients_hidden[rnn]"),
        gaps=("captioning_loss_public[rnn]", "captioning_loss_public[lstm]"),
        gap_reason=_H0_SATURATED,
    ),
    Variant(
        "captioning_sum_pooled_h0",
        "CaptioningRNN.forward sums the features over the 4x4 grid instead of averaging them",
        "h0 = self.feature_proj(features.mean(dim=(2, 3)))  # (N, H)",
        "h0 = self.feature_proj(features.sum(dim=(2, 3)))  # (N, H)",
        ("captioning_gradients_hidden[lstm]", "captioning_gradients_hidden[rnn]"),
        gaps=("captioning_loss_public[rnn]", "captioning_loss_public[lstm]"),
        gap_reason=_H0_SATURATED,
    ),
    Variant(
        "captioning_loss_without_ignore_index",
        "CaptioningRNN.forward calls temporal_softmax_loss without its ignore_index",
        "loss = temporal_softmax_loss(scores, captions_out, ignore_index=self.ignore_index)",
        "loss = temporal_softmax_loss(scores, captions_out)",
        ("captioning_loss_public[rnn]", "captioning_loss_public[attn]",
         "captioning_ignore_index_hidden"),
    ),
    Variant(
        "captioning_ignore_null_always",
        "CaptioningRNN stores _null as ignore_index whatever was passed (None ignored nothing); "
        "the handout's TODO says to ignore <NULL>, so only an advisory speaks",
        "self.ignore_index = ignore_index",
        "self.ignore_index = self._null",
        (),
        must_pass=("captioning_loss_public[rnn]", "captioning_attributes_hidden",
                   "captioning_ignore_index_hidden"),
        advice=("captioning_ignore_index_none_hidden",),
    ),
    Variant(
        "captioning_no_cell_type_validation",
        "CaptioningRNN does not raise ValueError for an unknown cell_type (KeyError later); "
        "that check is the course's provided code, so only an advisory speaks",
        "raise ValueError(f'Invalid cell_type \"{cell_type}\"')",
        "pass",
        (),
        advice=("captioning_attributes_hidden",),
    ),
    Variant(
        "sample_start_in_column0",
        "sample records the input word of each step, so column 0 is <START>",
        "            word = self.output_proj(h).argmax(dim=1)\n"
        "            captions[:, t] = word\n",
        "            captions[:, t] = word\n"
        "            word = self.output_proj(h).argmax(dim=1)\n",
        ("sample_hidden[rnn]", "sample_hidden[lstm]", "sample_hidden[attn]",
         "sample_n1_hidden[rnn]"),
    ),
    Variant(
        "sample_not_fed_back",
        "sample never feeds the chosen word back: every step reads <START>",
        "            word = self.output_proj(h).argmax(dim=1)\n"
        "            captions[:, t] = word\n",
        "            captions[:, t] = self.output_proj(h).argmax(dim=1)\n",
        ("sample_hidden[rnn]", "sample_hidden[lstm]", "sample_hidden[attn]",
         "sample_n1_hidden[attn]"),
    ),
    Variant(
        "sample_lstm_c0_is_h0",
        "sample for lstm starts the cell state at h0 instead of zeros",
        "            c = torch.zeros_like(h)\n",
        "            c = h\n",
        ("sample_hidden[lstm]", "sample_n1_hidden[lstm]"),
        must_pass=("sample_hidden[rnn]",),
    ),
    Variant(
        "sample_float_captions",
        "sample builds the caption buffer with h.new_full, so captions come back as floats",
        "captions = torch.full((N, max_length), self._null, dtype=torch.long, device=h.device)",
        "captions = h.new_full((N, max_length), self._null)",
        ("sample_hidden[rnn]", "sample_hidden[lstm]", "sample_hidden[attn]",
         "sample_n1_hidden[rnn]"),
    ),
    Variant(
        "sample_attn_zero_state",
        "sample for attn starts from h = c = 0 instead of the mean of A",
        "            h = c = A.mean(dim=(2, 3))\n        else:",
        "            h = c = torch.zeros_like(A[:, :, 0, 0])\n        else:",
        ("sample_hidden[attn]",),
        must_pass=("sample_hidden[rnn]", "captioning_loss_public[attn]"),
    ),
    # -- LSTM ---------------------------------------------------------------------------------
    Variant(
        "lstm_gate_order_ifgo",
        "the LSTM splits the activation as i, f, g, o (PyTorch's order) instead of i, f, o, g",
        "i, f, o, g = a.chunk(4, dim=1)",
        "i, f, g, o = a.chunk(4, dim=1)",
        ("lstm_step_forward_public", "lstm_forward_public", "attention_lstm_step_forward_public",
         "captioning_loss_public[lstm]", "lstm_step_forward_hidden[float64]"),
    ),
    Variant(
        "lstm_sigmoid_g",
        "the candidate gate g goes through sigmoid instead of tanh",
        "torch.sigmoid(o), torch.tanh(g)",
        "torch.sigmoid(o), torch.sigmoid(g)",
        ("lstm_step_forward_public", "attention_lstm_step_forward_public",
         "lstm_gradients_hidden"),
    ),
    Variant(
        "lstm_no_tanh_on_cell",
        "next_h = o * next_c, forgetting the tanh of the new cell state",
        "next_h = o * torch.tanh(next_c)",
        "next_h = o * next_c",
        ("lstm_step_forward_public", "lstm_forward_public", "attention_lstm_step_forward_public",
         "lstm_step_forward_hidden[float32]"),
    ),
    Variant(
        "lstm_c0_is_h0",
        "LSTM.forward starts the cell state at h0 instead of zeros",
        "h, c = h0, torch.zeros_like(h0)",
        "h, c = h0, h0",
        ("lstm_forward_public", "lstm_forward_hidden[float64]", "lstm_gradients_hidden",
         "captioning_loss_public[lstm]"),
    ),
    Variant(
        "lstm_library_cell",
        "LSTM.step_forward calls torch.lstm_cell with the gates permuted (right values)",
        "        a = x @ self.Wx + prev_h @ self.Wh + self.b  # (N, 4H)\n"
        "        next_h, next_c = _lstm_update(a, prev_c)\n",
        _LSTM_CELL,
        ("from_scratch_public",),
        must_pass=("lstm_step_forward_public", "lstm_forward_public", "lstm_gradients_hidden",
                   "captioning_loss_public[lstm]"),
    ),
    # -- attention ----------------------------------------------------------------------------
    Variant(
        "attention_unscaled",
        "dot_product_attention does not divide the scores by sqrt(H)",
        'scores = torch.einsum("nh,nhp->np", prev_h, A_flat) / math.sqrt(H)',
        'scores = torch.einsum("nh,nhp->np", prev_h, A_flat)',
        ("dot_product_attention_public", "dot_product_attention_hidden[float64]",
         "attention_lstm_forward_public", "captioning_gradients_hidden[attn]"),
        gaps=("captioning_loss_public[attn]",),
        gap_reason=_COURSE_ATTN_SATURATED,
    ),
    Variant(
        "attention_softmax_wrong_axis",
        "dot_product_attention takes the softmax over the batch axis instead of the positions",
        "weights = scores.softmax(dim=1)",
        "weights = scores.softmax(dim=0)",
        ("dot_product_attention_public", "dot_product_attention_hidden[float64]",
         "attention_lstm_forward_public", "attention_gradients_hidden"),
    ),
    Variant(
        "attention_weights_column_major",
        "dot_product_attention reshapes the 16 weights to 4x4 in column-major order",
        "attn_weights = weights.reshape(N, h_a, w_a)",
        "attn_weights = weights.reshape(N, w_a, h_a).transpose(1, 2)",
        ("dot_product_attention_public", "dot_product_attention_hidden[float64]",
         "sample_hidden[attn]"),
        must_pass=("attention_lstm_forward_public",),
    ),
    Variant(
        "attention_unnormalised_sum",
        "dot_product_attention averages A with the raw scores instead of the softmax weights",
        'attn = torch.einsum("nhp,np->nh", A_flat, weights)',
        'attn = torch.einsum("nhp,np->nh", A_flat, scores)',
        ("dot_product_attention_public", "attention_gradients_hidden",
         "attention_lstm_forward_public"),
    ),
    Variant(
        "attention_squeeze_n1",
        "dot_product_attention uses bmm(...).squeeze(), which also drops the batch axis at N = 1",
        'scores = torch.einsum("nh,nhp->np", prev_h, A_flat) / math.sqrt(H)',
        "scores = torch.bmm(prev_h.unsqueeze(1), A_flat).squeeze() / math.sqrt(H)",
        ("dot_product_attention_hidden[float32]", "dot_product_attention_hidden[float64]",
         "attention_lstm_forward_hidden[float64]", "sample_n1_hidden[attn]"),
        must_pass=("dot_product_attention_public", "sample_hidden[attn]"),
    ),
    Variant(
        "attention_lstm_no_Wattn",
        "AttentionLSTM.step_forward forgets the attn Wattn term",
        "a = x @ self.Wx + prev_h @ self.Wh + attn @ self.Wattn + self.b",
        "a = x @ self.Wx + prev_h @ self.Wh + self.b",
        ("attention_lstm_step_forward_public", "attention_lstm_forward_public",
         "attention_lstm_gradients_hidden", "captioning_gradients_hidden[attn]"),
        gaps=("captioning_loss_public[attn]",),
        gap_reason=_COURSE_ATTN_SATURATED,
    ),
    Variant(
        "attention_lstm_zero_state",
        "AttentionLSTM.forward starts from h = c = 0 instead of the mean of A",
        "        h = c = A.mean(dim=(2, 3))\n        hs = []",
        "        h = c = torch.zeros_like(A[:, :, 0, 0])\n        hs = []",
        ("attention_lstm_forward_public", "attention_lstm_forward_hidden[float64]",
         "attention_lstm_gradients_hidden", "captioning_loss_public[attn]"),
    ),
]


def by_name() -> dict[str, Variant]:
    return {v.name: v for v in VARIANTS}


def write_variant(variant: Variant, directory: Path) -> Path:
    """Write the mutated module as ``<directory>/rnn_lstm_captioning.py``."""
    path = Path(directory) / "rnn_lstm_captioning.py"
    path.write_text(variant.apply(reference_source()))
    return path


def only_expression(ids: tuple[str, ...] | list[str]) -> str:
    """A pytest ``-k`` expression selecting exactly these check ids.

    ``test_<id>`` is a substring of no other check's name (a check id is not a
    tail of another one after ``test_``), so ``or`` of them selects just these.
    """
    return " or ".join(f"test_{cid}" for cid in ids)
