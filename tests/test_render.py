"""Every output format renders the same result faithfully and survives hostile messages."""

from __future__ import annotations

import io
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import ClassVar

import pytest
from rich.console import Console

from grader.results import CheckResult, SubmissionResult
from grader.results.render import (
    RENDERERS,
    build_table,
    clean,
    gradescope_dict,
    render_csv_row,
    render_gradescope,
    render_json,
    render_junit,
    render_table,
    write,
)

# Markup and XML specials, a CDATA terminator, quotes, NUL, an ANSI colour, a vertical tab.
NASTY = 'expected <0.5 & got "1" ]]> \x00here\x1b[31m red\x1b[0m\x0b\nsecond line [bold]x[/]'


def make_result(status: str = "graded", message: str = "") -> SubmissionResult:
    checks = [
        CheckResult("rnn_step_forward", "passed", 2.0, 2.0, "public", "",
                    error=1.5e-9, tolerance="rtol=1e-05, atol=1e-08", duration=0.012,
                    target="rnn_step_forward", group="rnn"),
        CheckResult("rnn_step_backward", "failed", 0.0, 3.0, "hidden", NASTY,
                    error=0.25, tolerance="rtol=1e-05, atol=1e-08", duration=0.5,
                    target="rnn_step_backward", group="rnn", output="print\x07ed\n"),
        CheckResult("lstm_forward", "error", 0.0, 1.5, "after_due_date",
                    "TimeoutError: took longer than 15 s\nTraceback ...", duration=15.0,
                    target="lstm_forward", group="lstm"),
        CheckResult("attention_forward", "skipped", 0.0, 4.0, "public", "needs CUDA",
                    group=""),
        CheckResult("lstm_step_forward", "failed", 0.5, 1.0, "public", "half right",
                    error=float("nan"), tolerance="rtol=1e-05, atol=1e-08",
                    target="lstm_step_forward", group="lstm"),
    ]
    return SubmissionResult(
        submission="students/alice/rnn_lstm_captioning.py", checks=checks, status=status,
        message=message, environment={"capgrade": "0.1.0", "python": "3.11.9",
                                      "torch": "2.3.0"},
        isolation=["subprocess", "rlimit", "no-network"], duration=17.25)


@pytest.fixture
def result() -> SubmissionResult:
    return make_result()


def _no_unsafe_chars(text: str) -> bool:
    return not any(ord(ch) < 0x20 and ch not in "\t\n" for ch in text) and "\x1b" not in text


def test_clean_strips_escapes_and_controls_but_keeps_text():
    out = clean(NASTY)
    assert _no_unsafe_chars(out)
    assert "[31m" not in out and "red" in out
    assert 'expected <0.5 & got "1" ]]> here' in out
    assert out.endswith("second line [bold]x[/]")


# --------------------------------------------------------------------------- JSON


def test_json_round_trips(result):
    text = render_json(result)
    back = SubmissionResult.from_dict(json.loads(text))
    # NaN != NaN, so compare that one field apart.
    assert math.isnan(back.checks[4].error)
    back.checks[4].error = result.checks[4].error = None
    assert back == result


def test_json_is_deterministic_and_sorted(result):
    text = render_json(result)
    assert text == render_json(make_result())
    data = json.loads(text)
    assert list(data) == sorted(data)
    assert data["score"] == 2.5 and data["max_score"] == 7.5
    assert data["counts"] == {"passed": 1, "failed": 2, "error": 1, "skipped": 1,
                              "advisory": 0}


# --------------------------------------------------------------------------- Gradescope


def test_gradescope_top_level_fields(result):
    data = json.loads(render_gradescope(result))
    assert isinstance(data["score"], float)
    assert isinstance(data["execution_time"], int | float) and data["execution_time"] == 17.25
    assert isinstance(data["output"], str) and data["output"]
    assert data["visibility"] == "visible"
    assert data["stdout_visibility"] == "hidden"
    assert data["output_format"] == "text"
    assert data["extra_data"]["isolation"] == ["subprocess", "rlimit", "no-network"]
    assert data["extra_data"]["environment"]["torch"] == "2.3.0"
    assert isinstance(data["tests"], list)


