"""Renderings of one ``SubmissionResult``: terminal table, JSON, Gradescope, JUnit, CSV row.

Every format reads the same schema (``grader.results``), so a verdict cannot differ between
what a student sees in the terminal and what Gradescope or CI records. Text that came from
student code (messages, captured output) is cleaned of terminal escapes and control
characters before it reaches any format, so a submission cannot garble a terminal or
produce an XML file that does not parse.

``write(result, fmt, stream)`` is what the CLI calls; ``RENDERERS`` maps its ``--format``
names to writers.
"""

from __future__ import annotations

import json
import math
import re
import sys
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from rich.cells import cell_len
from rich.console import Console, Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from grader.results import STATUSES, CheckResult, SubmissionResult
from grader.results.order import notebook_order
from grader.results.sanitize import sanitize

STATUS_STYLES = {"passed": "green", "failed": "red", "error": "magenta", "skipped": "dim",
                 "advisory": "yellow"}

#: Our visibility -> Gradescope's (gradescope-autograders.readthedocs.io/en/latest/specs/).
#: Our "hidden" checks carry points, and Gradescope's own "hidden" is only for tests that
#: add nothing to the total (students could read a hidden score off the visible total):
#: they go as "after_due_date", or "after_published" where the rubric's [gradescope] table
#: says ``hidden_checks = "after_published"``. While any test is not "visible", Gradescope
#: shows students no total.
GRADESCOPE_VISIBILITY = {"public": "visible", "hidden": "after_due_date",
                         "after_due_date": "after_due_date"}
HIDDEN_CHOICES = ("after_due_date", "after_published")
RUBRIC = Path(__file__).resolve().parent.parent / "checks" / "rubric.toml"
#: Name of the 0-point test only instructors see when the grading machine ran out.
LIMITS_TEST = "Grading machine limits (instructors only)"

# ANSI/VT escape sequences: CSI (colours, cursor moves), OSC (titles, links), two-byte ESC x.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?")
# C0/C1 controls except tab and newline, surrogates and the two non-characters XML 1.0
# forbids. What is left is valid XML 1.0 character data and harmless in a terminal.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def clean(text: str) -> str:
    """Student-controlled text made safe for terminals, JSON consumers and XML.

    Escape sequences are dropped; what is left of controls, bidi overrides and the like
    is written out visibly (``grader.results.sanitize``), in every format, whatever field
    it came in (a student-chosen folder name too).
    """
    text = _ANSI.sub("", str(text)).replace("\r\n", "\n")
    return sanitize(_UNSAFE.sub("", text))


