"""``capgrade release``: the student bundle, built from the instructors' checkout and audited.

The bundle holds what a student needs and nothing an instructor must keep:
the stub, the notebook, the grader as a wheel (public expected values only),
a student README, and a GitHub Classroom starter (the autograding workflow).
Before it is declared done, ``audit`` reads every file of it, the wheel's
members included, and refuses the release if any line of a solution region
or any hidden expected value is found.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from grader import __version__
from grader.authoring.stubgen import find_regions, stub_is_current
from grader.contract import MODULE_FILE, NOTEBOOK_FILE
from grader.harness import expected as ex
from grader.integrations import classroom, pins
from grader.sandbox import PACKAGE_ROOT

REFERENCE = PACKAGE_ROOT / "reference" / MODULE_FILE
STUB = PACKAGE_ROOT / "student" / MODULE_FILE
NOTEBOOK = PACKAGE_ROOT / "notebooks" / NOTEBOOK_FILE
STUDENT_GUIDE = PACKAGE_ROOT / "docs" / "student-guide.md"
HIDDEN = PACKAGE_ROOT / ex.HIDDEN_PATH

#: Solution lines shorter than this are too generic to identify a solution ("else:").
MIN_LINE = 12
#: Solution lines the grader's own code has for its own purpose (the file says why).
ALLOWED = {
    'if cell_type == "attn":',  # grader/worker/probes.py builds the model kind a check asks for
}
#: What the wheel is built from: the grader package and its metadata, nothing else.
WHEEL_SOURCES = ("pyproject.toml", "README.md", "grader")
#: Instructor-only modules left out of the wheel: the demo class plants bugs by
#: quoting the reference's lines (``capgrade demo`` needs the checkout anyway), and the
#: overfit calibration rewrites the reference's ``__init__`` in other orders (it runs
#: from the checkout: ``scripts/calibrate_overfit.py``).
WHEEL_EXCLUDE = ("examples.py", "overfit_calibration.py")


class ReleaseError(Exception):
    """The release cannot be built, or failed its audit; the message says what to do."""

    def __init__(self, message: str, leak: bool = False):
        super().__init__(message)
        #: The audit found instructor material in it (exit 1), rather than a usage problem.
        self.leak = leak


def build_wheel(dest: Path, root: Path = PACKAGE_ROOT) -> Path:
    """Build capgrade's wheel into ``dest`` from a staged copy (no network, no build/ left)."""
    try:
        import setuptools  # noqa: F401 - the build backend, needed offline
    except ImportError as exc:
        raise ReleaseError("building the wheel needs setuptools>=70.1: pip install "
                           "'capgrade[instructor]'") from exc
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="capgrade-wheel-") as tmp:
        stage = Path(tmp) / "src"
        stage.mkdir()
        for name in WHEEL_SOURCES:
            source = root / name
            if not source.exists():
                raise ReleaseError(f"{source} is missing: run from a capgrade checkout")
            if source.is_dir():
                shutil.copytree(source, stage / name, ignore=shutil.ignore_patterns(
                    "__pycache__", "*.pyc", *WHEEL_EXCLUDE))
            else:
                shutil.copy2(source, stage / name)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
             "--no-index", "--disable-pip-version-check", "--quiet", "-w", str(dest),
             str(stage)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ReleaseError(f"building the wheel failed:\n{(done.stdout + done.stderr)[-2000:]}")
    wheels = sorted(dest.glob(f"capgrade-{__version__}-*.whl"))
    if not wheels:
        raise ReleaseError(f"pip reported success but no capgrade wheel is in {dest}")
    return wheels[-1]


# -- the audit -----------------------------------------------------------------------------


def solution_lines(reference: Path = REFERENCE, stub: Path = STUB) -> set[str]:
    """Every distinctive code line inside the reference's solution regions."""
    lines = reference.read_text(encoding="utf-8").splitlines()
    given = {line.strip() for line in stub.read_text(encoding="utf-8").splitlines()}
    found = set()
    for region in find_regions(lines):
        for line in lines[region.start + 1: region.end]:
            text = line.strip()
            if (len(text) >= MIN_LINE and not text.startswith("#") and text not in given
                    and text not in ALLOWED):
                found.add(text)
    return found


