"""The Gradescope autograder bundle, run as Gradescope runs it, in a temporary /autograder."""

from __future__ import annotations

import json
import stat
import subprocess
import time
import zipfile
from pathlib import Path

import jsonschema
import pytest

from grader.harness import expected as ex
from grader.harness.engine import catalogue
from grader.integrations import gradescope
from grader.results import render
from tests import freshvenv
from tests.conftest import REFERENCE, ROOT
from tests.hostile import BY_NAME as HOSTILE
from tests.test_hostile import any_sandboxed_pids

pytestmark = [pytest.mark.slow, pytest.mark.alone]  # grades whole submissions in sandboxed workers;
# alone: it scans the whole machine, or times itself, so it runs after the corpus's pool

HIDDEN = ROOT / ex.HIDDEN_PATH
MODULE = "rnn_lstm_captioning.py"

_VISIBILITY = {"enum": ["hidden", "after_due_date", "after_published", "visible"]}
_FORMAT = {"enum": ["text", "html", "simple_format", "md", "ansi"]}
#: results.json as Gradescope's "Autograder Specifications" page documents it: only
#: those fields, with their types and allowed values.
RESULTS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "anyOf": [{"required": ["score"]}, {"required": ["tests"]}],
    "properties": {
        "score": {"type": "number"},
        "execution_time": {"type": "number"},
        "output": {"type": "string"},
        "output_format": _FORMAT,
        "test_output_format": _FORMAT,
        "test_name_format": _FORMAT,
        "visibility": _VISIBILITY,
        "stdout_visibility": _VISIBILITY,
        "extra_data": {"type": "object"},
        "leaderboard": {"type": "array"},
        "tests": {"type": "array", "items": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "score": {"type": "number"},
                "max_score": {"type": "number"},
                "status": {"enum": ["passed", "failed"]},
                "name": {"type": "string"},
                "name_format": _FORMAT,
                "number": {"type": "string"},
                "output": {"type": "string"},
                "output_format": _FORMAT,
                "tags": {"type": "array", "items": {"type": "string"}},
                "visibility": _VISIBILITY,
                "extra_data": {"type": "object"},
            },
        }},
    },
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gs") / "autograder.zip"
    return gradescope.build_bundle(out, HIDDEN, slow=False, notebook=False)


@pytest.fixture(scope="module")
def python(bundle, tmp_path_factory) -> Path:
    """A fresh venv with the bundle's own wheel installed (what setup.sh does, offline)."""
    folder = tmp_path_factory.mktemp("gs-venv")
    with zipfile.ZipFile(bundle) as zf:
        wheel = next(n for n in zf.namelist() if n.endswith(".whl"))
        zf.extract(wheel, folder)
    bin_dir = freshvenv.make(folder / "v")
    subprocess.run(["python", "-m", "pip", "install", "--quiet", str(folder / wheel)],
                   env=freshvenv.environment(bin_dir), cwd=folder, check=True)
    return bin_dir / "python"


def _lay_out(bundle: Path, root: Path, files: dict[str, str]) -> Path:
    """``root`` laid out like Gradescope's /autograder, the student's files in submission/."""
    script = gradescope.unpack_for_trial(bundle, root)
    for name, text in files.items():
        (root / "submission" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "submission" / name).write_text(text)
    return script