def first_line(text: str) -> str:
    """The first non-empty line of a cleaned message: the part one-line views show."""
    for line in clean(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


def _num(x: float) -> str:
    """Scores printed without float noise: 2 -> '2', 1.5 -> '1.5'."""
    return f"{round(x, 4):g}"


def _ran(result: SubmissionResult) -> list[CheckResult]:
    return [c for c in result.checks if c.status != "skipped"]


def _total(result: SubmissionResult) -> float:
    """Points earned by checks that ran; skipped checks never count (matches max_score)."""
    return round(sum(c.score for c in _ran(result)), 6)


def _measured(check: CheckResult) -> str:
    """'measured 3.1e-03, tolerance rtol=1e-05, atol=1e-08', or '' when nothing was measured."""
    parts = []
    if check.error is not None:
        err = check.error
        parts.append(f"measured {err:.2e}" if math.isfinite(err) else f"measured {err}")
    if check.tolerance:
        parts.append(f"tolerance {clean(check.tolerance)}")
    return ", ".join(parts)


# --------------------------------------------------------------------------- table


#: How much of one check's message the compact (notebook) view prints below the table.
COMPACT_MESSAGE_LINES = 12
#: How a sandbox layer that is missing or weaker than on a grading server is worded
#: (``grader.sandbox.Sandbox.layers``): counted in the footer, listed with ``verbose``.
WEAKENED_LAYERS = ("no ", "home on the host's disk", "runs as root", "same user", "WARNING")
#: Environment keys the one-line footer leaves to ``verbose`` (long, rarely the point).
_LONG_ENVIRONMENT = ("platform", "machine")


def build_table(result: SubmissionResult, compact: bool = False, verbose: bool = False) -> Group:
    """The terminal/notebook view as a rich renderable, for callers that lay it out themselves.

    Laid out so that nothing a student needs is cut at 80 columns or in a notebook cell
    (115): the table holds only short columns (check id, status, score, and in full mode
    the measured error when something was measured), one row per check in the notebook's
    order (``grader.results.order``); every message follows below the table, whole and
    word-wrapped, as pytest's short summary does, so "got ... expected ..." is never
    ellipsised or squeezed into a narrow column. Full mode (the CLI) adds the tolerance
    to a failed check's message; compact mode (notebooks) prints at most
    ``COMPACT_MESSAGE_LINES`` lines of each. The footer is one line (versions and the
    number of isolation layers, and how many are weakened on this host); ``verbose``
    lists every layer and the whole environment.
    """
    checks = notebook_order(result.checks)
    title = Text(clean(result.submission), style="bold")
    table = Table(title=title, title_justify="left", expand=False)
    # The id folds only when the console is narrower than the whole table; status and
    # score never shrink (rich squeezes every column alike once none can wrap).
    table.add_column("check", overflow="fold")
    scores = [f"{'-' if c.status == 'skipped' else _num(c.score)}/{_num(c.max_score)}"
              for c in checks]
    table.add_column("status", no_wrap=True,
                     min_width=max((len(c.status) for c in checks), default=6))
    table.add_column("score", justify="right", no_wrap=True,
                     min_width=max(map(len, scores), default=5))
    measured = not compact and any(c.error is not None for c in checks)
    if measured:
        table.add_column("measured", justify="right", no_wrap=True, min_width=8)
    for c, score in zip(checks, scores, strict=True):
        row: list[Text] = [Text(clean(c.id)), Text(c.status, style=STATUS_STYLES[c.status]),
                           Text(score)]
        if measured:
            row.append(_error_text(c))
        table.add_row(*row)

    counts = result.counts()
    totals = Text.assemble(
        ("Total ", "bold"), (f"{_num(_total(result))} / {_num(result.max_score)}", "bold"), "   ",
        *_join([(f"{counts[s]} {s}", STATUS_STYLES[s] if counts[s] else "dim")
                for s in STATUSES], ", "),
    )
    parts: list[Any] = [table, totals]
    for c, score in zip(checks, scores, strict=True):
        parts += _message_block(c, score, compact)
    if result.status != "graded":
        parts.append(Text(f"grading {result.status}: {first_line(result.message)}",
                          style="bold red"))
    if result.review:
        parts.append(Text(review_note(result), style="bold yellow"))
    parts += _footer(result, compact, verbose)
    return Group(*parts)


def _message_block(check: CheckResult, score: str, compact: bool) -> list[Any]:
    """A check's message below the table: a heading line, then the text indented, whole.

    Nothing for a check with nothing to say (a pass has no message). Rich wraps the text
    at word boundaries to the console's width; no line of it is cut.
    """
    lines = [line.rstrip() for line in clean(check.feedback).strip().splitlines()]
    if not compact and check.status != "passed":
        lines += [x for x in (_measured(check),) if x]
    if not lines:
        return []
    if compact and len(lines) > COMPACT_MESSAGE_LINES:
        more = len(lines) - COMPACT_MESSAGE_LINES + 1
        lines = lines[:COMPACT_MESSAGE_LINES - 1] + [
            f"... {more} more lines: result.checks has the whole message"]
    heading = Text.assemble("\n", (clean(check.id), "bold"), " ",
                            (check.status, STATUS_STYLES[check.status]), f" {score}")
    return [heading, Padding(Text("\n".join(lines)), (0, 0, 0, 2), expand=False)]


def _weakened(layer: str) -> bool:
    return layer.startswith(WEAKENED_LAYERS)


def _footer(result: SubmissionResult, compact: bool, verbose: bool) -> list[Text]:
    """The environment and the isolation, on one line unless ``verbose``.

    A layer that exposes the grader's secrets is always printed whole (an instructor must
    see it); every other layer only with ``verbose``, as ``--format json`` records them.
    """
    env = [f"{k} {clean(str(v))}" for k, v in sorted(result.environment.items())
           if verbose or k not in _LONG_ENVIRONMENT]
    env_text = ", ".join(env) or "environment not recorded"
    layers = [clean(x) for x in result.isolation]
    if verbose:
        listed = "\n".join(f"  {'(weakened) ' if _weakened(x) else ''}{x}" for x in layers)
        return [Text(f"{env_text}\nisolation: {len(layers)} layers" + (
            f"\n{listed}" if listed else ""), style="dim")]
    weak = sum(map(_weakened, layers))
    hint = "verbose=True" if compact else "--verbose"
    count = (f"{len(layers)} layers" + (f", {weak} weakened" if weak else "")
             if layers else "none recorded")
    line = f"{env_text} | isolation: {count}"
    out: list[Any] = [OneLine(f"{line} ({hint})", line, style="dim")]
    out += [Text(x, style="bold red") for x in layers if x.startswith("WARNING")]
    return out


class OneLine:
    """The first of ``variants`` that fits the console's width (the last one cut to fit).

    A footer stays one line at any width without deciding the width before printing.
    """

    def __init__(self, *variants: str, style: str = "") -> None:
        self.variants, self.style = variants, style

    def __rich_console__(self, console: Console, options: Any) -> Any:
        fits = [v for v in self.variants if cell_len(v) <= options.max_width]
        yield Text(fits[0] if fits else self.variants[-1], style=self.style, no_wrap=True,
                   overflow="ellipsis")


def _error_text(check: CheckResult) -> Text:
    """The measured error, as the table's one short column shows it."""
    if check.error is None:
        return Text("")
    err = check.error
    return Text(f"{err:.2e}" if math.isfinite(err) else str(err), style="cyan")


REVIEW_HEADLINE = "NEEDS AN INSTRUCTOR'S REVIEW"


def review_note(result: SubmissionResult) -> str:
    """One line for every rendering: which checks wait for a person, and why."""
    return (f"{REVIEW_HEADLINE} (points withheld until then): "
            + "; ".join(clean(r) for r in result.review))


def _join(items: list[tuple[str, str]], sep: str) -> list[tuple[str, str] | str]:
    out: list[tuple[str, str] | str] = []
    for i, item in enumerate(items):
        if i:
            out.append(sep)
        out.append(item)
    return out


def render_table(result: SubmissionResult, console: Console | None = None,
                 compact: bool = False, verbose: bool = False) -> None:
    """Print the table to ``console`` (a fresh stdout Console by default); returns nothing.

    Use ``build_table`` to get the renderable instead.
    """
    (console or Console()).print(build_table(result, compact=compact, verbose=verbose))


# --------------------------------------------------------------------------- JSON


def render_json(result: SubmissionResult) -> str:
    """The schema itself, sorted keys: what batch grading stores and reads back with from_dict.

    A measured error of NaN is written as ``NaN`` (Python's JSON extension) so that it
    round-trips; that is the one place this output is not strict JSON.
    """
    return json.dumps(result.to_dict(), indent=2, sort_keys=True, default=str)


# --------------------------------------------------------------------------- Gradescope


def _json_safe(value: Any) -> Any:
    """Non-finite floats as strings: Gradescope needs strict JSON (no NaN/Infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, str):
        return clean(value)
    return value


def _finite(x: float) -> float:
    return round(x, 6) if math.isfinite(x) else 0.0


def _test_output(c: CheckResult) -> str:
    lines = []
    if c.status == "error":
        lines.append("error: the check could not judge this function")
    if c.advisory:
        lines.append("advisory check: worth no points, never a failure")
    msg = clean(c.feedback).strip()  # a named mistake first, then the check's message
    if msg:
        lines.append(msg)
    measured = _measured(c)
    if measured:
        lines.append(measured)
    out = clean(c.output).rstrip()
    if out:
        lines.append("--- output of your code ---\n" + out)
    return "\n".join(lines)


def hidden_checks_visibility(rubric: Path = RUBRIC) -> str:
    """How the rubric shows its hidden checks on Gradescope: after_due_date or after_published."""
    try:
        with open(rubric, "rb") as f:
            chosen = tomllib.load(f).get("gradescope", {}).get("hidden_checks", HIDDEN_CHOICES[0])
    except OSError:
        chosen = HIDDEN_CHOICES[0]
    if chosen not in HIDDEN_CHOICES:
        raise ValueError(f"{rubric}: [gradescope] hidden_checks = {chosen!r}: use one of "
                         f"{', '.join(HIDDEN_CHOICES)} (a hidden Gradescope test must not carry "
                         "points)")
    return chosen


def gradescope_dict(result: SubmissionResult, hidden_as: str | None = None) -> dict[str, Any]:
    """Gradescope's results.json as a dict (fields per the Autograder Specifications page).

    Skipped checks are left out and do not count. Our "error" becomes Gradescope's "failed"
    (it only knows passed/failed) with the reason in the output. Advisory checks (0 points)
    carry no status, so Gradescope shows them as neither passed nor failed. Output fields
    are plain text ("text" formats), so messages containing '<' are never interpreted as HTML.
    ``hidden_as``: Gradescope's visibility for our hidden checks (default: the rubric's).
    Checks the grading machine could not judge (out of memory or time) are named in the
    top-level output, and a 0-point test only instructors see says which setting to raise.
    """
    shown = {**GRADESCOPE_VISIBILITY, "hidden": hidden_as or hidden_checks_visibility()}
    tests = []
    for c in _ran(result):
        test = {
            "name": clean(c.id),
            "score": _finite(c.score),
            "max_score": _finite(c.max_score),
            "status": "passed" if c.passed else "failed",
            "output": _test_output(c),
            "visibility": shown[c.visibility],
            "tags": ([clean(c.group)] if c.group else []) + (["advisory"] if c.advisory else [])
            + (["regrade"] if c.regrade else []) + (["review"] if c.review else []),
            "extra_data": _json_safe({"status": c.status, "target": c.target, "error": c.error,
                                      "tolerance": c.tolerance, "duration": c.duration,
                                      "requires": c.requires, "advisory": c.advisory,
                                      "regrade": c.regrade, "review": c.review}),
        }
        if c.advisory:
            del test["status"]
        tests.append(test)
    if result.needs_regrade:
        tests.append({"name": LIMITS_TEST, "score": 0.0, "max_score": 0.0, "status": "failed",
                      "output": limits_note(result), "visibility": "hidden",
                      "tags": ["regrade"]})
    return {
        "score": _finite(_total(result)),
        "execution_time": round(result.duration, 3),
        "output": _gradescope_summary(result),
        "output_format": "text",
        "test_output_format": "text",
        "test_name_format": "text",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "extra_data": _json_safe({"submission": result.submission, "status": result.status,
                                  "isolation": list(result.isolation),
                                  "environment": result.environment,
                                  "counts": result.counts(),
                                  "regrade": result.needs_regrade,
                                  "review": result.review,
                                  "schema_version": result.schema_version}),
        "tests": tests,
    }


#: What the grading machine ran out of, in words.
_RAN_OUT = {"memory": "memory", "time": "CPU time", "cpu": "CPU time", "deadline": "time",
            "grader": "a working grader process"}


def ran_out_words(result: SubmissionResult) -> str:
    """"memory and time": what the grading machine ran out of, for messages."""
    return " and ".join(sorted({_RAN_OUT.get(c.regrade, c.regrade) for c in result.checks
                                if c.regrade}))


#: What an instructor raises when the grading machine ran out of each resource.
_RAISE = {"memory": "the autograder's memory",
          "time": "the autograder's CPUs (or run fewer submissions at once)",
          "cpu": "the sandbox's CPU-time limit (CAPGRADE_SANDBOX_CPU)",
          "deadline": "the autograder's timeout and CPUs (and `capgrade gradescope --deadline`)",
          "grader": "nothing: a grader process (the fork server) stopped; regrade, and report "
                    "it if it happens again"}


def limits_note(result: SubmissionResult) -> str:
    """For instructors: which checks the grading machine could not judge, and what to raise."""
    ran_out = sorted({c.regrade for c in result.checks if c.regrade})
    lines = [f"The grading machine ran out of {ran_out_words(result)} on "
             f"{len(result.needs_regrade)} check(s): {', '.join(result.needs_regrade)}. "
             "They count as 0 until regraded; the student was told it is not their fault.",
             *(f"- {r}: raise {_RAISE.get(r, r)}." for r in ran_out),
             "Gradescope: Configure Autograder, then the container's memory / CPU settings. "
             "Measure what this assignment needs first: capgrade gradescope --trial "
             "SUBMISSION --memory 768M --cpus 0.5 (see the instructor guide), then regrade.",
             "Details:"]
    lines += [f"- {c.id}: {first_line(c.message)}" for c in result.checks if c.regrade]
    return "\n".join(lines)


def _gradescope_summary(result: SubmissionResult) -> str:
    """Top-level text every student sees: says nothing about hidden checks' outcomes."""
    lines = []
    if result.status != "graded":
        lines.append(f"Grading failed ({result.status}): {clean(result.message).strip()}")
    if result.needs_regrade:  # never a verdict: say so first, to the student too
        lines.append(f"GRADING INCOMPLETE: the grading machine ran out of {ran_out_words(result)}"
                     " before every check could judge your code. "
                     "This is not your code's fault: those checks count 0 until your "
                     "instructor regrades the submission on a bigger machine.")
    if result.review:
        lines.append(f"{REVIEW_HEADLINE}: your instructor will look at your code before "
                     f"{len(result.review)} check(s) are scored (their points are withheld "
                     "until then).")
    public = [c for c in _ran(result) if c.visibility == "public"]
    if public:
        lines.append(f"{sum(c.passed for c in public)} of {len(public)} visible checks passed.")
    notes = [c for c in public if c.status == "advisory"]
    if notes:
        lines.append(f"{len(notes)} advisories (worth no points): "
                     f"{', '.join(c.id for c in notes)}.")
    others = len(_ran(result)) - len(public)
    if others:
        lines.append(f"{others} more checks are hidden or shown after the due date.")
    return "\n".join(lines)


