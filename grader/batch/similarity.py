"""Rank pairs of submissions by how much of what the students wrote is shared.

Built on copydetect: each module is tokenised (names become V/F/O, strings S, comments and
layout vanish, so renaming variables or rewording comments does not hide a copy), cut into
k-grams of ``noise`` characters and winnowed to fingerprints. The provided stub is boilerplate:
every k-gram of it is removed from each submission's fingerprints first, so two students who
both left the stub untouched (or kept its scaffolding) do not look alike. A pair's similarity
for one student is the share of that student's own (non-stub) fingerprinted code that also
appears in the other's module; the pair's score is the larger of the two.

A high score is a reason to look, not a verdict: the report shows where to look.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import html
import itertools
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grader
from grader.contract import MODULE_FILE as MODULE_NAME
from grader.results.render import clean

if TYPE_CHECKING:
    import numpy as np

# copydetect (and the matplotlib.pyplot it imports, ~0.5 s) is imported where it is used, so
# registering the subcommand costs every other `capgrade` command nothing.

_STUB = Path(grader.__file__).resolve().parent.parent / "student" / MODULE_NAME
#: The provided stub of a source checkout; None where it is absent (an installed wheel).
DEFAULT_BOILERPLATE: Path | None = _STUB if _STUB.is_file() else None
#: Bigger modules are not fingerprinted (copydetect's pure-Python winnowing is slow on them).
MAX_MODULE_BYTES = 2 * 1024 * 1024
#: Pairs listed in the HTML report; the CSV always has every pair.
HTML_ROWS = 500


@dataclass
class Pair:
    """Two students and how much of each one's own code is found in the other's.

    ``overlap_tokens`` counts matched characters of ``a``'s tokenised code (a name counts as
    one), i.e. the size of the shared part, which the two ratios alone do not show.
    """

    a: str
    b: str
    similarity_a: float
    similarity_b: float
    overlap_tokens: int

    @property
    def score(self) -> float:
        """The larger share: copying a small part of a big file still ranks high."""
        return max(self.similarity_a, self.similarity_b)


# --------------------------------------------------------------------------- finding modules


def _usable(module: Path, where: str) -> Path | str:
    """``module`` if copydetect can fingerprint it, else why not (a message)."""
    if module.is_symlink() or not module.is_file():
        return f"{MODULE_NAME} {where} is not a regular file"
    size = module.stat().st_size
    if size > MAX_MODULE_BYTES:
        return f"{MODULE_NAME} {where} is too large to compare ({size:,} bytes)"
    try:
        module.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"{MODULE_NAME} {where} is not UTF-8 text ({exc.reason} at byte {exc.start})"
    return module


def find_submissions(submissions: Path, workdir: Path
                     ) -> tuple[dict[str, Path], dict[str, str], dict[str, str]]:
    """Each student's module, a message for every student with none, and a note for every
    student with several copies (which one is compared).

    The students and their modules are ``capgrade grade``'s (``submissions.discover``: the
    same ids, the same depth, the same copy when there are several), so a student is never
    graded and left out of the comparison, or compared under another name.
    """
    from grader.batch.submissions import discover

    modules: dict[str, Path] = {}
    problems: dict[str, str] = {}
    notes: dict[str, str] = {}
    for entry in discover(submissions, workdir):
        if entry.note:
            notes[entry.student] = entry.note
        if entry.problem:
            zipped = entry.source.lower().endswith(".zip")
            text = entry.problem
            if zipped and text.startswith("could not be graded: "):
                text = "zip refused: " + text.removeprefix("could not be graded: ")
            problems[entry.student] = clean(text)
            continue
        where = "in the zip" if entry.source.lower().endswith(".zip") else "in the folder"
        found = _usable(Path(entry.module or ""), where)
        if isinstance(found, Path):
            modules[entry.student] = found
        else:
            problems[entry.student] = found
    return modules, problems, notes


def find_modules(submissions: Path, workdir: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Each student's module, and a message for every entry that yields none.

    An entry of SUBMISSIONS is a folder or a ``.zip`` (unpacked safely under ``workdir``);
    every student lands in exactly one of the two dicts, so none silently drops out of the
    comparison. Hidden names, ``__MACOSX`` and Gradescope's ``submission_metadata.yml`` are
    not students and are passed over. See ``find_submissions``.
    """
    modules, problems, _ = find_submissions(submissions, workdir)
    return modules, problems


# --------------------------------------------------------------------------- ranking


