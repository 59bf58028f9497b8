"""Find every student's files in a folder of submissions, whatever its layout.

Three layouts are understood: a folder of per-student folders, a folder of
zip files (unpacked with ``grader.batch.archive.safe_extract``), and a Gradescope
"Download submissions" export (folders ``submission_N/`` described by a
top-level ``submission_metadata.yml``). Every entry yields one ``Entry``, with
a ``problem`` when there is nothing to grade, so no input is silently lost.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path

from grader.batch.archive import ArchiveError, safe_extract
from grader.contract import LOSS_FILE, MODULE_FILE, NOTEBOOK_FILE

METADATA = "submission_metadata.yml"
SEARCH_DEPTH = 3  # how deep in a student's folder the module may sit


@dataclass
class Entry:
    """One input: who, where its files are, their content hash, or why it cannot be graded."""

    student: str
    source: str  # the folder or zip it came from
    folder: str | None = None  # where its files are (the zip's unpacked copy)
    module: str | None = None
    notebook: str | None = None
    loss_file: str | None = None
    content_hash: str = ""
    problem: str | None = None  # set: nothing to grade, and why
    #: Several copies (or inputs) for this student: what was found and which was graded.
    note: str | None = None
    copies: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def escaped(text: str) -> str:
    """``text`` printable and storable: bytes that are not UTF-8 (a file name made on
    Windows, kept by Python as lone surrogates) written as ``\\xNN``."""
    return os.fsencode(text).decode("utf-8", "backslashreplace") if isinstance(text, str) \
        else str(text)


def student_id(name: str) -> str:
    """A student id usable as a folder name and a CSV cell, from any file name.

    Unicode is composed (NFC: a name made on macOS matches the roster's), letters of any
    script and symbols such as emoji are kept, undecodable bytes become ``\\xNN``
    (``j\\xf6rg``), separators and punctuation other than ``.@+-`` become ``_``.
    """
    text = unicodedata.normalize("NFC", name.strip())
    out = []
    for ch in text:
        if 0xDC80 <= ord(ch) <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif re.match(r"[\w.@+-]", ch) or (ord(ch) > 127 and
                                            unicodedata.category(ch)[0] not in "CZ"):
            out.append(ch)
        else:
            out.append("_")
    cleaned = re.sub(r"_+", "_", "".join(out)).strip("._")
    return cleaned or "unnamed"


def find_file(folder: Path, name: str) -> Path | None:
    """``name`` in ``folder`` or up to SEARCH_DEPTH below; the shallowest, then by path."""
    def usable(p: Path) -> bool:
        parts = p.relative_to(folder).parts
        return (p.is_file() and not p.is_symlink() and len(parts) <= SEARCH_DEPTH + 1
                and not any(part.startswith((".", "__MACOSX")) for part in parts))

    found = [p for p in folder.rglob(name) if usable(p)]
    return min(found, key=lambda p: (len(p.parts), str(p))) if found else None


def content_hash(*paths: Path | None) -> str:
    """SHA-256 over the graded files (names and bytes): unchanged files, unchanged hash."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(b"\0" if path is None else path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _gradescope_students(root: Path) -> dict[str, str]:
    """``submission_N`` -> the submitters' ids from Gradescope's metadata (sid, else email)."""
    import yaml

    try:
        meta = yaml.safe_load((root / METADATA).read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return {}
    names = {}
    for folder, info in meta.items() if isinstance(meta, dict) else []:
        if not isinstance(info, dict):  # not Gradescope's shape: this entry names no one
            continue
        submitters = (info or {}).get(":submitters") or (info or {}).get("submitters") or []
        ids = []
        for person in submitters if isinstance(submitters, list) else []:
            if isinstance(person, dict):
                ids.append(str(person.get(":sid") or person.get("sid") or person.get(":email")
                               or person.get("email") or person.get(":name") or ""))
        if any(ids):
            names[str(folder)] = "+".join(i for i in ids if i)
    return names


class PickError(ValueError):
    """A ``--pick`` that names no student, or no copy (or several) of that student's files."""


@dataclass
class _Copy:
    """One copy of a student's module: where it lies (as the instructor would name it)."""

    location: str  # relative to the class folder, a zip's inside after its name: "ann.zip/hw"
    module: Path
    root: Path  # the folder or unpacked zip it came from
    source: Path
    mtime: float


@dataclass
class _Candidate:
    """One top-level input (folder, zip, stray file) claiming a student id."""

    student: str
    source: Path
    label: str
    root: Path | None = None
    problem: str | None = None


def _modules(root: Path) -> list[Path]:
    """Every copy of the module in ``root`` down to SEARCH_DEPTH, by path."""
    def usable(p: Path) -> bool:
        parts = p.relative_to(root).parts
        return (p.is_file() and not p.is_symlink() and len(parts) <= SEARCH_DEPTH + 1
                and not any(part.startswith((".", "__MACOSX")) for part in parts))

    return sorted((p for p in root.rglob(MODULE_FILE) if usable(p)), key=str)


def _where(copy: _Copy) -> str:
    """A copy's location as --pick takes it: its folder (``eve/v2``), else its zip."""
    return copy.location.rsplit("/", 1)[0] if "/" in copy.location else copy.location


def _stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))


