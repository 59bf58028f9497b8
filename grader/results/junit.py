"""JUnit XML of one ``SubmissionResult``, for CI dashboards."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from grader.results import RunStatus, Status, SubmissionResult
from grader.results.text import _measured, _num, _total, clean, first_line, review_note


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
    n_errors = counts[Status.ERROR]
    if result.status is not RunStatus.GRADED:
        n_tests += 1
        n_errors += 1
    attrs = {"name": "capgrade", "tests": str(n_tests), "failures": str(counts[Status.FAILED]),
             "errors": str(n_errors), "time": f"{result.duration:.3f}"}
    root = ET.Element("testsuites", attrs)  # the schema gives <testsuites> no "skipped"
    suite = ET.SubElement(root, "testsuite", {**attrs, "skipped": str(counts[Status.SKIPPED])})
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
        if c.status in (Status.FAILED, Status.ERROR):
            tag = "failure" if c.status is Status.FAILED else "error"
            body = "\n".join(x for x in (clean(c.feedback).strip(), _measured(c)) if x)
            el = ET.SubElement(case, tag, message=first_line(c.feedback), type=c.status)
            el.text = body
        elif c.status is Status.SKIPPED:
            el = ET.SubElement(case, "skipped")
            if first_line(c.message):
                el.set("message", first_line(c.message))
        out = clean(c.output)
        if c.status is Status.ADVISORY:  # reported, never a failure
            out = "\n".join(x for x in (clean(c.message).strip(), out) if x)
        if out:
            ET.SubElement(case, "system-out").text = out

    if result.status is not RunStatus.GRADED:
        case = ET.SubElement(suite, "testcase", classname="capgrade.submission",
                             name=result.status, time=f"{result.duration:.3f}",
                             file=clean(result.submission))  # the file that could not be graded
        el = ET.SubElement(case, "error", message=first_line(result.message), type=result.status)
        el.text = clean(result.message)

    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")