def _boilerplate_hashes(boilerplate: Path | None, noise: int) -> np.ndarray | None:
    """Every k-gram hash of the stub (window 1, as copydetect's own boilerplate_dirs does).

    All k-grams rather than winnowed ones: whichever of them a submission's winnowing picks,
    it is found and dropped.
    """
    import numpy as np
    from copydetect import CodeFingerprint

    if boilerplate is None:
        return None
    hashes = CodeFingerprint(str(boilerplate), noise, 1).hashes
    return np.unique(np.fromiter(hashes, dtype=np.int64, count=len(hashes)))


def rank_pairs(modules: dict[str, Path], boilerplate: Path | None, noise: int = 25,
               guarantee: int = 30) -> list[Pair]:
    """Every pair of students, most similar first.

    ``noise``: matches shorter than this many tokenised characters are ignored;
    ``guarantee``: matches at least this long are always found (copydetect's thresholds; the
    winnowing window is ``guarantee - noise + 1``). ``boilerplate``'s text never counts.
    """
    from copydetect import CodeFingerprint, compare_files

    if noise < 1 or guarantee < noise:
        raise ValueError(f"need 1 <= noise <= guarantee, got noise={noise}, "
                         f"guarantee={guarantee}")
    if boilerplate is not None and not boilerplate.is_file():
        raise FileNotFoundError(f"boilerplate not found: {boilerplate}")
    skip = _boilerplate_hashes(boilerplate, noise)
    window = guarantee - noise + 1
    prints = {sid: CodeFingerprint(str(path), noise, window, skip)
              for sid, path in sorted(modules.items())}
    pairs = []
    for (a, fa), (b, fb) in itertools.combinations(prints.items(), 2):
        overlap, (sim_a, sim_b), _slices = compare_files(fa, fb)
        pairs.append(Pair(a, b, float(sim_a), float(sim_b), int(overlap)))
    pairs.sort(key=lambda p: (-p.score, -p.overlap_tokens, p.a, p.b))
    return pairs


# --------------------------------------------------------------------------- reports

