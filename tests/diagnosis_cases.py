"""Submissions whose mistakes are known, for judging the diagnoses (grader.diagnosis).

Each case is a module source and the set of misconception ids a perfect diagnosis
names (empty: a correct solution, or a mistake outside the catalogue). Sources:

- ``mutants``: every catalogue entry's own mutation of the reference;
- ``pairs``: two entries' mutations in different functions at once;
- ``variants``: ``tests/variants.py`` (their mistake's entry, or none when outside it);
- ``buggy``: ``tests/buggy.py`` (student-style code by authors who never read the
  reference, stored as edits on the student solutions; its manifest lists the mistakes);
- ``correct``: the alternative-style solution and the independent student solutions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from grader.authoring import fingerprints
from tests import buggy as buggy_corpus
from tests.variants import REFERENCE, VARIANTS, reference_source

TESTS = Path(__file__).resolve().parent

#: The catalogue entry each variant's mistake is (None: outside the catalogue).
VARIANT_MISCONCEPTION: dict[str, str | None] = {
    "rnn_step_no_tanh": "rnn_step_no_tanh",
    "rnn_dtanh_double_tanh": "rnn_dtanh_of_output",
    "rnn_step_backward_db_before_tanh": None,  # only db skips the derivative
    "rnn_step_backward_dWh_next_h": "rnn_dWh_uses_next_h",
    "rnn_forward_always_h0": "rnn_forward_h0_every_step",
    "rnn_backward_no_carry": "rnn_backward_no_carry",
    "rnn_backward_dWx_overwritten": "rnn_backward_grads_overwritten",
    "rnn_backward_float32_buffer": "float32_in_float64",
    "embedding_detached": "embedding_no_gradient",
    "embedding_data": "embedding_no_gradient",
    "embedding_library": None,  # right values: only the from-scratch rule fails
    "loss_ignore_index_dropped": "loss_ignore_index_not_passed",
    "loss_divided_by_NT": "loss_divided_by_NT",
    "loss_batch_of_means": "loss_divided_by_NT",  # the same values: mean over all T steps
    "loss_default_mean": "loss_mean_over_tokens",
    "loss_not_divided_by_N": "loss_not_divided_by_N",
    "captioning_off_by_one": "captioning_inputs_off_by_one",
    "captioning_max_pooled_h0": "captioning_h0_max_pooled",
    "captioning_sum_pooled_h0": "captioning_h0_sum_pooled",
    "captioning_loss_without_ignore_index": "captioning_no_ignore_index",
    "captioning_ignore_null_always": None,  # advisory only
    "captioning_no_cell_type_validation": None,  # advisory only
    "sample_start_in_column0": "sample_start_in_first_column",
    "sample_not_fed_back": "sample_word_not_fed_back",
    "sample_lstm_c0_is_h0": "sample_lstm_c0_from_h0",
    "sample_float_captions": None,  # a dtype, named by the check's own message
    "sample_attn_zero_state": "sample_attn_zero_state",
    "lstm_gate_order_ifgo": "lstm_gate_order_ifgo",
    "lstm_sigmoid_g": "lstm_g_sigmoid",
    "lstm_no_tanh_on_cell": "lstm_h_without_tanh",
    "lstm_c0_is_h0": "lstm_c0_from_h0",
    "lstm_library_cell": None,  # right values: only the from-scratch rule fails
    "attention_unscaled": "attention_unscaled",
    "attention_softmax_wrong_axis": "attention_softmax_wrong_axis",
    "attention_weights_column_major": "attention_weights_column_major",
    "attention_unnormalised_sum": "attention_unnormalised",
    "attention_squeeze_n1": None,  # a shape at N = 1, named by the check's own message
    "attention_lstm_no_Wattn": "attention_lstm_no_Wattn",
    "attention_lstm_zero_state": "attention_lstm_zero_state",
}

#: Two mistakes in different functions, each isolated by checks of its own function.
PAIRS: list[tuple[str, str]] = [
    ("rnn_step_no_tanh", "loss_mean_over_tokens"),
    ("rnn_dtanh_of_output", "lstm_g_sigmoid"),
    ("rnn_forward_h0_every_step", "attention_softmax_wrong_axis"),
    ("rnn_backward_no_carry", "attention_unscaled"),
    ("embedding_no_gradient", "lstm_h_without_tanh"),
    ("loss_divided_by_NT", "attention_weights_column_major"),
    ("lstm_gate_order_ifgo", "loss_not_divided_by_N"),
    ("rnn_dWh_uses_next_h", "sample_start_in_first_column"),
    ("rnn_backward_grads_overwritten", "lstm_c0_from_h0"),
    ("attention_unnormalised", "loss_ignore_index_not_passed"),
    ("rnn_step_no_tanh", "attention_lstm_zero_state"),
    ("rnn_dtanh_missing", "captioning_no_ignore_index"),
]


@dataclass(frozen=True)
class Case:
    kind: str
    name: str
    source: str
    expected: frozenset[str]


def mutants() -> list[Case]:
    plan = fingerprints.plan(REFERENCE)
    source = reference_source()
    return [Case("mutant", mid, fingerprints.apply(source, edits, mid), frozenset({mid}))
            for mid, edits in plan.items()]


def pairs() -> list[Case]:
    plan = fingerprints.plan(REFERENCE)
    source = reference_source()
    return [Case("pair", f"{a}+{b}", fingerprints.apply(source, plan[a] + plan[b], f"{a}+{b}"),
                 frozenset({a, b})) for a, b in PAIRS]


def variants() -> list[Case]:
    source = reference_source()
    return [Case("variant", v.name, v.apply(source),
                 frozenset({m} if (m := VARIANT_MISCONCEPTION[v.name]) else set()))
            for v in VARIANTS]


def buggy() -> list[Case]:
    return [Case("buggy", name, buggy_corpus.source(name), frozenset(entry["mistakes"]))
            for name, entry in buggy_corpus.manifest().items()]


def correct() -> list[Case]:
    paths = [TESTS / "solutions" / "alt_style_rnn_lstm_captioning.py",
             *sorted((TESTS / "solutions" / "students").glob("s*.py"))]
    return [Case("correct", p.stem, p.read_text(encoding="utf-8"), frozenset()) for p in paths]


def verdict(expected: frozenset[str], found: set[str]) -> str:
    """right (exactly the mistakes, or nothing for none), partly (some, nothing wrong),
    none (nothing named), wrong (something named that is not there)."""
    if found - expected:
        return "wrong"
    if found == expected:
        return "right"
    return "partly" if found else "none"