def _run(script: Path, python: Path) -> dict:
    """Run run_autograder as Gradescope does; results.json, validated against the spec."""
    root = script.parent
    env = freshvenv.environment(python.parent, CAPGRADE_AUTOGRADER_ROOT=str(root),
                                CAPGRADE_PYTHON=str(python))
    done = subprocess.run(["bash", str(script)], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    results = json.loads((root / "results" / "results.json").read_text())
    jsonschema.validate(results, RESULTS_SCHEMA)
    return results


def student_view(results: dict, before_due: bool = True) -> dict:
    """What Gradescope shows a student (its Autograder Specifications page).

    Before the due date: the top-level output and only the "visible" tests; the
    total only when every test is visible (None otherwise). After: every test but
    the "hidden" ones, and the total.
    """
    shown = ("visible",) if before_due else ("visible", "after_due_date", "after_published")
    tests = [{k: t[k] for k in ("name", "score", "max_score", "status", "output") if k in t}
             for t in results["tests"] if t.get("visibility", "visible") in shown]
    every = all(t.get("visibility", "visible") == "visible" for t in results["tests"])
    return {"output": results.get("output"), "tests": tests,
            "score": results["score"] if every or not before_due else None}


def test_before_the_due_date_a_student_sees_nothing_of_the_hidden_checks():
    """Two gradings that differ only in their hidden checks look the same to the student."""
    from dataclasses import replace

    from grader.harness.engine import run_checks

    graded = run_checks(REFERENCE, hidden=True, only="rnn or embedding_loss")
    hidden = [c for c in graded.checks if c.visibility == "hidden"]
    assert hidden and any(c.visibility == "public" for c in graded.checks)
    broken = replace(graded, checks=[
        replace(c, status="failed", score=0.0, message="values differ: 3 of 8 entries",
                error=0.5) if c.visibility == "hidden" else c for c in graded.checks])
    seen = [student_view(render.gradescope_dict(r)) for r in (graded, broken)]
    assert seen[0] == seen[1]
    assert seen[0]["score"] is None  # no total while a test is not visible
    text = json.dumps(seen[0])
    assert not any(c.id in text for c in hidden)
    after = [student_view(render.gradescope_dict(r), before_due=False) for r in (graded, broken)]
    assert after[0] != after[1] and after[1]["score"] < after[0]["score"]  # then it shows


def test_the_rubric_chooses_after_published_and_nothing_else(tmp_path):
    rubric = tmp_path / "rubric.toml"
    rubric.write_text('[gradescope]\nhidden_checks = "after_published"\n')
    assert render.hidden_checks_visibility(rubric) == "after_published"
    rubric.write_text('[gradescope]\nhidden_checks = "hidden"\n')
    with pytest.raises(ValueError, match="must not carry points"):
        render.hidden_checks_visibility(rubric)
    assert render.hidden_checks_visibility() == "after_due_date"  # the shipped rubric's


def _autograde(bundle: Path, python: Path, root: Path, files: dict[str, str]) -> dict:
    return _run(_lay_out(bundle, root, files), python)


def test_the_bundle_is_laid_out_as_gradescope_expects(bundle):
    with zipfile.ZipFile(bundle) as zf:
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in zf.infolist()}
        setup = zf.read("setup.sh").decode()
        config = json.loads(zf.read(gradescope.CONFIG))
        hidden = zf.read(gradescope.HIDDEN_NAME)
        reference = zf.read(gradescope.REFERENCE_NAME)
    wheel = next(n for n in modes if n.endswith(".whl"))
    assert set(modes) == {"setup.sh", "run_autograder", gradescope.CONFIG,
                          gradescope.HIDDEN_NAME, gradescope.REFERENCE_NAME, wheel}
    assert modes["setup.sh"] & stat.S_IXUSR and modes["run_autograder"] & stat.S_IXUSR
    # The hidden values and the reference (which verifies the trainings) are root's alone.
    assert modes[gradescope.HIDDEN_NAME] == modes[gradescope.REFERENCE_NAME] == 0o600
    assert hidden == HIDDEN.read_bytes() and reference == REFERENCE.read_bytes()
    assert f"chmod 600 /autograder/source/{gradescope.HIDDEN_NAME} " \
        f"/autograder/source/{gradescope.REFERENCE_NAME}" in setup
    assert config == {"capgrade": config["capgrade"], "slow": False, "notebook": False,
                      "timeout": None, "deadline": gradescope.DEADLINE,
                      "hidden_expected": gradescope.HIDDEN_NAME,
                      "reference": gradescope.REFERENCE_NAME}
    assert f"./{wheel}" in setup and "chmod 700 /autograder/source" in setup
    for name in ("setup.sh", "run_autograder"):
        with zipfile.ZipFile(bundle) as zf:
            text = zf.read(name).decode()
        syntax = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True)
        assert syntax.returncode == 0, f"{name}: {syntax.stderr}"


