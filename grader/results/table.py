"""The terminal and notebook view of one ``SubmissionResult`` (a rich table)."""

from __future__ import annotations

import math
from typing import Any

from rich.cells import cell_len
from rich.console import Console, Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from grader.results import STATUSES, CheckResult, RunStatus, Status, SubmissionResult
from grader.results.order import notebook_order
from grader.results.text import _measured, _num, _total, clean, first_line, review_note

STATUS_STYLES: dict[str, str] = {
    Status.PASSED: "green", Status.FAILED: "red", Status.ERROR: "magenta",
    Status.SKIPPED: "dim", Status.ADVISORY: "yellow"}




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
    scores = [f"{'-' if c.status is Status.SKIPPED else _num(c.score)}/{_num(c.max_score)}"
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
    if result.status is not RunStatus.GRADED:
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
    if not compact and check.status is not Status.PASSED:
        lines += [x for x in (_measured(check),) if x]
    if not lines:
        return []
    if compact and len(lines) > COMPACT_MESSAGE_LINES:
        more = len(lines) - COMPACT_MESSAGE_LINES + 1
        lines = [*lines[:COMPACT_MESSAGE_LINES - 1],
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
