"""capgrade similarity on real modules: copies rank high, the stub and an independent solution
do not, and every entry is either compared or named with its problem."""

from __future__ import annotations

import argparse
import csv
import io
import tokenize
import zipfile
from pathlib import Path

import pytest

from grader.batch import similarity as sim

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "reference" / "rnn_lstm_captioning.py"
STUB = ROOT / "student" / "rnn_lstm_captioning.py"
ALT = ROOT / "tests" / "solutions" / "alt_style_rnn_lstm_captioning.py"
MODULE = "rnn_lstm_captioning.py"

RENAMES = {"prev_h": "h_before", "next_h": "h_after", "Wx": "W_input", "Wh": "W_hidden",
           "cache": "saved_for_backward", "hidden_dim": "n_hidden", "h0": "h_start",
           "prev_c": "c_before", "next_c": "c_after", "captions": "caps"}


def disguised_copy(source: str) -> str:
    """The reference with variables renamed and every comment reworded: still valid Python."""
    tokens = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.string in RENAMES:
            tokens.append(tok._replace(string=RENAMES[tok.string]))
        elif tok.type == tokenize.COMMENT:
            tokens.append(tok._replace(string="# my own note"))
        else:
            tokens.append(tok)
    return tokenize.untokenize(tokens)


def _put(folder: Path, text: str) -> None:
    folder.mkdir(parents=True)
    (folder / MODULE).write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def submissions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("similarity") / "submissions"
    ref = REFERENCE.read_text(encoding="utf-8")
    disguised = disguised_copy(ref)
    compile(disguised, "disguised", "exec")
    assert "def rnn_step_forward(x, h_before, W_input, W_hidden, b):" in disguised
    _put(root / "alice", ref)
    _put(root / "bob" / "submission_123", ref)  # Gradescope-style, one level deeper
    (root / "bob" / "submission_123" / "submission_metadata.yml").write_text("id: 123\n")
    _put(root / "carol", disguised)
    _put(root / "dave", STUB.read_text(encoding="utf-8"))
    _put(root / "erin", STUB.read_text(encoding="utf-8"))
    with zipfile.ZipFile(root / "frank.zip", "w") as zf:  # an independent solution, zipped
        zf.writestr(f"hw/{MODULE}", ALT.read_text(encoding="utf-8"))
        zf.writestr("hw/notes.txt", "done\n")
    (root / "henry").mkdir()  # nothing handed in
    (root / "henry" / "rnn_lstm_captioning.ipynb").write_text("{}\n")
    with zipfile.ZipFile(root / "mallory.zip", "w") as zf:
        zf.writestr(MODULE, ref)
        zf.writestr("../evil.py", "print('escaped')\n")
    (root / "submission_metadata.yml").write_text("export: true\n")  # Gradescope's index
    return root


