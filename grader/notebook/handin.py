"""The student's hand-in: vet the three files the handout asks for, then zip exactly them.

Runs in the student's own kernel (the notebook's ``export()`` cell) or a shell.
Every problem names the file and what to do. A missing or broken file stops
the export (``force=True`` writes the zip anyway); a warning never does. The
zip holds the files at its root under the contract's names, which is where
batch grading and Gradescope look for them (``grader.batch.submissions.find_file``).
The loss file is parsed by the grader's own sandboxed reader, so "export
accepted it" means "the grader can read it".
"""

from __future__ import annotations

import ast
import json
import os
import sys
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from grader.contract import LOSS_FILE, MODULE_FILE, MODULE_NAME, NOTEBOOK_FILE, STUB_MARKER

#: The zip's members, in order: exactly what the handout asks students to hand in.
HANDIN_FILES = (MODULE_FILE, NOTEBOOK_FILE, LOSS_FILE)
ZIP_PREFIX = f"{MODULE_NAME}_submission"
#: The TODOs of the generated stub (``capgrade build-stub``; a test keeps this in sync).
#: A module in which every one of them still raises is the untouched stub.
STUB_TODOS = frozenset({
    "rnn_step_forward", "rnn_step_backward", "rnn_forward", "rnn_backward",
    "WordEmbedding.forward", "temporal_softmax_loss", "CaptioningRNN.__init__",
    "CaptioningRNN.forward", "CaptioningRNN.sample", "LSTM.step_forward", "LSTM.forward",
    "dot_product_attention", "AttentionLSTM.step_forward", "AttentionLSTM.forward",
})
# Files saved within this many seconds of each other count as saved together.
_MTIME_SLACK = 2.0


@dataclass(frozen=True)
class Problem:
    """One finding about one file; an error stops the export unless it is forced."""

    file: str
    message: str
    error: bool = True

    def __str__(self) -> str:
        return f"{'error' if self.error else 'warning'}: {self.file}: {self.message}"


@dataclass
class HandIn:
    """The files found for the hand-in (zip name -> source; None when missing) and findings."""

    files: dict[str, Path | None]
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.error]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if not p.error]


def stub_todos(source: str) -> list[str]:
    """The stub TODOs ``source`` still raises: what is left to do (SyntaxError if unparsable)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
                and isinstance(node.exc.func, ast.Name)
                and node.exc.func.id == "NotImplementedError" and node.exc.args):
            continue
        arg = node.exc.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str) \
                and STUB_MARKER in arg.value:
            found.append(arg.value.split("TODO:", 1)[-1].strip())
    return found


def _check_module(path: Path) -> list[Problem]:
    name = MODULE_FILE
    if not path.is_file():
        return [Problem(name, f"not found at {path}: keep your module next to the notebook "
                              "under this name (or pass module=...)")]
    try:
        source = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return [Problem(name, "is not UTF-8 text; save it again as UTF-8 from your editor")]
    except OSError as exc:
        return [Problem(name, f"cannot be read ({exc.strerror or exc})")]
    try:
        todos = stub_todos(source)
    except (SyntaxError, ValueError) as exc:  # a null byte: either, by Python version
        line = getattr(exc, "lineno", None)
        what = f"a syntax error{f' on line {line}' if line else ''}: {getattr(exc, 'msg', exc)}"
        return [Problem(name, f"has {what}; fix it (the grader cannot import it, so every "
                              "check would fail)")]
    if set(todos) >= STUB_TODOS:
        return [Problem(name, "is still the unmodified stub: every TODO raises "
                              "NotImplementedError; fill them in before handing in")]
    if todos:
        return [Problem(name, f"{len(todos)} TODO(s) not filled in yet, worth no points: "
                              + ", ".join(todos), error=False)]
    return []


def _check_notebook(path: Path) -> list[Problem]:
    import nbformat

    name = NOTEBOOK_FILE
    if not path.is_file():
        return [Problem(name, f"not found at {path}: save the notebook under this name next to "
                              "the module (on Colab: File > Download > Download .ipynb, then "
                              "upload it next to the module), or pass notebook=...")]
    try:
        text = path.read_text(encoding="utf-8")
        json.loads(text)  # its own message: where the JSON breaks
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f" (line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        return [Problem(name, f"is not valid notebook JSON{where}: the file is damaged; save "
                              "the notebook again from Jupyter (File > Save) and re-run this")]
    except OSError as exc:
        return [Problem(name, f"cannot be read ({exc.strerror or exc})")]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nbformat's notes about missing cell ids
            nb = nbformat.reads(text, as_version=4)
            nbformat.validate(nb)
    except Exception as exc:  # nbformat raises several types for a malformed document
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        return [Problem(name, f"is not a valid Jupyter notebook ({detail}); save it again from "
                              "Jupyter (File > Save) or hand in a fresh copy")]
    if not any(cell.get("cell_type") == "code" for cell in nb.cells):
        return [Problem(name, "has no code cells: is it the assignment's notebook?")]
    return []


def _check_loss_file(path: Path) -> list[Problem]:
    from grader.course import lossfile
    from grader.harness.client import read_loss_file
    from grader.rubric import RUBRIC_PATH, load_rubric_table

    name = LOSS_FILE
    rules = lossfile.LossFileRules.from_mapping(load_rubric_table(RUBRIC_PATH, "submission_file"))
    try:
        data = read_loss_file(path, rules.max_bytes)  # vets the file first (check_file)
    except lossfile.LossFileError as exc:
        message = str(exc)
        if message.startswith(path.name):  # the problem already names the file
            message = message[len(path.name):].lstrip(" :")
        where = "" if path.exists() else f" (looked for {path})"
        return [Problem(name, message + where)]
    except Exception as exc:  # WorkerFailure, or no sandbox on this machine
        # The grader's own trouble, not the file's: the zip must not depend on it.
        return [Problem(name, f"could not be checked here ({type(exc).__name__}: {exc}); the "
                              "grader will read it itself", error=False)]
    return [Problem(name, f"the grader's loss-file checks will report: {problem}", error=False)
            for problem in lossfile.judge_losses(data, rules)]


def _check_order(files: dict[str, Path | None]) -> list[Problem]:
    """Cheap hints from modification times: losses from older code, a notebook not saved."""
    def mtime(name: str) -> float | None:
        path = files.get(name)
        try:
            return path.stat().st_mtime if path is not None else None
        except OSError:
            return None

    module, notebook, losses = mtime(MODULE_FILE), mtime(NOTEBOOK_FILE), mtime(LOSS_FILE)
    problems = []
    if module is not None and losses is not None and module > losses + _MTIME_SLACK:
        problems.append(Problem(MODULE_FILE, f"changed after {LOSS_FILE} was written: re-run "
                                "the notebook so the losses come from your final code",
                                error=False))
    if notebook is not None and losses is not None and notebook < losses - _MTIME_SLACK:
        problems.append(Problem(NOTEBOOK_FILE, f"was last saved before {LOSS_FILE} was "
                                "written: save the notebook (File > Save) and export again, "
                                "or the hand-in misses your latest edits", error=False))
    return problems


def vet(folder: str | Path = ".", module: str | Path | None = None,
        notebook: str | Path | None = None, loss_file: str | Path | None = None) -> HandIn:
    """Find and vet the hand-in's files (each defaults to its contract name in ``folder``)."""
    folder = Path(folder)
    given = {MODULE_FILE: module, NOTEBOOK_FILE: notebook, LOSS_FILE: loss_file}
    paths = {name: Path(p) if p is not None else folder / name for name, p in given.items()}
    problems = (_check_module(paths[MODULE_FILE]) + _check_notebook(paths[NOTEBOOK_FILE])
                + _check_loss_file(paths[LOSS_FILE]))
    files: dict[str, Path | None] = {name: p if p.is_file() else None
                                     for name, p in paths.items()}
    return HandIn(files=files, problems=problems + _check_order(files))