def _members(folder: Path) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every file in ``folder``, and of every member of its zips and wheels."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = str(path.relative_to(folder))
        data = path.read_bytes()
        yield name, data
        if path.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                for info in zf.infolist():
                    if not info.is_dir():
                        yield f"{name}!{info.filename}", zf.read(info)


def _text(name: str, data: bytes) -> str:
    if name.endswith(".ipynb"):
        cells = json.loads(data).get("cells", [])
        return "\n".join("".join(c.get("source", "")) if isinstance(c.get("source"), list)
                         else c.get("source", "") for c in cells)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return ""  # binary: checked by the value audit when it is a tensor file


def _tensor_keys(data: bytes) -> set[str] | None:
    """The keys of a values file: capgrade's own format (safetensors + JSON) or torch.save."""
    from grader import protocol

    try:
        values = protocol.decode(data)
    except protocol.ProtocolError:
        import torch

        try:
            values = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception:
            return None
    return set(values) if isinstance(values, dict) else None


def audit(folder: Path, reference: Path = REFERENCE, stub: Path = STUB,
          hidden: Path = HIDDEN) -> list[str]:
    """Why ``folder`` must not go to students (empty: nothing secret found)."""
    secret_lines = solution_lines(reference, stub)
    hidden_bytes = hidden.read_bytes() if hidden.is_file() else None
    hidden_keys = set(ex.load(hidden)) - {ex.META} if hidden_bytes else set()
    problems = []
    for name, data in _members(folder):
        base = name.rsplit("!", 1)[-1].rsplit("/", 1)[-1]
        if base == hidden.name or data == hidden_bytes:
            problems.append(f"{name}: the hidden expected values file")
            continue
        if base.endswith((".pt", ".pth", ".safetensors")):
            keys = _tensor_keys(data)
            if keys and keys & hidden_keys:
                problems.append(f"{name}: holds hidden expected values "
                                f"({sorted(keys & hidden_keys)[0]}, ...)")
            continue
        text = _text(name, data)
        for line in sorted(secret_lines):
            if line in text:  # anywhere: inside a string or a comment counts too
                number = text[:text.index(line)].count("\n") + 1
                problems.append(f"{name}:{number}: a line of the solution: {line}")
    return problems


# -- the bundle ----------------------------------------------------------------------------


def build_release(out: Path, force: bool = False) -> list[Path]:
    """Write the student bundle into ``out``; returns its files. Raises ReleaseError."""
    for needed in (REFERENCE, STUB, NOTEBOOK, STUDENT_GUIDE, ex.PUBLIC_PATH):
        if not needed.is_file():
            raise ReleaseError(f"{needed} is missing: `capgrade release` runs in the "
                               "instructors' checkout (reference/ included)")
    if not stub_is_current(REFERENCE, STUB):
        raise ReleaseError(f"{STUB} is stale: run `capgrade build` first")
    stale = ex.staleness(ex.PUBLIC_PATH, REFERENCE)
    if stale:
        raise ReleaseError(f"the public expected values are stale ({'; '.join(stale)}): run "
                           "`capgrade build` first")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise ReleaseError(f"{out} is not empty: choose another folder or pass --force")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        wheel = build_wheel(out)
        shutil.copy2(STUB, out / STUB.name)
        shutil.copy2(NOTEBOOK, out / NOTEBOOK.name)
        shutil.copy2(STUDENT_GUIDE, out / "README.md")
        try:
            classroom.write_starter(out, wheel.name)
        except pins.PinError as exc:
            raise ReleaseError(f"cannot pin torch for the Classroom workflow: {exc}") from None
        problems = audit(out)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    if problems:
        shutil.rmtree(out, ignore_errors=True)
        raise ReleaseError("the release would leak instructor material; nothing written:\n  "
                           + "\n  ".join(problems[:20]), leak=True)
    return sorted(p for p in out.rglob("*") if p.is_file())