def render_gradescope(result: SubmissionResult) -> str:
    """Gradescope's results.json (strict JSON, sorted keys)."""
    return json.dumps(gradescope_dict(result), indent=2, sort_keys=True, allow_nan=False,
                      default=str)


# --------------------------------------------------------------------------- JUnit


def _prop(parent: ET.Element, name: str, value: Any) -> None:
    ET.SubElement(parent, "property", name=name, value=clean(str(value)))


def render_junit(result: SubmissionResult) -> str:
    """JUnit XML for CI dashboards: one testsuite, one testcase per check.

    Each testcase carries ``file`` and ``line`` (the check's test function, as pytest's own
    junitxml does) so CI can annotate it. Properties live only on the testsuite, the one place
    the common JUnit schema allows them: per-check ones are named ``check.<id>.<field>``.
    When grading itself failed (status other than "graded") an extra testcase
    ``capgrade.submission/<status>`` carries the reason as an error, so CI never shows a
    submission that did not import as green with zero tests.
    """
    counts = result.counts()
    n_tests = len(result.checks)
    n_errors = counts["error"]
    if result.status != "graded":
        n_tests += 1
        n_errors += 1
    attrs = {"name": "capgrade", "tests": str(n_tests), "failures": str(counts["failed"]),
             "errors": str(n_errors), "time": f"{result.duration:.3f}"}
    root = ET.Element("testsuites", attrs)  # the schema gives <testsuites> no "skipped"
    suite = ET.SubElement(root, "testsuite", {**attrs, "skipped": str(counts["skipped"])})
    props = ET.SubElement(suite, "properties")
    _prop(props, "submission", result.submission)
    _prop(props, "status", result.status)
    _prop(props, "score", _num(_total(result)))
    _prop(props, "max_score", _num(result.max_score))
    _prop(props, "isolation", ", ".join(result.isolation))
    if result.review:
        _prop(props, "review", review_note(result))
    for key, value in sorted(result.environment.items()):
        _prop(props, f"environment.{key}", value)

    for c in result.checks:
        case = ET.SubElement(suite, "testcase", classname=f"capgrade.{clean(c.group) or 'checks'}",
                             name=clean(c.id), time=f"{c.duration:.3f}")
        if c.file:
            case.set("file", clean(c.file))
        if c.line > 0:
            case.set("line", str(c.line))
        prefix = f"check.{clean(c.id)}."
        _prop(props, prefix + "score", _num(c.score))
        _prop(props, prefix + "max_score", _num(c.max_score))
        _prop(props, prefix + "visibility", c.visibility)
        if c.advisory:
            _prop(props, prefix + "advisory", "true")
        if c.requires:
            _prop(props, prefix + "requires", c.requires)
        if c.error is not None:
            _prop(props, prefix + "error", c.error)
        if c.tolerance:
            _prop(props, prefix + "tolerance", c.tolerance)
        if c.review:
            _prop(props, prefix + "review", clean(c.review))
        if c.status in ("failed", "error"):
            tag = "failure" if c.status == "failed" else "error"
            body = "\n".join(x for x in (clean(c.feedback).strip(), _measured(c)) if x)
            el = ET.SubElement(case, tag, message=first_line(c.feedback), type=c.status)
            el.text = body
        elif c.status == "skipped":
            el = ET.SubElement(case, "skipped")
            if first_line(c.message):
                el.set("message", first_line(c.message))
        out = clean(c.output)
        if c.status == "advisory":  # reported, never a failure
            out = "\n".join(x for x in (clean(c.message).strip(), out) if x)
        if out:
            ET.SubElement(case, "system-out").text = out

    if result.status != "graded":
        case = ET.SubElement(suite, "testcase", classname="capgrade.submission",
                             name=result.status, time=f"{result.duration:.3f}",
                             file=clean(result.submission))  # the file that could not be graded
        el = ET.SubElement(case, "error", message=first_line(result.message), type=result.status)
        el.text = clean(result.message)

    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")