def write_zip(files: dict[str, Path | None], target: Path) -> Path:
    """Write the present ``files`` (zip name -> source) at the zip's root, atomically.

    The zip is written beside ``target`` under a temporary name and renamed, so an
    interrupted export never leaves a half-written zip under the final name.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(
                raw, "w", zipfile.ZIP_DEFLATED, strict_timestamps=False) as zf:
            for name, source in files.items():
                if source is not None:
                    zf.write(source, arcname=name)
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return target


def _zip_target(folder: Path, out: str | Path | None) -> Path:
    """``out`` when it names a file; else a timestamped name in ``out`` (or ``folder``)."""
    if out is not None and not Path(out).is_dir() and Path(out).suffix.lower() == ".zip":
        return Path(out)
    where = Path(out) if out is not None else folder
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S")
    target = where / f"{ZIP_PREFIX}_{stamp}.zip"
    count = 1
    while target.exists():  # two exports within one second keep both
        count += 1
        target = where / f"{ZIP_PREFIX}_{stamp}-{count}.zip"
    return target


def grading_mode() -> bool:
    """The notebook's own ``GRADING_MODE`` (``capgrade run-notebook`` sets it True)."""
    return getattr(sys.modules.get("__main__"), "GRADING_MODE", False) is True


def export(folder: str | Path = ".", out: str | Path | None = None, *, force: bool = False,
           module: str | Path | None = None, notebook: str | Path | None = None,
           loss_file: str | Path | None = None, grading: bool | None = None) -> Path | None:
    """Vet the hand-in and zip it; returns the zip's path, or None when nothing was written.

    ``out``: a ``.zip`` path, or the folder for a timestamped zip (default ``folder``).
    ``force``: write the zip despite errors (each is listed). ``grading`` (default:
    the notebook's ``GRADING_MODE``): the grader is running the notebook, which
    collects the files itself, so nothing is checked or written.
    """
    if grading_mode() if grading is None else grading:
        print("grading mode: nothing to export (the grader collects the files itself)")
        return None
    handin = vet(folder, module=module, notebook=notebook, loss_file=loss_file)
    for problem in handin.problems:
        print(problem)
    errors = handin.errors
    if errors and not force:
        print(f"No zip written: fix the {len(errors)} error(s) above and run export() again "
              "(export(force=True) writes the zip anyway, problems included).")
        return None
    target = write_zip(handin.files, _zip_target(Path(folder), out))
    present = [name for name, path in handin.files.items() if path is not None]
    missing = [name for name, path in handin.files.items() if path is None]
    size = target.stat().st_size
    shown = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{max(size // 1000, 1)} kB"
    print(f"Wrote {target.resolve()} ({shown}): {', '.join(present) or 'no files'}"
          + (f"; missing: {', '.join(missing)}" if missing else ""))
    if errors:
        print(f"Written with {len(errors)} error(s) (force=True): the grader will report them.")
    else:
        print("Hand in this zip." + (f" ({len(handin.warnings)} warning(s) above.)"
                                     if handin.warnings else ""))
    return target
