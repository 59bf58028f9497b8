"""The one rubric loader (grader/rubric.py): points_each, visibility from the id's suffix."""

from __future__ import annotations

import pytest

from grader import rubric as rb
from grader.harness import plugin
from grader.results import order, render


def _write(tmp_path, checks: str, extra: str = ""):
    path = tmp_path / "rubric.toml"
    path.write_text(f"[checks]\n{checks}\n{extra}", encoding="utf-8")
    return path


def test_everything_reads_the_rubric_through_the_one_loader():
    assert plugin.load_rubric is rb.load_rubric and plugin.load_rubric_table is rb.load_rubric_table
    assert plugin.RUBRIC_PATH == order.RUBRIC == rb.RUBRIC_PATH
    assert render.hidden_checks_visibility is rb.hidden_checks_visibility


def test_points_each_expands_to_the_entries_written_one_by_one(tmp_path):
    each = _write(tmp_path, 'a_public = { points = 1 }\n'
                  'overfit = { points_each = 3, params = ["rnn", "lstm"], slow = true, '
                  'requires = { rnn = "the rnn one", lstm = "the lstm one" } }\n'
                  'b_hidden = { points_each = 0.5, params = ["float32", "float64"], '
                  'target = "f", requires = "f works in {param}" }\n'
                  'z_public = { points = 2 }')
    spelled = tmp_path / "spelled"
    spelled.mkdir()
    one_by_one = _write(spelled, 'a_public = { points = 1, visibility = "public" }\n'
                        '"overfit[rnn]" = { points = 3, slow = true, requires = "the rnn one" }\n'
                        '"overfit[lstm]" = { points = 3, slow = true, requires = "the lstm one" }\n'
                        '"b_hidden[float32]" = { points = 0.5, visibility = "hidden", '
                        'target = "f", requires = "f works in float32" }\n'
                        '"b_hidden[float64]" = { points = 0.5, target = "f", '
                        'requires = "f works in float64" }\n'
                        'z_public = { points = 2 }')
    loaded = rb.load_rubric(each)
    assert list(loaded.items()) == list(rb.load_rubric(one_by_one).items())  # order too
    assert list(loaded) == ["a_public", "overfit[rnn]", "overfit[lstm]", "b_hidden[float32]",
                            "b_hidden[float64]", "z_public"]
    assert loaded["overfit[lstm]"] == {"points": 3, "slow": True, "requires": "the lstm one",
                                       "visibility": "public"}
    assert rb.check_rank(each)["b_hidden[float64]"] == 4


@pytest.mark.parametrize("cid, visibility", [("a_public", "public"), ("a_hidden", "hidden"),
                                             ("a_hidden[x]", "hidden"), ("overfit[rnn]", "public"),
                                             ("notebook_runs", "public")])
def test_visibility_comes_from_the_suffix_where_the_rubric_leaves_it_out(tmp_path, cid,
                                                                         visibility):
    assert rb.load_rubric(_write(tmp_path, f'"{cid}" = {{ points = 1 }}'))[cid]["visibility"] \
        == visibility


@pytest.mark.parametrize("line", ['a_hidden = { points = 1, visibility = "public" }',
                                  'a_public = { points = 1, visibility = "hidden" }',
                                  'a_public = { points = 1, visibility = "after_due_date" }',
                                  'b_hidden = { points_each = 1, params = ["x"], '
                                  'visibility = "public" }'])
def test_a_visibility_that_disagrees_with_the_suffix_is_refused(tmp_path, line):
    with pytest.raises(rb.RubricError, match=r"ends in _(hidden|public): rename the check or "
                                             r"drop the visibility"):
        rb.load_rubric(_write(tmp_path, line))


def test_after_due_date_is_a_hidden_check_s_visibility(tmp_path):
    path = _write(tmp_path, 'a_hidden = { points = 1, visibility = "after_due_date" }')
    assert rb.load_rubric(path)["a_hidden"]["visibility"] == "after_due_date"


@pytest.mark.parametrize("line, why", [
    ('a = { points = 1, points_each = 1, params = ["x"] }', "both points and points_each"),
    ('a = { points_each = 1 }', "params"),
    ('a = { points_each = 1, params = [] }', "params"),
    ('a = { points_each = 1, params = ["x", "x"] }', "each once"),
    ('"a[x]" = { points_each = 1, params = ["y"] }', "without"),
    ('a = { points_each = 1, params = ["x", "y"], requires = { x = "only x" } }',
     "one text per parameter"),
    ('"a[x]" = { points = 1 }\na = { points_each = 1, params = ["x"] }', "twice"),
    ('a = { target = "f" }', "no points"),
    ('a = { points = 2, advisory = true }', "advisory"),
    ('a = { points = 1, visibility = "secret" }', "use one of"),
])
def test_malformed_entries_are_refused_with_the_fix(tmp_path, line, why):
    with pytest.raises(rb.RubricError, match=why):
        rb.load_rubric(_write(tmp_path, line))


def test_the_shipped_rubric_states_each_visibility_once():
    raw = rb.read()["checks"]
    for name, entry in raw.items():
        if rb.suffix_visibility(name) is not None:
            assert "visibility" not in entry, f"{name}: its suffix gives the visibility"
    for cid, entry in rb.load_rubric().items():
        implied = rb.suffix_visibility(cid)
        assert implied is None or (entry["visibility"] == "public") == (implied == "public")
    assert any("points_each" in e for e in raw.values())


def test_self_reported_checks_stay_unscored_unless_opted_in(tmp_path):
    line = 'nb = { points = 3, self_reported = true }'
    assert rb.load_rubric(_write(tmp_path, line))["nb"] == {
        "points": 0, "self_reported": True, "unscored": True, "visibility": "public"}
    opted = _write(tmp_path, line, "[self_reported]\nscore = true\n")
    assert rb.load_rubric(opted)["nb"]["points"] == 3
