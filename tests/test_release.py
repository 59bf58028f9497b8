"""The student release: nothing secret in it, it installs in a fresh venv, and its
GitHub Classroom workflow is valid and its commands work (tests/test_classroom.py checks
the workflow's layout and pins in detail)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml

from grader import protocol
from grader.authoring import release
from grader.authoring.stubgen import find_regions
from grader.harness import expected as ex
from grader.harness.engine import catalogue
from grader.integrations import classroom, pins
from tests import freshvenv
from tests.conftest import REFERENCE, ROOT, STUB
from tests.corpus import Call

pytestmark = pytest.mark.slow  # grades whole submissions in sandboxed workers

HIDDEN = ROOT / ex.HIDDEN_PATH
MODULE = "rnn_lstm_captioning.py"


def release_in_a_fresh_venv(folder: Path) -> dict:
    """In the corpus's pool: the release built, installed in a fresh venv by the workflow's
    own install step, and each part's command-grader step run on the reference in it."""
    bundle = folder / "release"
    release.build_release(bundle)
    bin_dir = freshvenv.make(folder / "venv" / "v")
    subprocess.run(["bash", "-e", "-c", _workflow_runs(bundle)["Install capgrade"]],
                   cwd=bundle, check=True, env=freshvenv.environment(bin_dir),
                   capture_output=True)
    graders = [s for s in _steps(bundle) if s.get("uses") == classroom.COMMAND_GRADER]
    work = folder / "solved"
    shutil.copytree(bundle, work)
    shutil.copy(REFERENCE, work / MODULE)
    env = {"PATH": freshvenv.environment(bin_dir)["PATH"], "HOME": str(folder),
           "FORCE_COLOR": "true"}

    def run(command: str, cwd: Path) -> dict:
        done = subprocess.run(["/bin/sh", "-c", command], cwd=cwd, env=env,
                              capture_output=True, text=True)
        return {"command": command, "returncode": done.returncode,
                "output": done.stdout[-1500:] + done.stderr}

    # Two at a time, as the machine has cores: each part's verdict is its own.
    with ThreadPoolExecutor(max_workers=2) as steps:
        solved = list(steps.map(lambda s: run(s["with"]["command"], work), graders))
    # And a part left undone scores nothing: its command fails.
    return {"steps": solved, "undone": run(graders[0]["with"]["command"], bundle)}


RELEASE = Call("tests.test_release:release_in_a_fresh_venv")


def corpus_jobs(items: list[pytest.Item]) -> list[Call]:
    return [RELEASE] if any("bundle" in i.fixturenames for i in items) else []


@pytest.fixture(scope="module")
def release_run(corpus) -> dict:
    return corpus.result(RELEASE)


@pytest.fixture(scope="module")
def bundle(corpus, release_run) -> Path:
    return corpus.folder(RELEASE) / "release"


@pytest.fixture(scope="module")
def venv_bin(corpus, release_run) -> Path:
    """A fresh venv with the release's wheel installed by the workflow's own install step."""
    return corpus.folder(RELEASE) / "venv" / "v" / "bin"


