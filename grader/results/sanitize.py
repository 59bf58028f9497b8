"""TRUSTED side: student-chosen text made harmless, and bounded, before it enters a result.

Exception messages, captured output, the code lines of the student's frames, file
names and notebook cell text are the student's choice. Where they enter a result
(``grader.harness.plugin``, the engine's import failure, the notebook report) they
pass through ``student_text``, so every rendering (terminal table, JSON, Markdown,
HTML, JUnit, CSV, Gradescope ``results.json``) shows the same clean text:

- control characters (C0 but tab and newline, DEL, C1: so no ESC or CSI sequence
  reaches a terminal), Unicode bidi controls (U+202A-U+202E, U+2066-U+2069, U+200E,
  U+200F, U+061C: "Trojan Source" reordering), line/paragraph separators, the BOM,
  lone surrogates and the two non-characters XML forbids are written out as their
  escapes (``\\x1b``, ``\\u202e``), so a reviewer sees that something was there;
- ``\\r\\n`` becomes ``\\n``;
- the text is cut to a cap, saying how much was cut.

``sanitize`` is idempotent: its replacements are plain ASCII.
"""

from __future__ import annotations

import re

#: Characters a terminal, a Markdown or HTML viewer, or an XML parser would act on.
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e"
                    "\u2066-\u2069\ufeff\ufffe\uffff\ud800-\udfff]")

#: Caps on what a check result keeps of student-chosen text (characters, after cleaning).
MESSAGE_CAP = 8_000  # a check's whole message (the student's error is 2,000 of it at most)
OUTPUT_CAP = 4_000  # captured output per check
NAME_CAP = 255  # a file name
LINE_CAP = 200  # one line shown for context (a notebook cell's first line)


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def sanitize(text: str) -> str:
    """``text`` with every unsafe character written out as its escape (``\\u202e``)."""
    return UNSAFE.sub(_visible, str(text).replace("\r\n", "\n"))


def student_text(text: object, cap: int | None = None) -> str:
    """Student-chosen ``text`` sanitised and, with ``cap``, cut to at most ``cap`` characters.

    Only the first ``cap`` characters are looked at, however long the text.
    """
    text = "" if text is None else str(text)
    if cap is None:
        return sanitize(text)
    clean = sanitize(text[:cap])
    if len(text) <= cap and len(clean) <= cap:
        return clean
    note = f" [... cut: {len(text):,} characters in all]"
    if len(note) * 2 > cap:  # no room to say so
        return clean[:cap]
    return clean[:cap - len(note)] + note