# --------------------------------------------------------------------------- CSV


def render_csv_row(result: SubmissionResult) -> dict[str, str | float]:
    """One gradebook row: submission, status, totals, then each check id -> its score.

    A skipped check's cell is empty (not 0) so "not run" stays distinguishable from "wrong".
    Submissions that failed to import have no check columns; the batch writer takes the
    union of keys across rows.
    """
    row: dict[str, str | float] = {"submission": result.submission, "status": result.status,
                                   "score": _total(result), "max_score": result.max_score}
    for c in result.checks:
        row[c.id] = gradebook_cell(c.status, c.score, c.advisory)
    if result.review:  # last, so a spreadsheet's check columns keep their places
        row["review"] = "; ".join(clean(r) for r in result.review)
    return row


def gradebook_cell(status: str, score: float, advisory: bool = False) -> str | float:
    """A check's gradebook cell: its score; empty when skipped; advisories say so in words."""
    if status == "skipped":
        return ""
    if advisory:
        return "advisory" if status == "advisory" else "ok"
    return round(score, 6)


def total_cell(score: float | None) -> str:
    """A total as an LMS import reads it ("7.5", "10"); blank when there is no grade, never 0.

    A blank cell is the one way an import can say "no grade here" instead of "scored nothing".
    """
    if score is None:
        return ""
    return f"{round(score, 4):.4f}".rstrip("0").rstrip(".")