@pytest.fixture(scope="module")
def found(submissions: Path, tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("work")
    modules, problems = sim.find_modules(submissions, workdir)
    return workdir, modules, problems


@pytest.fixture(scope="module")
def pairs(found) -> list[sim.Pair]:
    return sim.rank_pairs(found[1], STUB)


def _pair(pairs: list[sim.Pair], x: str, y: str) -> sim.Pair:
    return next(p for p in pairs if {p.a, p.b} == {x, y})


def test_every_entry_is_a_module_or_a_problem(found, submissions: Path) -> None:
    workdir, modules, problems = found
    assert sorted(modules) == ["alice", "bob", "carol", "dave", "erin", "frank"]
    assert sorted(problems) == ["henry", "mallory"]
    assert modules["bob"] == submissions / "bob" / "submission_123" / MODULE
    assert modules["frank"].is_relative_to(workdir) and modules["frank"].parent.name == "hw"
    assert f"no {MODULE}" in problems["henry"] and "in the folder" in problems["henry"]
    assert problems["mallory"].startswith("zip refused")
    assert "../evil.py" in problems["mallory"] and "outside" in problems["mallory"]
    # Nothing escaped: no evil.py anywhere near, and the refused zip left no partial tree.
    for base in (workdir.parent, submissions.parent):
        assert not list(base.rglob("evil.py"))
    assert not (workdir / "unzipped" / "mallory").exists()


def test_copies_rank_first_and_disguise_does_not_help(pairs: list[sim.Pair]) -> None:
    assert len(pairs) == 15  # 6 students
    assert [p.score for p in pairs] == sorted((p.score for p in pairs), reverse=True)
    # The three copy pairs come first (renaming and rewording ties with the exact copy:
    # names and comments vanish in copydetect's tokenisation).
    assert {frozenset((p.a, p.b)) for p in pairs[:3]} == {
        frozenset(x) for x in (("alice", "bob"), ("alice", "carol"), ("bob", "carol"))}
    exact = _pair(pairs, "alice", "bob")
    assert exact.similarity_a == exact.similarity_b == exact.score == 1.0
    assert exact.overlap_tokens > 1000
    assert all(_pair(pairs, "carol", x).score > 0.9 for x in ("alice", "bob"))


def test_independent_solution_ranks_below_copies(pairs: list[sim.Pair]) -> None:
    copies = min(p.score for p in pairs[:3])
    for other in ("alice", "bob", "carol"):
        p = _pair(pairs, "frank", other)
        assert p.score < 0.5 < copies


def test_stub_text_is_not_similarity(pairs: list[sim.Pair], found) -> None:
    stub_pairs = [p for p in pairs if {"dave", "erin"} & {p.a, p.b}]
    assert len(stub_pairs) == 9
    assert all(p.score < 0.02 for p in stub_pairs)
    assert _pair(pairs, "dave", "erin").score == pytest.approx(0.0, abs=1e-9)
    # Without the boilerplate excluded the two empty-handed students look like a copy.
    modules = found[1]
    unfiltered = sim.rank_pairs({k: modules[k] for k in ("dave", "erin")}, None)
    assert unfiltered[0].score == 1.0


def test_rank_pairs_rejects_bad_settings(found) -> None:
    with pytest.raises(ValueError):
        sim.rank_pairs(found[1], STUB, noise=30, guarantee=25)
    with pytest.raises(FileNotFoundError):
        sim.rank_pairs(found[1], STUB.with_name("missing.py"))


def test_reports(pairs: list[sim.Pair], found, tmp_path: Path) -> None:
    _, modules, problems = found
    paths = sim.write_report(pairs, problems, tmp_path / "out", modules)
    assert set(paths) == {"csv", "html"}
    with open(paths["csv"], newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["student_a", "student_b", "similarity_a", "similarity_b", "score",
                             "overlap_tokens"]
    assert len(rows) == len(pairs) == 15
    assert {rows[0]["student_a"], rows[0]["student_b"]} == {"alice", "bob"}
    assert float(rows[0]["score"]) == 1.0 and float(rows[-1]["score"]) < 0.02
    page = paths["html"].read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    for name in (*modules, *problems):
        assert f"<td>{name}</td>" in page
    assert "../evil.py" in page


def test_cli_writes_reports_and_prints_the_top_pairs(submissions: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="capgrade")
    sim.add_parser(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "report"
    args = parser.parse_args(["similarity", str(submissions), "-o", str(out), "--top", "3"])
    assert args.boilerplate is None and args.top == 3
    assert args.func(args) == 0
    captured = capsys.readouterr()
    assert "alice" in captured.out and "bob" in captured.out and "100%" in captured.out
    assert "dave" not in captured.out  # only the top 3 are printed
    assert str(out / "similarity.html") in captured.out.replace("\n", "")
    assert "not compared: henry" in captured.err and "not compared: mallory" in captured.err
    assert (out / "similarity.csv").is_file() and (out / "similarity.html").is_file()
    assert parser.parse_args(["similarity", "x"]).out == Path("capgrade-similarity")


def test_cli_exit_2_when_nothing_to_compare(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert sim.run_similarity(tmp_path / "missing", out) == 2
    assert "not a folder" in capsys.readouterr().err
    lonely = tmp_path / "lonely"
    _put(lonely / "alice", REFERENCE.read_text(encoding="utf-8"))
    (lonely / "henry").mkdir()
    assert sim.run_similarity(lonely, out) == 2
    err = capsys.readouterr().err
    assert "1 usable submission(s)" in err and "not compared: henry" in err
    assert sim.run_similarity(lonely, out, boilerplate=tmp_path / "nope.py") == 2
    assert "boilerplate not found" in capsys.readouterr().err
    assert not out.exists()
