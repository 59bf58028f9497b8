"""The README and docs/ agree with the commands: every `capgrade` line parses, every link resolves.

Every `capgrade ...` line in a fenced code block of README.md and docs/*.md is parsed by the
real command-line parser (``grader.cli.build_parser``); every relative link points at a file
of this repository and none outside it; the set-up commands the README and the instructor
guide give exist in the Makefile; the point totals the docs state are the rubric's; and the
cheap commands whose result the text states are run.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from grader.cli import build_parser
from grader.harness.plugin import load_rubric

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(\s*)(```+|~~~+)")
SHELL_STOPS = {"|", "||", "&&", ";", ">", ">>", "2>", "2>&1", "&"}


def _fenced_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every line inside a fenced code block, continuations joined."""
    out: list[tuple[int, str]] = []
    fence: str | None = None
    pending: tuple[int, str] | None = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = FENCE.match(line)
        if m and (fence is None or m.group(2).startswith(fence)):
            fence = None if fence is not None else m.group(2)[:3]
            continue
        if fence is None:
            continue
        if pending is not None:
            pending = (pending[0], pending[1] + " " + line.strip())
        else:
            pending = (number, line.strip())
        if pending[1].endswith("\\"):
            pending = (pending[0], pending[1][:-1].rstrip())
            continue
        out.append(pending)
        pending = None
    return out


def _capgrade_argv(text: str) -> list[str] | None:
    """The arguments after `capgrade` on a shell line that runs it, else None."""
    try:
        words = shlex.split(text, comments=True)
    except ValueError:
        return None
    for i, word in enumerate(words):
        if Path(word).name == "capgrade" and (i == 0 or words[i - 1] in SHELL_STOPS):
            argv = []
            for arg in words[i + 1:]:
                if arg in SHELL_STOPS:
                    break
                argv.append(arg)
            return argv
    return None


def _commands() -> list[tuple[str, str, list[str]]]:
    found = []
    for path in DOCS:
        for number, text in _fenced_lines(path):
            argv = _capgrade_argv(text)
            if argv is not None:
                found.append((f"{path.relative_to(ROOT)}:{number}", text, argv))
    return found


COMMANDS = _commands()


def test_the_docs_have_commands() -> None:
    """The extraction works: the README's quick start and the guides' commands are found."""
    where = {loc.split(":")[0] for loc, _, _ in COMMANDS}
    assert {"README.md", "docs/instructor-guide.md"} <= where
    assert len(COMMANDS) >= 30


