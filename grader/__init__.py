"""capgrade: an autograder for the RNN / LSTM / attention-LSTM captioning assignment."""

from __future__ import annotations

from typing import TYPE_CHECKING

from grader.contract import MODULE_FILE

if TYPE_CHECKING:
    from pathlib import Path

    from grader.results import SubmissionResult

__version__ = "0.1.0"


def check(only: str | None = None, path: str = MODULE_FILE, **options) -> SubmissionResult | None:
    """Notebook helper: run the public checks (``only``: a -k expression) and show a compact table.

    ``options`` are ``grader.harness.request.GradingRequest`` fields. Returns the
    SubmissionResult so a cell can inspect it; None when the grader itself is
    running the notebook (grading mode), which grades the module on its own: a
    check worker beside the kernel would only cost time and a second torch in memory.
    """
    from pathlib import Path

    from grader.notebook.handin import grading_mode

    if grading_mode():
        print("capgrade: checks skipped in grading mode (the grader runs them all itself)")
        return None
    from grader.harness.engine import grade
    from grader.harness.request import GradingRequest
    from grader.results.render import render_table

    result = grade(GradingRequest(submission=Path(path), only=only, **options))
    if result.status != "graded":
        print(f"capgrade: {result.message}")
    # Messages go whole below the table (not in a column the kernel's 115 characters would
    # squeeze), in the notebook's order; verbose=True also lists every isolation layer.
    render_table(result, compact=True, verbose=bool(options.get("verbose")))
    return result


def check_all(path: str = MODULE_FILE, **options) -> SubmissionResult | None:
    """Notebook helper, as otter's ``grader.check_all()``: every public check, then one line.

    The same run as ``check()`` with no selection (so as ``capgrade check``);
    the closing line says at a glance whether anything is left to do. Returns
    the SubmissionResult.
    """
    result = check(None, path, **options)
    if result is None:  # grading mode
        return None
    ran = [c for c in result.checks if c.status != "skipped"]
    todo = [c for c in ran if c.counts_against]
    points = f"{result.score:g} / {result.max_score:g} points"
    if result.status != "graded" and not ran:
        print(f"No checks ran ({result.status}): see the message above.")
    elif todo:
        print(f"{len(ran) - len(todo)} of {len(ran)} checks passed ({points}); "
              f"{len(todo)} still failing: see the table.")
    else:
        print(f"All {len(ran)} public checks passed ({points}).")
    return result


def export(folder: str | Path = ".", out: str | Path | None = None, *, force: bool = False,
           **paths) -> Path | None:
    """Notebook helper, as otter's ``grader.export()``: vet the hand-in, zip it, return the path.

    The zip holds exactly the module, the notebook and the loss file; a missing
    or broken one stops it unless ``force=True``. Nothing happens in grading
    mode. See ``grader.notebook.handin.export`` for ``paths`` (module=, notebook=,
    loss_file=, grading=).
    """
    from grader.notebook.handin import export as export_handin

    return export_handin(folder, out, force=force, **paths)


def installed_versions(dists: tuple[str, ...]) -> list[str]:
    """``["torch 2.14.1", "torchvision not installed"]``, from package metadata (no import)."""
    from importlib import metadata

    found = []
    for dist in dists:
        try:
            found.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            found.append(f"{dist} not installed")
    return found


def version_text() -> str:
    """``capgrade X (torch Y, torchvision Z, Python W)``, read without importing torch."""
    import platform

    parts = installed_versions(("torch", "torchvision"))
    parts.append(f"Python {platform.python_version()}")
    return f"capgrade {__version__} ({', '.join(parts)})"