def test_gradescope_tests_fields_and_mapping(result):
    data = json.loads(render_gradescope(result))
    tests = {t["name"]: t for t in data["tests"]}
    # skipped omitted, order kept
    assert [t["name"] for t in data["tests"]] == [
        "rnn_step_forward", "rnn_step_backward", "lstm_forward", "lstm_step_forward"]
    for t in data["tests"]:
        assert isinstance(t["name"], str)
        assert isinstance(t["score"], float) and isinstance(t["max_score"], float)
        assert t["status"] in ("passed", "failed")
        assert isinstance(t["output"], str)
        assert isinstance(t["tags"], list)
        assert t["visibility"] in ("visible", "hidden", "after_due_date")
    assert tests["rnn_step_forward"]["visibility"] == "visible"
    # A hidden check carries points: after the due date, never Gradescope's "hidden".
    assert tests["rnn_step_backward"]["visibility"] == "after_due_date"
    assert tests["lstm_forward"]["visibility"] == "after_due_date"
    assert tests["rnn_step_forward"]["status"] == "passed"
    assert tests["rnn_step_backward"]["status"] == "failed"
    # error -> failed, reason in output
    assert tests["lstm_forward"]["status"] == "failed"
    assert "TimeoutError" in tests["lstm_forward"]["output"]
    assert tests["lstm_forward"]["extra_data"]["status"] == "error"
    assert tests["rnn_step_backward"]["tags"] == ["rnn"]
    # message cleaned but its text kept; measured error reported
    out = tests["rnn_step_backward"]["output"]
    assert _no_unsafe_chars(out) and 'expected <0.5 & got "1" ]]>' in out
    assert "measured 2.50e-01" in out and "rtol=1e-05" in out


def test_gradescope_score_is_sum_and_skipped_does_not_count(result):
    data = json.loads(render_gradescope(result))
    assert data["score"] == pytest.approx(sum(t["score"] for t in data["tests"]))
    assert data["score"] == 2.5
    assert sum(t["max_score"] for t in data["tests"]) == result.max_score == 7.5
    assert "attention_forward" not in render_gradescope(result)


def test_gradescope_is_strict_json_even_with_nan(result):
    text = render_gradescope(result)
    assert "NaN" not in text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard constant {c}"))
    tests = {t["name"]: t for t in gradescope_dict(result)["tests"]}
    assert tests["lstm_step_forward"]["extra_data"]["error"] == "nan"


def test_gradescope_summary_does_not_reveal_hidden_outcomes(result):
    summary = gradescope_dict(result)["output"]
    assert "1 of 2 visible checks passed" in summary
    assert "rnn_step_backward" not in summary


def test_gradescope_failed_submission_reports_reason():
    res = SubmissionResult("bob.py", status="import-error", message="SyntaxError: line 3")
    data = json.loads(render_gradescope(res))
    assert data["score"] == 0.0 and data["tests"] == []
    assert "import-error" in data["output"] and "SyntaxError" in data["output"]


# --------------------------------------------------------------------------- JUnit


def _parse(text: str) -> ET.Element:
    return ET.fromstring(text.encode("utf-8"))


def test_junit_parses_and_counts_match(result):
    root = _parse(render_junit(result))
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "capgrade"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"),
            suite.get("skipped")) == ("5", "2", "1", "1")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [c.id for c in result.checks]
    assert len(cases) == int(suite.get("tests"))
    assert sum(c.find("failure") is not None for c in cases) == 2
    assert sum(c.find("error") is not None for c in cases) == 1
    assert sum(c.find("skipped") is not None for c in cases) == 1
    assert float(suite.get("time")) == pytest.approx(17.25)


