"""The buggy solutions' manifest (tests/solutions/buggy/manifest.toml): every entry is a
student solution with edits that apply and make a module that compiles. Fast: no grading."""

from __future__ import annotations

import pytest

from tests import buggy

NAMES = buggy.names()


def test_the_manifest_has_the_24_entries_and_no_whole_copies():
    assert len(NAMES) == 24
    assert not list(buggy.MANIFEST.parent.glob("*.py"))


@pytest.mark.parametrize("name", NAMES)
def test_entry_applies_changes_its_base_and_compiles(name, tmp_path):
    entry = buggy.manifest()[name]
    assert set(entry) >= {"base", "mistakes", "describe", "edits"}, entry
    base = buggy.base_path(name)
    assert base.is_file(), base
    base_text = base.read_text(encoding="utf-8")
    assert entry["edits"], name
    for k, edit in enumerate(entry["edits"], 1):
        assert set(edit) == {"old", "new"}, (name, k)
        assert edit["old"] != edit["new"], (name, k)
        assert base_text.count(edit["old"]) == 1, (name, k, edit["old"])  # in the base itself
    source = buggy.source(name)  # asserts each old is unique where it is applied, in order
    assert source != base_text
    compile(source, name, "exec")
    path = buggy.write(name, tmp_path)
    assert path == tmp_path / f"{name}.py" and path.read_text(encoding="utf-8") == source


def test_an_old_text_not_in_the_base_fails_naming_the_entry():
    name = NAMES[0]
    with pytest.raises(AssertionError, match=f"buggy {name}: edit 1's `old` occurs 0 times"):
        buggy.apply(name, "nothing here\n", [{"old": "absent", "new": "x"}])