# --------------------------------------------------------------------------- Markdown


_MARKS = {"passed": "✅ passed", "failed": "❌ failed", "error": "⚠️ error", "skipped": "skipped",
          "advisory": "💡 advisory"}


def _md_cell(text: str) -> str:
    """Student-controlled text as one GitHub Markdown table cell (no HTML, no new cells)."""
    text = first_line(clean(text))
    for char, escaped in (("\\", "\\\\"), ("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"),
                          ("|", "&#124;"), ("`", "\\`"), ("*", "\\*"), ("_", "\\_"),
                          ("[", "\\["), ("]", "\\]")):
        text = text.replace(char, escaped)
    return text


def render_markdown(result: SubmissionResult) -> str:
    """A GitHub Markdown summary (for $GITHUB_STEP_SUMMARY): totals, then a row per check."""
    ran = _ran(result)
    lines = [f"## capgrade: {sum(c.passed for c in ran)} of {len(ran)} checks passed, "
             f"{_num(_total(result))} / {_num(result.max_score)} points", ""]
    if result.status != "graded":
        lines += [f"**{_md_cell(result.status)}**: {_md_cell(result.message)}", ""]
    if result.review:
        lines += [f"**{REVIEW_HEADLINE}** (points withheld until then): "
                  + "; ".join(_md_cell(r) for r in result.review), ""]
    if ran:
        lines += ["| check | status | points | message |", "|---|---|---|---|"]
        lines += [f"| `{c.id}` | {_MARKS.get(c.status, c.status)} | {_num(c.score)} / "
                  f"{_num(c.max_score)} | {_md_cell(c.feedback)} |" for c in ran]
    return "\n".join(lines)