def _members(folder: Path):
    """(name, bytes) of every file, and of every member of the wheel."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        yield str(path.relative_to(folder)), data
        if path.suffix == ".whl":
            with zipfile.ZipFile(path) as zf:
                for name in zf.namelist():
                    yield f"{path.name}!{name}", zf.read(name)


def _solution_lines() -> list[str]:
    lines = REFERENCE.read_text().splitlines()
    stub = {line.strip() for line in STUB.read_text().splitlines()}
    return sorted({line.strip() for r in find_regions(lines) for line in lines[r.start + 1:r.end]
                   if len(line.strip()) >= release.MIN_LINE and not line.strip().startswith("#")
                   and line.strip() not in stub and line.strip() not in release.ALLOWED})


def _workflow_runs(folder: Path) -> dict[str, str]:
    return {s["name"]: s["run"] for s in _steps(folder) if "run" in s}


def _steps(folder: Path) -> list[dict]:
    workflow = yaml.safe_load((folder / classroom.WORKFLOW_PATH).read_text())
    return workflow["jobs"][classroom.JOB]["steps"]


def test_the_release_holds_the_student_files_only(bundle):
    files = sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file())
    wheel = next(p.name for p in bundle.glob("capgrade-*.whl"))
    assert files == sorted([".github/workflows/classroom.yml",
                            "README.md", wheel, "rnn_lstm_captioning.ipynb", MODULE])
    assert (bundle / MODULE).read_text() == STUB.read_text()
    with zipfile.ZipFile(bundle / wheel) as zf:
        names = zf.namelist()
    assert all(n.startswith(("grader/", "capgrade-")) for n in names)
    assert "grader/expected/public.safetensors" in names and "grader/checks/rubric.toml" in names
    assert not any("reference" in n or "hidden" in n for n in names)


def test_no_line_of_any_solution_region_is_in_the_release(bundle):
    secret = _solution_lines()
    assert len(secret) > 50  # the reference really has solution regions to look for
    for name, data in _members(bundle):
        if name.endswith(".ipynb"):
            text = "\n".join("".join(c["source"]) for c in json.loads(data)["cells"])
        else:
            text = data.decode("utf-8", errors="ignore")
        leaked = [line for line in secret if line in text]
        assert not leaked, f"{name} contains solution code: {leaked[:3]}"


def test_no_hidden_expected_value_is_in_the_release(bundle):
    hidden_bytes = HIDDEN.read_bytes()
    hidden_keys = set(ex.load(HIDDEN)) - {ex.META}
    assert hidden_keys
    tensor_files = 0
    for name, data in _members(bundle):
        assert not name.endswith("hidden.safetensors") and data != hidden_bytes, name
        if name.endswith((".pt", ".safetensors")):
            tensor_files += 1
            values = protocol.decode(data) if name.endswith(".safetensors") else \
                torch.load(io.BytesIO(data), weights_only=True)
            if "__meta__" in values:
                assert values["__meta__"]["visibility"] == "public", name
            assert not set(values) & hidden_keys, name
    assert tensor_files == 2  # public.safetensors and the encoder weights, both opened


def test_the_audit_catches_a_planted_leak(bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    assert release.audit(copy) == []
    line = _solution_lines()[0]
    with open(copy / "README.md", "a") as f:
        f.write(f"\n    {line}\n")
    shutil.copy(HIDDEN, copy / "values.pt")
    problems = release.audit(copy)
    assert any(p.startswith("README.md:") and line in p for p in problems)
    assert any(p.startswith("values.pt") for p in problems)


def test_a_refused_release_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(release, "audit", lambda folder: ["README.md:1: a line of the solution"])
    with pytest.raises(release.ReleaseError, match="leak"):
        release.build_release(tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(release.ReleaseError, match="not empty"):
        release.build_release(tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_the_release_installs_in_a_fresh_venv_and_checks(bundle, venv_bin, tmp_path):
    env = freshvenv.environment(venv_bin)
    where = subprocess.run(["python", "-c", "import grader; print(grader.__file__)"], env=env,
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(venv_bin.parent))  # the wheel's grader, not the checkout's
    work = tmp_path / "student"
    shutil.copytree(bundle, work)
    stub = subprocess.run(["capgrade", "check", "--format", "json"], cwd=work, env=env,
                          capture_output=True, text=True)
    assert stub.returncode == 1, stub.stderr
    checks = json.loads(stub.stdout)["checks"]
    # Only the source advice passes on a stub: it has no comparison to advise on.
    assert checks and all(c["status"] != "passed" for c in checks
                          if c["id"] != "literal_comparisons_public")
    assert sum("not implemented" in c["message"] for c in checks) >= len(checks) - 1
    shutil.copy(REFERENCE, work / MODULE)
    solved = subprocess.run(["capgrade", "check", "--format", "json"], cwd=work, env=env,
                            capture_output=True, text=True)
    assert solved.returncode == 0, solved.stdout[-2000:] + solved.stderr
    result = json.loads(solved.stdout)
    assert result["status"] == "graded" and len(result["checks"]) == len(checks)
    assert all(c["status"] == "passed" for c in result["checks"])
    assert all(c["visibility"] == "public" for c in result["checks"])
    # Students have no hidden values: --all says so instead of grading.
    hidden = subprocess.run(["capgrade", "check", "--all"], cwd=work, env=env,
                            capture_output=True, text=True)
    assert hidden.returncode == 2 and "hidden expected values not found" in hidden.stderr


def test_the_workflow_is_valid_and_its_commands_run(bundle, venv_bin, tmp_path):
    workflow = yaml.safe_load((bundle / classroom.WORKFLOW_PATH).read_text())
    assert workflow["name"] == "Autograding Tests"
    assert "push" in workflow["on"]
    job = workflow["jobs"]["run-autograding-tests"]
    assert job["runs-on"] == "ubuntu-latest" and job["timeout-minutes"] > 0
    uses = [s["uses"].split("@")[0] for s in job["steps"] if "uses" in s]
    assert uses == ["actions/checkout", "actions/setup-python",
                    *["classroom-resources/autograding-command-grader"] * len(classroom.PARTS),
                    "classroom-resources/autograding-grading-reporter", "actions/upload-artifact"]
    runs = _workflow_runs(bundle)
    assert list(runs) == ["Install capgrade", "Table of the public checks"]
    wheel = next(p.name for p in bundle.glob("capgrade-*.whl"))
    assert f"./{wheel}" in runs["Install capgrade"]
    assert all(pin in runs["Install capgrade"] for pin in pins.pins())
    upload = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/upload"))
    assert upload["if"] == "always()" and upload["with"]["path"] == classroom.JUNIT
    for module, code in ((STUB, 1), (REFERENCE, 0)):
        work = tmp_path / module.parent.name
        shutil.copytree(bundle, work)
        shutil.copy(module, work / MODULE)
        summary = work / "summary.md"
        env = freshvenv.environment(venv_bin, GITHUB_STEP_SUMMARY=str(summary))
        done = subprocess.run(["bash", "-e", "-c", runs["Table of the public checks"]], cwd=work,
                              env=env, capture_output=True, text=True)
        assert done.returncode == code, done.stderr
        junit = ET.parse(work / classroom.JUNIT).getroot()
        cases = junit.findall(".//testcase")
        failed = [c for c in cases if c.find("failure") is not None or c.find("error") is not None]
        assert cases and (len(failed) == 0) == (code == 0)
        text = summary.read_text()
        assert text.startswith("## capgrade:") and text.count("\n| `") == len(cases)


def test_the_grader_steps_score_the_parts(bundle, release_run):
    """Each part's command-grader step, run verbatim as the action runs it (/bin/sh -c, PATH
    and HOME only) in the release's own venv: the reference earns every part."""
    graders = [s for s in _steps(bundle) if s.get("uses") == classroom.COMMAND_GRADER]
    parts = [s["id"] for s in graders]
    assert parts == list(classroom.PARTS)
    public = [c for c in catalogue() if c["visibility"] == "public" and c["group"] in parts]
    assert sum(s["with"]["max-score"] for s in graders) == sum(c["points"] for c in public)
    assert [s["command"] for s in release_run["steps"]] == [
        s["with"]["command"] for s in graders]
    for step in release_run["steps"]:
        assert step["returncode"] == 0, f"{step['command']}: {step['output']}"
    assert release_run["undone"]["returncode"] == 1


def test_the_committed_starter_matches_what_release_writes(bundle):
    example = ROOT / "integrations" / "github-classroom"
    committed = sorted(str(p.relative_to(example)) for p in example.rglob("*") if p.is_file())
    assert committed == [str(classroom.WORKFLOW_PATH)], (
        f"{example} should hold only {classroom.WORKFLOW_PATH}: copy it from a fresh "
        "`capgrade release`")
    relative = classroom.WORKFLOW_PATH
    assert (example / relative).read_text() == (bundle / relative).read_text(), (
        f"{example / relative} is stale: copy it from a fresh `capgrade release`")