def test_a_correct_submission_gets_every_point_with_the_rubrics_visibility(
        bundle, python, tmp_path):
    results = _autograde(bundle, python, tmp_path / "autograder",
                         {f"work/{MODULE}": REFERENCE.read_text()})
    fast = {c["id"]: c for c in catalogue() if not c["slow"]}
    tests = {t["name"]: t for t in results["tests"]}
    assert set(tests) == set(fast)  # public + hidden checks, the slow ones switched off
    # Advisories (0 points) carry no pass/fail status; every other test passed in full.
    graded = {n: t for n, t in tests.items() if "advisory" not in t["tags"]}
    assert all(t["status"] == "passed" and t["score"] == t["max_score"] for t in graded.values())
    assert all("status" not in t and t["max_score"] == 0 for n, t in tests.items()
               if n not in graded)
    assert results["score"] == sum(c["points"] for c in fast.values())
    # Hidden checks carry points: shown after the due date, never Gradescope's "hidden"
    # (for tests that add nothing to the total), so no total leaks before the deadline.
    expected = {"public": "visible", "hidden": "after_due_date",
                "after_due_date": "after_due_date"}
    assert {n: t["visibility"] for n, t in tests.items()} == {
        i: expected[c["visibility"]] for i, c in fast.items()}
    assert "hidden" not in {t["visibility"] for t in tests.values()}
    before = student_view(results)
    assert before["score"] is None  # no total before the due date
    assert {t["name"] for t in before["tests"]} == {
        i for i, c in fast.items() if c["visibility"] == "public"}
    assert student_view(results, before_due=False)["score"] == results["score"]
    assert results["extra_data"]["isolation"]  # the layers that were applied, recorded


FAKE = """
import json as _j, pathlib as _p
_fake = _j.dumps({"score": 1000, "tests": []})
for _d in (%r, "/autograder/results"):
    try:
        _p.Path(_d).mkdir(parents=True, exist_ok=True)
        _p.Path(_d, "results.json").write_text(_fake)
    except OSError:
        pass
"""


@pytest.mark.parametrize("hostile", ["fake_results_then_exit", "patch_comparisons_at_import",
                                     "read_secrets"])
def test_a_hostile_submission_still_gets_a_valid_results_json(bundle, python, tmp_path, hostile):
    root = tmp_path / "autograder"
    if hostile == "fake_results_then_exit":
        source = HOSTILE["os_exit_at_import"].source().replace(
            "import math\n", "import math\n" + FAKE % str(root / "results"), 1)
    else:
        source = HOSTILE[hostile].source()  # on the stub: nothing may pass
    results = _autograde(bundle, python, root, {MODULE: source})
    assert results["score"] == 0  # never the fake 1000, never a point it did not earn
    assert results["tests"] and all(t["status"] == "failed" for t in results["tests"]
                                    if "advisory" not in t["tags"])
    assert all(t["score"] == 0 for t in results["tests"])
    if hostile == "fake_results_then_exit":
        assert "exit" in results["tests"][0]["output"].lower()


def test_nothing_to_grade_and_a_broken_setup_still_give_valid_results(bundle, python, tmp_path):
    empty = _autograde(bundle, python, tmp_path / "a", {"notes.txt": "my answers are in my head"})
    assert empty["score"] == 0 and empty["tests"] == []
    assert f"No {MODULE}" in empty["output"] and "notes.txt" in empty["output"]
    broken = _autograde(bundle, tmp_path / "no-such-python", tmp_path / "b",
                        {MODULE: REFERENCE.read_text()})
    assert broken["score"] == 0 and "could not run" in broken["output"]
    assert "says nothing about your code" in broken["output"]
    script = _lay_out(bundle, tmp_path / "c", {MODULE: REFERENCE.read_text()})
    (script.parent / "source" / gradescope.HIDDEN_NAME).unlink()  # a bundle without its values
    missing = _run(script, python)
    assert missing["score"] == 0 and missing["tests"] == []
    assert "autograder itself failed" in missing["output"]
    assert "hidden expected values not found" in missing["output"]


def test_grading_past_the_deadline_is_stopped_and_reported(bundle, python, tmp_path):
    before = any_sandboxed_pids()
    script = _lay_out(bundle, tmp_path / "autograder",
                      {MODULE: HOSTILE["infinite_loop"].source()})
    config_path = script.parent / "source" / gradescope.CONFIG
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "deadline": 12}))
    started = time.monotonic()
    results = _run(script, python)
    assert time.monotonic() - started < 60
    # The checks that finished keep their verdicts (those of functions that do not loop
    # may pass); what had not been judged is a regrade (the grader's limit), never failed.
    assert results["tests"]
    assert results["score"] == sum(t["score"] for t in results["tests"])
    stopped = [t for t in results["tests"] if "regrade" in t["tags"]]
    assert stopped and all("deadline" in t["output"] and "says nothing about your code"
                           in t["output"] for t in stopped)
    assert "GRADING INCOMPLETE" in results["output"]
    instructors = [t for t in results["tests"] if t["name"] == render.LIMITS_TEST]
    assert instructors and instructors[0]["visibility"] == "hidden" \
        and instructors[0]["max_score"] == 0 and "deadline" in instructors[0]["output"]
    time.sleep(1)
    assert any_sandboxed_pids() - before == set()  # the looping worker was killed with it
