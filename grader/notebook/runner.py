"""Execute a submitted notebook safely and report on every cell.

The notebook is untrusted twice over: its code is the student's, and so are
the outputs stored in it. So the stored outputs are dropped unread, a
parameters cell switches the notebook to grading mode, and a kernel started
under the sandbox's limits (``grader.sandbox``: scrubbed environment, a fresh
temp dir as cwd and HOME, its own session, its process group killed at the
end) executes it cell by cell with nbclient. Each cell is judged by the
status of the kernel's execute reply, never by what it printed. A cell that
raises is recorded and execution goes on; a cell past its timeout is
interrupted (the kernel is replaced when it does not answer); a kernel that
dies is replaced; output beyond a cap is dropped; a whole-notebook budget
bounds the run. The executed copy and an HTML export are kept for a TA.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import nbformat
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from grader import sandbox
from grader.contract import MODULE_NAME, NOTEBOOK_FILE
from grader.course import settings
from grader.notebook.kernel import _CappedClient, _Kernel
from grader.notebook.report import (
    CellRun,
    NotebookReport,
    _report_markdown,
    _safe_name,
    clean_report,
)
from grader.sandbox import resources

NOTEBOOK_NAME = NOTEBOOK_FILE
CELL_TIMEOUT = settings.CELL_TIMEOUT
BUDGET = settings.NOTEBOOK_BUDGET
CELL_OUTPUT_CAP = 2_000_000  # characters of output kept per cell (a PNG counts as base64)
TOTAL_OUTPUT_CAP = 20_000_000  # and for the whole notebook
PRODUCED_FILE_CAP = 50_000_000  # larger files the notebook writes are not copied out
#: Read-only: every run copies it (``run_notebook``, the CLI) before adding to it.
GRADING_PARAMETERS: Mapping[str, Any] = MappingProxyType({"GRADING_MODE": True})
INTERRUPT_GRACE = 5.0  # seconds a timed-out cell's kernel gets to answer after an interrupt


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """Read and validate; raises ValueError with a message a student can act on."""
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        raise ValueError(f"{path.name} does not follow the notebook format "
                         f"({str(exc).splitlines()[0][:200]}); re-save it from Jupyter") from None
    except Exception as exc:  # NotJSONError, UnicodeDecodeError, a bad nbformat version ...
        raise ValueError(f"{path.name} is not a readable Jupyter notebook "
                         f"({type(exc).__name__}: {str(exc)[:200]}); re-save it from Jupyter "
                         "or Colab") from None
    return nb


def prepare(nb: nbformat.NotebookNode, parameters: dict[str, Any]) -> nbformat.NotebookNode:
    """Drop every stored output and inject ``parameters`` after the ``parameters`` cell."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    if not parameters:
        return nb
    source = "# Injected by capgrade run-notebook\n" + "\n".join(
        f"{name} = {value!r}" for name, value in parameters.items())
    injected = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    nb.cells.insert(tagged[0] + 1 if tagged else 0, injected)
    return nb


def run_notebook(notebook: str | Path, module: str | Path | None = None,
                 out_dir: str | Path | None = None, parameters: dict[str, Any] | None = None,
                 cell_timeout: float = CELL_TIMEOUT, budget: float = BUDGET,
                 cell_output_cap: int = CELL_OUTPUT_CAP,
                 total_output_cap: int = TOTAL_OUTPUT_CAP, html: bool = True,
                 secrets: tuple[Path, ...] = sandbox.DEFAULT_SECRETS) -> NotebookReport:
    """Execute ``notebook`` in a sandboxed kernel; never raises for a broken notebook.

    ``module`` (default: ``rnn_lstm_captioning.py`` beside the notebook) is
    copied next to the notebook in a fresh temp dir, the kernel's cwd.
    ``parameters`` default to grading mode. Results land in ``out_dir``:
    ``executed.ipynb``, ``executed.html``, ``notebook_report.json`` and the
    files the notebook wrote under ``produced/``. ``secrets`` are hidden from
    the kernel where the host allows (see ``grader.sandbox``).
    """
    notebook = Path(notebook)
    parameters = dict(GRADING_PARAMETERS if parameters is None else parameters)
    report = NotebookReport(notebook=str(notebook), parameters=parameters)
    start = time.monotonic()
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="capgrade-nb-"))
    out.mkdir(parents=True, exist_ok=True)
    report.out_dir = str(out)
    module = Path(module) if module is not None else notebook.parent / f"{MODULE_NAME}.py"
    if not notebook.is_file():
        report.status, report.message = "missing-file", f"no notebook at {notebook}"
        return _finish(report, None, out, start, html)
    try:
        nb = prepare(read_notebook(notebook), parameters)
    except ValueError as exc:
        report.status, report.message = "invalid-notebook", str(exc)
        return _finish(report, None, out, start, html)

    scratch = Path(tempfile.mkdtemp(prefix="capgrade-kernel-"))
    scratch.chmod(0o711)  # an unprivileged kernel must reach its folders inside
    work = scratch / "work"
    work.mkdir()
    if module.is_file():
        shutil.copyfile(module, work / f"{MODULE_NAME}.py")
    client = _CappedClient(nb, cell_output_cap, total_output_cap, allow_errors=True,
                           interrupt_on_timeout=False, startup_timeout=120,
                           resources={"metadata": {"path": str(work)}},
                           shutdown_kernel="immediate")
    box = sandbox.Sandbox(work, secrets=tuple(secrets))
    kernel = _Kernel(client, box, scratch)
    report.isolation = box.layers
    try:
        try:
            kernel.start()
        except Exception as exc:
            report.status = "kernel-failed"
            report.message = f"the kernel did not start ({type(exc).__name__}: {exc})"
            return _finish(report, nb, out, start, html)
        scale = resources.timeout_scale()  # calibrated on a full core; longer on less
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code" or not cell.source.strip():
                continue
            report.cells.append(_run_cell(client, kernel, report, cell, index, start,
                                          cell_timeout * scale, budget * scale))
    finally:
        kernel.stop()
        report.kernel_pids = list(kernel.pids)
        _collect_produced(work, out, report)
        _keep_log_tail(kernel.log, out / "kernel.log")
        shutil.rmtree(scratch, ignore_errors=True)
    return _finish(report, nb, out, start, html)