def discover(submissions: Path, workdir: Path, pick: dict[str, str] | None = None
             ) -> list[Entry]:
    """One Entry per student of ``submissions``; zips are unpacked under ``workdir``.

    The one discovery rule (``grade``, ``similarity`` and the LMS exports all use it): a
    top-level folder or zip is a student (its name, or Gradescope's metadata, gives the id;
    any byte string is a valid name: ``student_id``); the module is looked for down to
    SEARCH_DEPTH folders. Several copies for one student (``eve/v1`` and ``eve/v2``,
    ``alice/`` and ``alice.zip``, two folders with one id) are one row: the copy named by
    ``pick`` (student -> a folder or zip, relative to ``submissions``), else the newest by
    modification time; the Entry's ``note`` says which and what else was found.

    Raises FileNotFoundError / NotADirectoryError when ``submissions`` itself
    is not a folder, PickError for a ``pick`` that names no student or copy; everything
    inside becomes an Entry, problems included.
    """
    submissions = Path(submissions)
    pick = dict(pick or {})
    if not submissions.exists():
        raise FileNotFoundError(f"{submissions} does not exist")
    if not submissions.is_dir():
        raise NotADirectoryError(f"{submissions} is not a folder of submissions")
    gradescope = _gradescope_students(submissions) if (submissions / METADATA).is_file() else {}
    groups: dict[str, list[_Candidate]] = {}
    for path in sorted(submissions.iterdir(), key=lambda p: os.fsencode(p.name)):
        if path.name.startswith((".", "__MACOSX")) or path.name == METADATA:
            continue
        student = student_id(gradescope.get(path.name) or path.stem)
        cand = _Candidate(student, path, escaped(path.name))
        if path.is_dir() and not path.is_symlink():
            cand.root = path
        elif path.is_file() and path.suffix.lower() == ".zip":
            target = Path(workdir) / "unpacked" / student_id(path.name)
            shutil.rmtree(target, ignore_errors=True)  # a fresh copy on every run
            try:
                safe_extract(path, target)
                cand.root = target
            except ArchiveError as exc:
                shutil.rmtree(target, ignore_errors=True)
                cand.problem = f"could not be graded: {cand.label}: {escaped(str(exc))}"
        elif path.is_file() and path.name == MODULE_FILE:
            cand = _Candidate(student_id(submissions.name), path, escaped(path.name),
                              root=submissions)
        else:
            cand.problem = (f"not a submission: {cand.label} is neither a folder nor a .zip")
        groups.setdefault(cand.student, []).append(cand)
    unknown = sorted(set(pick) - set(groups))
    if unknown:
        raise PickError(f"--pick names no student of {escaped(str(submissions))}: "
                        f"{', '.join(unknown)} (the ids are the gradebook's student column)")
    return [_entry_for_group(student, cands, pick.get(student))
            for student, cands in groups.items()]


