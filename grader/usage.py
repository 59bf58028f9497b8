"""The command line's shared vocabulary: its usage errors and the options several commands take.

Commands raise ``UsageError`` for the caller's mistakes (what a command refuses
before, or instead of, doing its work); ``grader.cli.main`` catches it once, prints
each message as ``capgrade COMMAND: message`` on stderr and exits with its code (2).
The ``add_*`` helpers declare an option once for every command that takes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class UsageError(Exception):
    """Refused: ``messages`` said on stderr, one line each, then exit ``code``.

    ``command`` names the subcommand the messages are about when it is not the one
    run (``capgrade build`` refusing on behalf of its stub step says ``build-stub``).
    """

    def __init__(self, *messages: str, code: int = 2, command: str | None = None) -> None:
        super().__init__(*messages)
        self.messages = messages
        self.code = code
        self.command = command


# -- options several commands take: declared once, their defaults from the constants ----------

def add_paths(parser: Any, *names: str) -> None:
    """--reference, --stub, --hidden-expected: one wording wherever a command takes them."""
    from grader.authoring.build import REFERENCE, STUB
    from grader.harness.expected import HIDDEN_PATH

    helps = {"reference": ("--reference", REFERENCE, "the reference solution"),
             "stub": ("--stub", STUB, "the student stub"),
             "hidden": ("--hidden-expected", None,
                        f"hidden expected values (default: {HIDDEN_PATH})")}
    for name in names:
        flag, default, text = helps[name]
        parser.add_argument(flag, type=Path, default=default,
                            help=text + (" (default: %(default)s)" if default else ""))


def add_out(parser: Any, default: str | None, text: str) -> None:
    """``-o/--out``; ``default`` None: nothing written unless given."""
    parser.add_argument("-o", "--out", type=Path, default=None if default is None else
                        Path(default), help=text if default is None else
                        f"{text} (default: %(default)s)")


def add_workers(parser: Any) -> None:
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel gradings (default: the number of cores)")


def add_timeout(parser: Any) -> None:
    """``--timeout``: seconds one call into student code may take (grader.harness.client)."""
    from grader.harness.client import CALL_TIMEOUT

    parser.add_argument("--timeout", type=float, default=None,
                        help=f"seconds one call into student code may take (default: "
                             f"{CALL_TIMEOUT:g})")


def add_grading_choices(parser: Any) -> None:
    """What `grade` and `gradescope` may leave out, and the per-call timeout: one wording."""
    parser.add_argument("--no-slow", action="store_true",
                        help="leave out the overfit and loss-file checks")
    parser.add_argument("--no-notebook", action="store_true",
                        help="do not execute the submitted notebooks")
    add_timeout(parser)