@pytest.mark.parametrize("where, text, argv", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_every_command_parses(where: str, text: str, argv: list[str]) -> None:
    """The real parser accepts the line as written (usage errors exit with SystemExit)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code == 0 and argv and argv[-1] in ("--version", "-h", "--help"):
            return  # `capgrade --version` exits 0 while parsing, as it should
        pytest.fail(f"{where}: `{text}` does not parse: {err.getvalue().strip()}")
    assert callable(args.func), f"{where}: `{text}`"


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
PATH_IN_CODE = re.compile(r"`(\.\./[^`\s]*)`")


def _links(path: Path) -> list[tuple[int, str]]:
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        out += [(number, m.group(1)) for m in LINK.finditer(line)]
    return out


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_links_stay_in_the_repository_and_resolve(path: Path) -> None:
    problems = []
    for number, target in _links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a web address or an anchor in the same page
        file = (path.parent / target.split("#", 1)[0]).resolve()
        if not file.is_relative_to(ROOT):
            problems.append(f"line {number}: {target} points outside the repository")
        elif not file.exists():
            problems.append(f"line {number}: {target} does not exist")
    text = path.read_text(encoding="utf-8")
    for m in PATH_IN_CODE.finditer(text):
        number = text.count("\n", 0, m.start()) + 1
        if not (path.parent / m.group(1)).resolve().is_relative_to(ROOT):
            problems.append(f"line {number}: {m.group(1)} names a file outside the repository")
    assert not problems, f"{path.relative_to(ROOT)}:\n" + "\n".join(problems)


def test_readme_is_short_and_maps_the_docs() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    linked = {(ROOT / t.split("#", 1)[0]).resolve() for _, t in _links(ROOT / "README.md")}
    for doc in (ROOT / "docs").glob("*.md"):
        assert doc.resolve() in linked, f"the README's map of the docs leaves out {doc.name}"


def _makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {m.group(1) for m in re.finditer(r"^([A-Za-z][\w-]*):", text, re.M)}


def test_quick_start_is_make_demo_and_make_test() -> None:
    """The README's set-up for a fresh machine: exactly `make demo` and `make test`; CI runs
    the second."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [shlex.split(line, comments=True) for line in block.splitlines()]
    assert [c for c in commands if c] == [["make", "demo"], ["make", "test"]]
    assert {"demo", "test", "venv"} <= _makefile_targets()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^make test$", ci, re.M)


def test_every_make_target_in_the_docs_exists() -> None:
    targets = _makefile_targets()
    for path in DOCS:
        for number, text in _fenced_lines(path):
            words = shlex.split(text, comments=True) if text else []
            if words[:1] == ["make"]:
                for target in words[1:]:
                    assert target in targets, f"{path.relative_to(ROOT)}:{number}: make {target}"


def test_instructor_setup_is_not_the_test_suite() -> None:
    """Setting up a grading machine must not be the 30-50 minute `make test`."""
    text = (ROOT / "docs" / "instructor-guide.md").read_text(encoding="utf-8")
    setup = text.split("## 1.", 1)[1].split("\n## ", 1)[0]
    block = setup.split("```sh\n", 1)[1].split("```", 1)[0]
    assert "make venv" in block and "make test" not in block


def test_stated_point_totals_are_the_rubric() -> None:
    """The totals the README and the instructor guide state are what the rubric gives."""
    rubric = load_rubric()
    slow = {k: v for k, v in rubric.items() if v.get("slow")}
    public = sum(v["points"] for k, v in rubric.items()
                 if v["visibility"] == "public" and k not in slow)
    hidden = sum(v["points"] for k, v in rubric.items()
                 if v["visibility"] != "public" and k not in slow)
    overfit = sum(v["points"] for k, v in slow.items() if k.startswith("overfit"))
    lossfile = sum(v["points"] for k, v in slow.items() if k.startswith("submission_file"))
    notebook = sum(v["points"] for k, v in slow.items() if k.startswith("notebook"))
    assert (public, hidden, overfit, lossfile, notebook) == (65, 35, 9, 6, 0)
    total = sum(v["points"] for v in rubric.values())
    assert total == 115 and public + hidden == 100
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "out of\n115" in readme and "grades out of 100" in readme
    guide = (ROOT / "docs" / "instructor-guide.md").read_text(encoding="utf-8")
    assert "The maximum is 115 points" in guide and "109 / 115" in guide
    advisories = [k for k, v in rubric.items() if v.get("advisory")]
    words = {2: "Two", 3: "Three", 4: "Four", 5: "Five"}
    assert f"{words[len(advisories)]} checks are advisories by default" in guide
    assert all(f"`{k}`" in guide for k in advisories)


def _capgrade(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grader.cli", *argv], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)


def test_build_stub_check_reports_in_sync() -> None:
    """`capgrade build-stub --check` exits 1 when the stub is stale: the committed one is not."""
    run = _capgrade("build-stub", "--check")
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.slow
def test_readme_rnn_step_example() -> None:
    """The README: `capgrade check reference/rnn_lstm_captioning.py --only rnn_step` runs the
    public rnn_step checks on the reference and exits 0 (it starts a worker: some seconds)."""
    assert "capgrade check reference/rnn_lstm_captioning.py --only rnn_step`\nruns the" in (
        ROOT / "README.md").read_text(encoding="utf-8")
    run = _capgrade("check", "reference/rnn_lstm_captioning.py", "--only", "rnn_step",
                    "--format", "json")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    import json

    ids = {c["id"] for c in json.loads(run.stdout)["checks"]}
    assert {"rnn_step_forward_public", "rnn_step_backward_public"} <= ids


def test_no_doc_says_plain_all_passes_on_the_reference() -> None:
    """`check reference/... --all` also runs the loss-file and notebook checks, and reference/
    holds neither file (109 / 115, exit 1 on 2026-12-02): no line may promise it passes."""
    folder = ROOT / "reference"
    assert not (folder / "rnn_lstm_attention_submission.pt").exists()
    assert not (folder / "rnn_lstm_captioning.ipynb").exists()
    for where, text, argv in COMMANDS:
        if argv[:1] == ["check"] and "--all" in argv and any(
                a.startswith("reference/") for a in argv) and not {"--only", "--group"} & set(argv):
            comment = text.split("#", 1)[1] if "#" in text else ""
            assert "pass" not in comment, f"{where}: `{text}`"


REPO_PATH = re.compile(r"`((?:grader|tests|scripts|docs|reference|student|notebooks|integrations"
                       r"|\.ci)/[\w./-]*)(?::[\w.]+)?`")


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_files_the_docs_name_exist(path: Path) -> None:
    """A file of the repository named in backticks (`grader/...`, `tests/...`) exists; a
    `module.function` is found by its module's file."""
    text = path.read_text(encoding="utf-8")
    missing = []
    for m in REPO_PATH.finditer(text):
        name = m.group(1)
        module = name.rsplit(".", 1)[0] + ".py"
        if not (ROOT / name).exists() and not (ROOT / module).exists():
            missing.append(f"line {text.count(chr(10), 0, m.start()) + 1}: {name}")
    assert not missing, f"{path.relative_to(ROOT)} names files that do not exist:\n" + \
        "\n".join(missing)
