"""Find every student's files in a folder of submissions, whatever its layout.

Three layouts are understood: a folder of per-student folders, a folder of
zip files (unpacked with ``grader.batch.archive.safe_extract``), and a Gradescope
"Download submissions" export (folders ``submission_N/`` described by a
top-level ``submission_metadata.yml``). Every entry yields one ``Entry``, with
a ``problem`` when there is nothing to grade, so no input is silently lost.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import asdict, dataclass
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

    def as_dict(self) -> dict:
        return asdict(self)


def _safe_id(text: str) -> str:
    """A student id usable as a folder name and a CSV cell."""
    cleaned = re.sub(r"[^\w.@+-]+", "_", text.strip()).strip("._")
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


def _entry_for(student: str, source: Path, folder: Path) -> Entry:
    entry = Entry(student=student, source=str(source), folder=str(folder))
    module = find_file(folder, MODULE_FILE)
    if module is None:
        entry.problem = (f"missing files: no {MODULE_FILE} in {source.name} "
                         f"(looked {SEARCH_DEPTH} folders deep)")
        return entry
    # The notebook and the loss file belong next to the module; else anywhere in the folder.
    notebook = module.parent / NOTEBOOK_FILE
    notebook = notebook if notebook.is_file() else find_file(folder, NOTEBOOK_FILE)
    loss = module.parent / LOSS_FILE
    loss = loss if loss.is_file() else find_file(folder, LOSS_FILE)
    entry.module = str(module)
    entry.notebook = str(notebook) if notebook else None
    entry.loss_file = str(loss) if loss else None
    entry.content_hash = content_hash(module, notebook, loss)
    return entry


def _gradescope_students(root: Path) -> dict[str, str]:
    """``submission_N`` -> the submitters' ids from Gradescope's metadata (sid, else email)."""
    import yaml

    try:
        meta = yaml.safe_load((root / METADATA).read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return {}
    names = {}
    for folder, info in meta.items() if isinstance(meta, dict) else []:
        submitters = (info or {}).get(":submitters") or (info or {}).get("submitters") or []
        ids = []
        for person in submitters if isinstance(submitters, list) else []:
            if isinstance(person, dict):
                ids.append(str(person.get(":sid") or person.get("sid") or person.get(":email")
                               or person.get("email") or person.get(":name") or ""))
        if any(ids):
            names[str(folder)] = "+".join(i for i in ids if i)
    return names


def discover(submissions: Path, workdir: Path) -> list[Entry]:
    """One Entry per input of ``submissions``; zips are unpacked under ``workdir``.

    Raises FileNotFoundError / NotADirectoryError when ``submissions`` itself
    is not a folder; everything inside becomes an Entry, problems included.
    """
    submissions = Path(submissions)
    if not submissions.exists():
        raise FileNotFoundError(f"{submissions} does not exist")
    if not submissions.is_dir():
        raise NotADirectoryError(f"{submissions} is not a folder of submissions")
    gradescope = _gradescope_students(submissions) if (submissions / METADATA).is_file() else {}
    entries: list[Entry] = []
    for path in sorted(submissions.iterdir()):
        if path.name.startswith(".") or path.name == METADATA:
            continue
        student = _safe_id(gradescope.get(path.name) or path.stem)
        if path.is_dir() and not path.is_symlink():
            entries.append(_entry_for(student, path, path))
        elif path.is_file() and path.suffix.lower() == ".zip":
            target = Path(workdir) / "unpacked" / student
            shutil.rmtree(target, ignore_errors=True)  # a fresh copy on every run
            try:
                safe_extract(path, target)
            except ArchiveError as exc:
                entries.append(Entry(student=student, source=str(path),
                                     problem=f"could not be graded: {path.name}: {exc}"))
                continue
            entries.append(_entry_for(student, path, target))
        elif path.is_file() and path.name == MODULE_FILE:
            entries.append(_entry_for(_safe_id(submissions.name), path, submissions))
        else:
            entries.append(Entry(student=student, source=str(path),
                                 problem=f"not a submission: {path.name} is neither a folder "
                                         "nor a .zip"))
    _disambiguate(entries)
    return entries


def _disambiguate(entries: list[Entry]) -> None:
    """Two inputs with one id (``ann/`` and ``ann.zip``) keep both: the second gets ``-2``."""
    seen: dict[str, int] = {}
    for entry in entries:
        count = seen.get(entry.student, 0) + 1
        seen[entry.student] = count
        if count > 1:
            entry.student = f"{entry.student}-{count}"