def _run_cell(client: _CappedClient, kernel: _Kernel, report: NotebookReport,
              cell: nbformat.NotebookNode, index: int, start: float, cell_timeout: float,
              budget: float) -> CellRun:
    run = CellRun(index=index, status="ok", first_line=cell.source.strip().splitlines()[0][:80])
    left = budget - (time.monotonic() - start)
    if left <= 1:
        run.status, run.message = "skipped", f"the notebook's {budget:g} s budget was used up"
        return run
    client.timeout = int(max(1, min(cell_timeout, left)))
    began = time.monotonic()
    oom = resources.oom_kills()
    kernel_pid = kernel.pids[-1] if kernel.pids else None
    usage = resources.tree_usage(kernel_pid)
    try:
        client.execute_cell(cell, index)
        reply = client.replies.get(index, {}).get("content", {})
        status = reply.get("status", "error")
        if status != "ok":
            run.status = "error"
            run.message = (f"{reply.get('ename', 'Error')}: {reply.get('evalue', '')}"[:500]
                           if status == "error" else f"the kernel answered {status!r}")
    except CellTimeoutError:
        run.status = "timeout"
        run.message = f"still running after {client.timeout} s: interrupted"
        now = resources.tree_usage(kernel_pid)
        if usage is not None and now is not None and resources.starved(
                now - usage, client.timeout / resources.timeout_scale()):
            run.limit = "time"
            run.message += (f" (the grading machine was too busy: the kernel waited for a CPU "
                            f"more than it ran; {resources.describe_host()})")
        if not kernel.answers(INTERRUPT_GRACE):
            run.message += "; the kernel did not answer, so it was replaced (earlier state lost)"
            _replace(kernel, report)
    except DeadKernelError:
        run.status = "kernel-died"
        if resources.killed_for_memory(oom):
            run.limit = "memory"
            run.message = (f"the grading machine ran out of memory and its kernel killed the "
                           f"notebook's kernel ({resources.describe_host()}); later cells ran "
                           "in a fresh kernel without the earlier state")
        else:
            run.message = ("the kernel died (os._exit or a crash); later cells ran in a fresh "
                           "kernel without the earlier state")
        _replace(kernel, report)
    except Exception as exc:  # the kernel's channels broke in some other way
        run.status = "error"
        run.message = f"{type(exc).__name__}: {str(exc)[:300]}"
        _replace(kernel, report)
    run.duration = round(time.monotonic() - began, 3)
    run.output_chars = client.chars.get(index, 0)
    run.truncated = index in client.truncated
    return run


def _replace(kernel: _Kernel, report: NotebookReport) -> None:
    report.kernel_restarts += 1
    kernel.replace()


def _collect_produced(work: Path, out: Path, report: NotebookReport) -> None:
    """Copy out the regular files the notebook wrote in its folder (not links, not huge)."""
    produced = out / "produced"
    for path in sorted(work.iterdir()):
        if path.name == f"{MODULE_NAME}.py" or path.name.startswith("."):
            continue
        if path.is_symlink() or not path.is_file() or path.stat().st_size > PRODUCED_FILE_CAP:
            continue
        name = _safe_name(path.name)  # the notebook chose it: copied out under a clean name
        if name in report.produced:  # two names that read the same once cleaned: the first
            continue
        produced.mkdir(exist_ok=True)
        shutil.copyfile(path, produced / name)
        report.produced.append(name)


def _keep_log_tail(log: Path, dest: Path, chars: int = 20_000) -> None:
    if log.is_file():
        dest.write_text(log.read_text(errors="replace")[-chars:])


def _finish(report: NotebookReport, nb: nbformat.NotebookNode | None, out: Path, start: float,
            html: bool) -> NotebookReport:
    report.duration = round(time.monotonic() - start, 3)
    clean_report(report)
    if nb is not None:
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(
            _report_markdown(report), metadata={"tags": ["capgrade-report"]}))
        executed = out / "executed.ipynb"
        nbformat.write(nb, executed)
        report.executed_path = str(executed)
        if html:
            report.html_path = _export_html(nb, out / "executed.html")
    (out / "notebook_report.json").write_text(json.dumps(report.as_dict(), indent=2))
    return report


def _export_html(nb: nbformat.NotebookNode, path: Path) -> str | None:
    """An HTML copy for a TA; student HTML and scripts in outputs are sanitised away."""
    try:
        from nbconvert import HTMLExporter

        body, _ = HTMLExporter(sanitize_html=True).from_notebook_node(nb)
    except Exception as exc:  # a missing template must not lose the graded run
        path.with_suffix(".txt").write_text(f"HTML export failed: {exc}\n")
        return None
    path.write_text(body, encoding="utf-8")
    return str(path)