def _entry_for_group(student: str, cands: list[_Candidate], choice: str | None) -> Entry:
    copies: list[_Copy] = []
    for cand in cands:
        if cand.root is None:
            continue
        single_file = cand.source.is_file() and cand.source.name == MODULE_FILE
        for module in [cand.source] if single_file else _modules(cand.root):
            rel = module.name if single_file else module.relative_to(cand.root).as_posix()
            copies.append(_Copy(f"{cand.label}/{escaped(rel)}", module, cand.root,
                                cand.source, module.stat().st_mtime))
    first = cands[0]
    if not copies:
        problems = [c.problem or f"missing files: no {MODULE_FILE} in "
                    f"{'the zip' if c.source.suffix.lower() == '.zip' else 'the folder'} "
                    f"{c.label} (looked {SEARCH_DEPTH} folders deep)" for c in cands]
        entry = Entry(student=student, source=escaped(str(first.source)),
                      problem="; ".join(dict.fromkeys(problems)))
        if choice is not None:
            raise PickError(f"--pick {student}={choice}: {student} has no copy of "
                            f"{MODULE_FILE} to pick ({entry.problem})")
        return entry
    chosen, how = _choose(student, copies, choice)
    entry = _entry_for(student, chosen)
    others = [c for c in cands if c.root is None or not any(k.source == c.source for k in copies)]
    if len(copies) > 1 or others:
        listing = ", ".join(f"{c.location} ({_stamp(c.mtime)})" for c in copies)
        entry.copies = [c.location for c in copies]
        entry.note = (f"{len(copies)} cop{'ies' if len(copies) > 1 else 'y'} of {MODULE_FILE} "
                      f"for {student}: {listing}; graded {chosen.location} ({how})")
        if others:
            entry.note += "; also found, not graded: " + ", ".join(
                f"{c.label} ({c.problem or 'no ' + MODULE_FILE})" for c in others)
        if len(copies) > 1 and choice is None:
            alternative = next(_where(c) for c in copies if c is not chosen)
            entry.note += f"; to grade another copy: --pick '{student}={alternative}'"
    return entry


def _choose(student: str, copies: list[_Copy], choice: str | None) -> tuple[_Copy, str]:
    """The copy ``choice`` names (a folder or zip, or the module's own path), else the newest."""
    if choice is None:
        newest = max(copies, key=lambda c: c.mtime)  # ties: the first by path
        return newest, "the newest" if len(copies) > 1 else "the only copy"
    want = choice.strip().rstrip("/")
    hits = [c for c in copies if c.location == want or c.location.startswith(want + "/")]
    if len(hits) != 1:
        listing = ", ".join(_where(c) for c in copies)
        raise PickError(f"--pick {student}={choice} names {'several' if hits else 'none'} of "
                        f"{student}'s copies; name one of: {listing}")
    return hits[0], "picked with --pick"


def _entry_for(student: str, copy: _Copy) -> Entry:
    entry = Entry(student=student, source=escaped(str(copy.source)), folder=str(copy.root))
    module = copy.module
    # The notebook and the loss file belong next to the module; else anywhere in its folder
    # when it is the folder's only copy.
    alone = copy.module.parent == copy.root or len(_modules(copy.root)) <= 1

    def beside_or_alone(name: str) -> Path | None:
        path = module.parent / name
        if path.is_file():
            return path
        return find_file(copy.root, name) if alone else None

    notebook, loss = beside_or_alone(NOTEBOOK_FILE), beside_or_alone(LOSS_FILE)
    entry.module = str(module)
    entry.notebook = str(notebook) if notebook else None
    entry.loss_file = str(loss) if loss else None
    entry.content_hash = content_hash(module, notebook, loss)
    return entry