CSV_COLUMNS = ["student_a", "student_b", "similarity_a", "similarity_b", "score",
               "overlap_tokens"]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.high td { background: #fbd5d5; }
tr.mid td { background: #fdebc8; }
code { font-size: 0.9em; }
"""


def _level(score: float) -> str:
    return "high" if score >= 0.8 else "mid" if score >= 0.5 else ""


def _esc(text: str) -> str:
    return html.escape(clean(text))


def _html(pairs: list[Pair], problems: dict[str, str], modules: dict[str, Path]) -> str:
    """A self-contained page: ranked pairs, entries that could not be compared, students."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>capgrade similarity</title>", f"<style>{_CSS}</style></head><body>",
           "<h1>Similarity of submissions</h1>",
           f"<p>{len(modules)} students compared, {len(pairs)} pairs, "
           f"{len(problems)} entries not compared. Similarity of a student: share of their own "
           "code (the provided stub excluded) also found in the other module. Score: the larger "
           "of the two. A high score is a reason to read both modules, not a verdict.</p>",
           "<h2>Pairs, most similar first</h2>"]
    if len(pairs) > HTML_ROWS:
        out.append(f"<p>The first {HTML_ROWS} of {len(pairs)}; similarity.csv has them all.</p>")
    out.append("<table><tr><th>#</th><th>student A</th><th>student B</th><th>similarity A</th>"
               "<th>similarity B</th><th>score</th><th>overlap tokens</th></tr>")
    for rank, p in enumerate(pairs[:HTML_ROWS], 1):
        out.append(f'<tr class="{_level(p.score)}"><td class="num">{rank}</td>'
                   f"<td>{_esc(p.a)}</td><td>{_esc(p.b)}</td>"
                   f'<td class="num">{p.similarity_a:.1%}</td>'
                   f'<td class="num">{p.similarity_b:.1%}</td>'
                   f'<td class="num"><b>{p.score:.1%}</b></td>'
                   f'<td class="num">{p.overlap_tokens}</td></tr>')
    out.append("</table>")
    out.append("<h2>Not compared</h2>")
    if problems:
        out.append("<table><tr><th>entry</th><th>problem</th></tr>")
        out += [f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>"
                for k, v in sorted(problems.items())]
        out.append("</table>")
    else:
        out.append("<p>Every entry was compared.</p>")
    out.append("<h2>Students compared</h2><p>Equal SHA-256 prefixes mean byte-identical "
               "files.</p><table><tr><th>student</th><th>lines</th><th>SHA-256</th></tr>")
    for sid, path in sorted(modules.items()):
        data = path.read_bytes()
        lines = len(data.splitlines())
        out.append(f'<tr><td>{_esc(sid)}</td><td class="num">{lines}</td>'
                   f"<td><code>{hashlib.sha256(data).hexdigest()[:12]}</code></td></tr>")
    out.append("</table></body></html>")
    return "\n".join(out) + "\n"


def write_report(pairs: list[Pair], problems: dict[str, str], out_dir: Path,
                 modules: dict[str, Path]) -> dict[str, Path]:
    """Write ``similarity.csv`` (every pair) and ``similarity.html``; returns their paths.

    The HTML is rendered here rather than by copydetect: its report can only show a
    comparison its own CopyDetector ran (without our entry problems and student ids).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, html_path = out_dir / "similarity.csv", out_dir / "similarity.html"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for p in pairs:
            writer.writerow([p.a, p.b, f"{p.similarity_a:.4f}", f"{p.similarity_b:.4f}",
                             f"{p.score:.4f}", p.overlap_tokens])
    html_path.write_text(_html(pairs, problems, modules), encoding="utf-8")
    return {"csv": csv_path, "html": html_path}


# --------------------------------------------------------------------------- command line


def _fail(message: str) -> int:
    print(f"capgrade similarity: {message}", file=sys.stderr)
    return 2


def _print_pairs(pairs: list[Pair], top: int) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"Most similar pairs (top {min(top, len(pairs))} of {len(pairs)})",
                  title_justify="left")
    for name in ("#", "student A", "student B", "sim A", "sim B", "score", "overlap"):
        numeric = name not in ("student A", "student B")
        table.add_column(name, justify="right" if numeric else "left", no_wrap=numeric)
    for rank, p in enumerate(pairs[:top], 1):
        style = {"high": "bold red", "mid": "yellow"}.get(_level(p.score), "")
        table.add_row(str(rank), Text(clean(p.a)), Text(clean(p.b)), f"{p.similarity_a:.0%}",
                      f"{p.similarity_b:.0%}", Text(f"{p.score:.0%}", style=style),
                      str(p.overlap_tokens))
    Console().print(table)


def run_similarity(submissions: Path, out_dir: Path,
                   boilerplate: Path | None = DEFAULT_BOILERPLATE, top: int = 20) -> int:
    """The ``capgrade similarity`` command: 0 when reports were written, 2 when nothing could be
    compared (SUBMISSIONS missing, fewer than two usable modules, boilerplate missing)."""
    if not submissions.is_dir():
        return _fail(f"not a folder: {submissions}")
    if boilerplate is not None and not boilerplate.is_file():
        return _fail(f"boilerplate not found: {boilerplate}")
    if boilerplate is None:
        print("capgrade similarity: no boilerplate given: text from the provided stub counts "
              "as similarity", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="capgrade-similarity-") as tmp:
        modules, problems, notes = find_submissions(submissions, Path(tmp))
        for _sid, note in sorted(notes.items()):
            print(f"capgrade similarity: {clean(note)}", file=sys.stderr)
        for sid, message in sorted(problems.items()):
            print(f"capgrade similarity: not compared: {clean(sid)}: {message}", file=sys.stderr)
        if len(modules) < 2:
            return _fail(f"{len(modules)} usable submission(s) in {submissions}; need at least "
                         f"two, each a folder or .zip holding {MODULE_NAME}")
        pairs = rank_pairs(modules, boilerplate)
        paths = write_report(pairs, problems, out_dir, modules)
    _print_pairs(pairs, top)
    print(f"{len(modules)} students, {len(pairs)} pairs, {len(problems)} not compared; "
          f"reports: {paths['csv']} and {paths['html']}")
    return 0


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _command(args: argparse.Namespace) -> int:
    boilerplate = args.boilerplate if args.boilerplate is not None else DEFAULT_BOILERPLATE
    return run_similarity(args.submissions, args.out, boilerplate=boilerplate, top=args.top)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``capgrade similarity SUBMISSIONS`` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "similarity", help="rank pairs of submissions by similarity of the code students wrote",
        description="Rank every pair of submissions by how much of the code the students wrote "
                    "is shared (copydetect fingerprints; the provided stub is excluded). "
                    "Writes similarity.csv and similarity.html.")
    p.add_argument("submissions", type=Path, metavar="SUBMISSIONS",
                   help=f"folder with one folder or .zip per student holding {MODULE_NAME}")
    p.add_argument("-o", "--out", type=Path, default=Path("capgrade-similarity"),
                   help="output folder (default: %(default)s)")
    p.add_argument("--boilerplate", type=Path, default=None, metavar="PATH",
                   help=f"provided code whose text never counts (default: {DEFAULT_BOILERPLATE})")
    p.add_argument("--top", type=_non_negative, default=20, metavar="N",
                   help="pairs to print (default: %(default)s)")
    p.set_defaults(func=_command)