def test_junit_testcase_details(result):
    suite = _parse(render_junit(result)).find("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert cases["rnn_step_forward"].get("classname") == "capgrade.rnn"
    assert cases["attention_forward"].get("classname") == "capgrade.checks"
    suite_props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert suite_props["score"] == "2.5" and suite_props["max_score"] == "7.5"
    assert suite_props["environment.torch"] == "2.3.0"
    # Per-check details are suite properties too (the schema has none on a testcase).
    assert suite_props["check.rnn_step_backward.score"] == "0"
    assert suite_props["check.rnn_step_backward.max_score"] == "3"
    assert suite_props["check.rnn_step_backward.visibility"] == "hidden"
    assert suite_props["check.rnn_step_backward.error"] == "0.25"
    assert suite_props["check.lstm_step_forward.score"] == "0.5"
    assert "check.lstm_forward.tolerance" not in suite_props

    failure = cases["rnn_step_backward"].find("failure")
    assert failure.get("message") == 'expected <0.5 & got "1" ]]> here red'
    assert 'expected <0.5 & got "1" ]]> here red' in failure.text
    assert "second line" in failure.text
    assert _no_unsafe_chars(failure.text) and _no_unsafe_chars(failure.get("message"))
    assert cases["rnn_step_backward"].find("system-out").text == "printed\n"
    error = cases["lstm_forward"].find("error")
    assert error.get("message") == "TimeoutError: took longer than 15 s"
    assert cases["attention_forward"].find("skipped").get("message") == "needs CUDA"


#: What the common JUnit XML schema (Jenkins' junit-10.xsd, which CI tools read) lets each
#: element hold; ``file`` and ``line`` on a testcase are pytest's, read by GitLab and others.
JUNIT_CHILDREN = {"testsuites": {"testsuite"},
                  "testsuite": {"properties", "testcase", "system-out", "system-err"},
                  "properties": {"property"}, "property": set(),
                  "testcase": {"skipped", "error", "failure", "system-out", "system-err"},
                  "skipped": set(), "error": set(), "failure": set(), "system-out": set(),
                  "system-err": set()}
JUNIT_ATTRIBUTES = {
    "testsuites": {"name", "time", "tests", "failures", "disabled", "errors"},
    "testsuite": {"name", "tests", "failures", "errors", "group", "time", "skipped",
                  "timestamp", "hostname", "id", "package", "file", "log", "url", "version"},
    "testcase": {"name", "assertions", "time", "classname", "status", "group", "file", "line"},
    "property": {"name", "value"}, "properties": set(),
    "skipped": {"message"}, "error": {"message", "type"}, "failure": {"message", "type"},
    "system-out": set(), "system-err": set()}


def _assert_junit_schema(root: ET.Element) -> None:
    assert root.tag == "testsuites"
    for el in root.iter():
        assert {child.tag for child in el} <= JUNIT_CHILDREN[el.tag], el.tag
        assert set(el.attrib) <= JUNIT_ATTRIBUTES[el.tag], (el.tag, el.attrib)
    for suite in root.findall("testsuite"):
        tags = [child.tag for child in suite]
        assert tags.count("properties") <= 1 and tags[:1] == ["properties"]  # first, once
        for case in suite.findall("testcase"):
            assert len(case.findall("skipped")) <= 1


def _located(result: SubmissionResult) -> SubmissionResult:
    for i, c in enumerate(result.checks):
        c.file, c.line = f"grader/checks/test_{c.group or 'misc'}.py", 10 + i
    return result


def test_junit_properties_only_at_suite_level_and_valid_schema(result):
    for res in (result, _located(make_result()), _with_advisory(),
                SubmissionResult("bob.py", status="import-error", message="SyntaxError")):
        root = _parse(render_junit(res))
        _assert_junit_schema(root)
        assert root.findall(".//testcase/properties") == []
        assert len(root.findall("testsuite/properties")) == 1
        assert len(root.findall(".//properties")) == 1


def test_junit_testcases_carry_file_and_line(result):
    located = _located(make_result())
    cases = _parse(render_junit(located)).findall("testsuite/testcase")
    assert [(c.get("file"), c.get("line")) for c in cases] == [
        (c.file, str(c.line)) for c in located.checks]
    # A result stored before checks had a location: no made-up attributes.
    case = _parse(render_junit(result)).find("testsuite/testcase")
    assert case.get("file") is None and case.get("line") is None
    # A submission that could not be graded points at its own file.
    res = SubmissionResult("bob/rnn_lstm_captioning.py", status="import-error", message="x")
    case = _parse(render_junit(res)).find("testsuite/testcase")
    assert case.get("file") == "bob/rnn_lstm_captioning.py"


def _assert_points_at_its_def(check_id: str, file: str, line: int) -> None:
    """``file`` is in the project, and ``line`` is the ``def`` of the check's test function."""
    from grader.sandbox import PACKAGE_ROOT

    assert file.startswith("grader/checks/test_") and not Path(file).is_absolute()
    text = (PACKAGE_ROOT / file).read_text().splitlines()[line - 1]
    name = check_id.split("[", maxsplit=1)[0]
    assert text.startswith(f"def test_{name}("), (check_id, file, line, text)


def test_every_check_location_is_its_def():
    """Every check in the catalogue, decorated (parametrized) ones included."""
    import contextlib

    from grader.harness import plugin as plugin_module
    from grader.harness.engine import _pytest_args
    from grader.harness.request import GradingRequest

    class Collect:
        items: ClassVar[list] = []

        def pytest_collection_finish(self, session):
            Collect.items = list(session.items)

    request = GradingRequest(Path("unused.py"), hidden=True, slow=True, notebook=True)
    with contextlib.redirect_stdout(io.StringIO()):
        pytest.main([*_pytest_args(request), "--collect-only"],
                     plugins=[plugin_module.GradingPlugin(request), plugin_module, Collect()])
    assert len(Collect.items) > 40
    decorated = 0
    for item in Collect.items:
        file, line = plugin_module.check_location(item)
        _assert_points_at_its_def(plugin_module.check_id(item), file, line)
        decorated += item.location[1] + 1 != line  # pytest's own line is the decorator's
    assert decorated > 0


@pytest.mark.slow
def test_graded_junit_points_at_the_checks():
    """End to end: the plugin records each check's location and the JUnit file carries it."""
    from grader.harness.engine import run_checks
    from tests.conftest import REFERENCE

    result = run_checks(REFERENCE, only="rnn_step_forward", hidden=True)
    root = _parse(render_junit(result))
    _assert_junit_schema(root)
    cases = root.findall("testsuite/testcase")
    assert len(cases) == 3  # the public check and the hidden one, parametrized twice
    for case in cases:
        assert case.find("failure") is None and case.find("error") is None
        _assert_points_at_its_def(case.get("name"), case.get("file"), int(case.get("line")))


def test_junit_survives_every_control_character():
    msg = "".join(chr(i) for i in range(0x20)) + "\ud800\ufffe tail ]]> <x/> '\""
    res = SubmissionResult("s.py", checks=[CheckResult("c", "failed", 0, 1, message=msg)])
    root = _parse(render_junit(res))
    failure = root.find("testsuite/testcase/failure")
    assert failure.text.endswith("tail ]]> <x/> '\"")
    assert _no_unsafe_chars(failure.text)


def test_junit_failed_submission_is_an_error():
    res = SubmissionResult("bob.py", status="import-error", message="SyntaxError: line 3")
    suite = _parse(render_junit(res)).find("testsuite")
    assert suite.get("tests") == "1" and suite.get("errors") == "1"
    case = suite.find("testcase")
    assert case.get("name") == "import-error"
    assert case.find("error").get("message") == "SyntaxError: line 3"


# --------------------------------------------------------------------------- table


def _table_text(result: SubmissionResult, compact: bool = False) -> str:
    buf = io.StringIO()
    render_table(result, console=Console(file=buf, width=200), compact=compact)
    return buf.getvalue()


def test_table_lists_every_check_and_the_total(result):
    text = _table_text(result)
    for c in result.checks:
        assert c.id in text
    assert "Total 2.5 / 7.5" in text
    assert "1 passed, 2 failed, 1 error, 1 skipped" in text
    # one footer line by default; verbose lists the layers (the layout change of issue 27)
    assert "isolation: 3 layers (--verbose)" in text and "rlimit" not in text
    verbose = io.StringIO()
    render_table(result, console=Console(file=verbose, width=200), verbose=True)
    assert all(f"  {layer}\n" in verbose.getvalue() for layer in result.isolation)
    assert "torch 2.3.0" in text
    # full mode: measured error vs tolerance and the whole message, markup shown literally
    assert "2.50e-01" in text and "rtol=1e-05, atol=1e-08" in text and "nan" in text
    assert "second line [bold]x[/]" in text
    assert "3/3" not in text and "0/3" in text
    assert _no_unsafe_chars(text.replace("\n", ""))


def test_table_compact_shows_whole_messages_below_and_no_tolerance(result):
    # issue 27: the compact (notebook) table used to keep only each message's first line,
    # cut to the cell; the messages now follow the table whole
    text = _table_text(result, compact=True)
    for c in result.checks:
        assert c.id in text
    assert "Total 2.5 / 7.5" in text
    assert "second line [bold]x[/]" in text and "Traceback ..." in text
    assert "TimeoutError: took longer than 15 s" in text
    assert "tolerance" not in text


def test_table_colours_statuses(result):
    buf = io.StringIO()
    Console(file=buf, width=200, force_terminal=True, color_system="standard").print(
        build_table(result))
    text = buf.getvalue()
    assert "\x1b[32mpassed" in text and "\x1b[31mfailed" in text and "\x1b[35merror" in text


def test_table_shows_grading_failure():
    res = SubmissionResult("bob.py", status="import-error", message="SyntaxError: line 3")
    text = _table_text(res)
    assert "grading import-error: SyntaxError: line 3" in text


# --------------------------------------------------------------------------- CSV, write


def test_csv_row(result):
    row = render_csv_row(result)
    assert row["submission"] == result.submission and row["status"] == "graded"
    assert row["score"] == 2.5 and row["max_score"] == 7.5
    assert row["rnn_step_forward"] == 2.0 and row["lstm_step_forward"] == 0.5
    assert row["attention_forward"] == ""
    assert list(row)[4:] == [c.id for c in result.checks]


@pytest.mark.parametrize("fmt", sorted(RENDERERS))
def test_write_every_format(result, fmt):
    buf = io.StringIO()
    write(result, fmt, buf)
    text = buf.getvalue()
    assert text.endswith("\n")
    if fmt in ("json", "gradescope"):
        json.loads(text)
    elif fmt == "junit":
        _parse(text)
    else:
        assert "rnn_step_forward" in text


def test_write_rejects_unknown_format(result):
    with pytest.raises(ValueError, match="unknown format"):
        write(result, "yaml", io.StringIO())


def test_cli_formats_all_have_renderers():
    from grader.cli import build_parser

    check = build_parser()._subparsers._group_actions[0].choices["check"]
    (fmt,) = [a for a in check._actions if a.dest == "format"]
    assert set(fmt.choices) == set(RENDERERS)


def test_table_drops_measurement_column_when_nothing_measured():
    res = SubmissionResult("s.py", checks=[CheckResult("a", "passed", 1, 1),
                                           CheckResult("b", "failed", 0, 1, message="wrong")])
    text = _table_text(res)
    assert "measured" not in text and "wrong" in text
    assert "measured" in _table_text(make_result())


# --------------------------------------------------------------------------- advisories


def _with_advisory() -> SubmissionResult:
    result = make_result()
    result.checks = [result.checks[0], CheckResult(
        "temporal_softmax_loss_hidden[none]", "advisory", 0.0, 0.0, "public",
        "advisory, worth no points: raised TypeError\nWhy no points: not required",
        group="embedding_loss", requires="not required", advisory=True)]
    return result


def test_an_advisory_shows_in_every_format_and_never_fails():
    result = _with_advisory()
    assert result.all_passed and result.score == result.max_score == 2.0
    stream = io.StringIO()
    render_table(result, console=Console(file=stream, width=200))
    assert "advisory" in stream.getvalue()
    test = gradescope_dict(result)["tests"][1]
    assert "status" not in test and test["max_score"] == 0 and "advisory" in test["tags"]
    assert "worth no points" in test["output"]
    root = ET.fromstring(render_junit(result))
    case = root.find(".//testcase[@name='temporal_softmax_loss_hidden[none]']")
    assert case.find("failure") is None and case.find("error") is None
    assert "worth no points" in case.find("system-out").text
    assert root.find("testsuite").get("failures") == "0"
    assert render_csv_row(result)["temporal_softmax_loss_hidden[none]"] == "advisory"
    from grader.results.render import render_markdown
    assert "advisory" in render_markdown(result)
    back = SubmissionResult.from_dict(json.loads(render_json(result)))
    assert back.checks[1].advisory and back.checks[1].requires == "not required"


def test_feedback_page_shows_advisories():
    from grader.results.reports import feedback_html

    page = feedback_html("alice", "graded", "", _with_advisory().to_dict())
    assert "class='advisory'" in page and "worth no points" in page