# --------------------------------------------------------------------------- notebook runs


def notebook_table(report: Any, stream: TextIO | None = None) -> None:
    """A grader.notebook.runner.NotebookReport as a per-cell table and where its files are."""
    console = Console(file=stream if stream is not None else sys.stdout)
    table = Table(title=Text(str(report.notebook)), title_justify="left")
    for name, justify in (("cell", "right"), ("status", "left"), ("s", "right"),
                          ("first line", "left"), ("message", "left")):
        table.add_column(name, justify=justify, overflow="fold")
    styles = {"ok": "green", "skipped": "yellow"}
    for c in report.cells:
        message = c.message + (" [output truncated]" if c.truncated else "")
        table.add_row(str(c.index), Text(c.status, style=styles.get(c.status, "red")),
                      f"{c.duration:.1f}", Text(clean(c.first_line)), Text(clean(message)))
    console.print(table)
    console.print(Text(report.summary()))
    for label, path in (("executed copy", report.executed_path), ("HTML", report.html_path),
                        ("files it wrote", ", ".join(report.produced) or None)):
        if path:
            console.print(Text(f"{label}: {path}"))


# --------------------------------------------------------------------------- writers


def _write_table(result: SubmissionResult, stream: TextIO, verbose: bool = False) -> None:
    render_table(result, console=Console(file=stream), verbose=verbose)


def _writer(render: Callable[[SubmissionResult], str]) -> Callable[[SubmissionResult, TextIO],
                                                                   None]:
    def write_text(result: SubmissionResult, stream: TextIO) -> None:
        stream.write(render(result) + "\n")

    write_text.__doc__ = f"Write {render.__name__}(result) and a newline to the stream."
    return write_text


#: CLI --format name -> writer(result, stream).
RENDERERS: dict[str, Callable[[SubmissionResult, TextIO], None]] = {
    "table": _write_table,
    "json": _writer(render_json),
    "gradescope": _writer(render_gradescope),
    "junit": _writer(render_junit),
    "markdown": _writer(render_markdown),
}
FORMATS = tuple(RENDERERS)


def write(result: SubmissionResult, fmt: str, stream: TextIO | None = None, *,
          verbose: bool = False) -> None:
    """Render ``result`` as ``fmt`` onto ``stream`` (stdout by default); the CLI's one call.

    ``verbose``: the table lists every isolation layer (other formats always record them).
    """
    try:
        writer = RENDERERS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(RENDERERS)}") from None
    stream = stream if stream is not None else sys.stdout
    if fmt == "table":
        _write_table(result, stream, verbose=verbose)
    else:
        writer(result, stream)
