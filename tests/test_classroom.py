"""The GitHub Classroom workflow and the torch pins: generated from the rubric and the
expected values' metadata, shaped as Classroom's grader actions read it, and its commands
run verbatim (the shell and environment those actions give them)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from grader import __version__
from grader.harness import expected as ex
from grader.harness.engine import catalogue
from grader.integrations import classroom, pins
from tests import freshvenv
from tests.conftest import REFERENCE, STUB

MODULE = "rnn_lstm_captioning.py"
WHEEL = f"capgrade-{__version__}-py3-none-any.whl"
#: This venv's bin: where `capgrade` and `python` resolve for the verbatim runs.
VENV_BIN = Path(sys.executable).parent
#: Cheap parts whose grader commands are run verbatim here (the release test runs them all).
CHEAP_PARTS = ("rnn", "rules")


def _installed(name: str) -> str:
    return importlib.metadata.version(name).split("+")[0]


def _shipped_torch() -> str:
    return ex.load(ex.PUBLIC_PATH)[ex.META]["torch"]


@pytest.fixture(scope="module")
def job() -> dict:
    parsed = yaml.safe_load(classroom.workflow(WHEEL))
    assert parsed["name"] == classroom.WORKFLOW_NAME == "Autograding Tests"
    assert list(parsed["jobs"]) == [classroom.JOB] == ["run-autograding-tests"]
    return parsed["jobs"][classroom.JOB]


def _graders(job: dict) -> list[dict]:
    return [s for s in job["steps"] if s.get("uses") == classroom.COMMAND_GRADER]


def _run_step(job: dict, name: str) -> str:
    return next(s["run"] for s in job["steps"] if s.get("name") == name)


def _repository(tmp_path: Path, module: Path) -> Path:
    """A student's repository: the module under the name the commands use."""
    repo = tmp_path / f"repo-{module.parent.name}"
    repo.mkdir()
    (repo / MODULE).write_bytes(module.read_bytes())
    return repo


def _grader_env(home: Path) -> dict[str, str]:
    """The environment autograding-command-grader@v1 gives its commands: PATH and HOME only
    (plus its FORCE_COLOR/DOTNET_* settings), nothing else of the runner's."""
    return {"PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
            "FORCE_COLOR": "true", "DOTNET_CLI_HOME": "/tmp", "DOTNET_NOLOGO": "true"}


# -- pins ----------------------------------------------------------------------------------


def test_the_pins_are_the_shipped_metadata_and_this_venv():
    torch, torchvision = pins.pins()
    assert torch == f"torch=={_shipped_torch()}" == f"torch=={_installed('torch')}"
    assert torchvision == f"torchvision=={_installed('torchvision')}"
    assert pins.pinned_install() == (
        "python -m pip install --disable-pip-version-check "
        f"{torch} {torchvision} --index-url https://download.pytorch.org/whl/cpu")
    assert pins.pinned_install("https://example.org/simple", pip="/opt/capgrade/bin/pip") == (
        "/opt/capgrade/bin/pip install --disable-pip-version-check "
        f"{torch} {torchvision} --index-url https://example.org/simple")


@pytest.mark.parametrize("torch, torchvision", [
    ("2.0.0", "0.15.1"), ("2.0.1", "0.15.2"), ("2.1.0", "0.16.0"), ("2.1.2", "0.16.2"),
    ("2.2.2", "0.17.2"), ("2.3.1", "0.18.1"), ("2.4.1", "0.19.1"), ("2.5.1", "0.20.1"),
    ("2.6.0", "0.21.0"), ("2.7.1", "0.22.1"), ("2.8.0", "0.23.0"), ("2.9.1", "0.24.1"),
    ("2.14.1", "0.29.1"), ("2.14.1+cu128", "0.29.1"),
])
def test_torchvision_follows_the_published_pairs(torch, torchvision):
    assert pins.torchvision_for(torch) == torchvision


@pytest.mark.parametrize("torch", ["1.13.1", "3.0.0", "2.0.2", "2.14", "2.15.0a0", "nightly"])
def test_an_unknown_torch_is_refused_not_guessed(torch):
    with pytest.raises(pins.PinError, match="no known torchvision"):
        pins.torchvision_for(torch)


def test_a_recorded_torchvision_wins_and_a_missing_torch_is_refused(tmp_path):
    recorded = tmp_path / "recorded.safetensors"
    ex.save({"x": np.zeros(1)}, {"torch": "2.3.1+cpu", "torchvision": "0.18.9+cpu"}, recorded)
    assert pins.pins(recorded) == ["torch==2.3.1", "torchvision==0.18.9"]
    bare = tmp_path / "bare.safetensors"
    ex.save({"x": np.zeros(1)}, {"generator_version": ex.GENERATOR_VERSION}, bare)
    with pytest.raises(pins.PinError, match="records no torch version"):
        pins.pins(bare)


def test_pins_read_the_metadata_without_importing_torch():
    done = subprocess.run([sys.executable, "-c", "import sys; from grader.integrations import "
                           "pins; pins.pins(); print('torch' in sys.modules)"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# -- the workflow's shape ------------------------------------------------------------------


def test_the_workflow_has_classroom_s_layout(job):
    parsed = yaml.safe_load(classroom.workflow(WHEEL))
    assert {"push", "workflow_dispatch"} <= set(parsed["on"])
    assert parsed["permissions"] == {"checks": "write", "actions": "read", "contents": "read"}
    assert job["runs-on"] == "ubuntu-latest" and job["timeout-minutes"] > 0
    steps = job["steps"]
    assert steps[0]["uses"] == "actions/checkout@v4"
    assert steps[1]["uses"] == "actions/setup-python@v5"
    # Every action pinned to a major version, Classroom's at @v1.
    uses = [s["uses"] for s in steps if "uses" in s]
    assert all("@v" in u for u in uses)
    assert {classroom.COMMAND_GRADER, classroom.REPORTER} == {
        "classroom-resources/autograding-command-grader@v1",
        "classroom-resources/autograding-grading-reporter@v1"}
    graders = _graders(job)
    ids = [s["id"] for s in graders]
    assert len(ids) == len(set(ids)) == len(graders) > 0
    for step in graders:
        assert set(step["with"]) == {"test-name", "setup-command", "command", "timeout",
                                     "max-score"}
        assert isinstance(step["with"]["max-score"], int) and step["with"]["max-score"] > 0
        assert 0 < step["with"]["timeout"] <= 60  # minutes; the action's maximum
    # The reporter comes after every grader and reads each one's result, in order.
    reporters = [i for i, s in enumerate(steps) if s.get("uses") == classroom.REPORTER]
    assert len(reporters) == 1
    assert reporters[0] > max(steps.index(s) for s in graders)
    reporter = steps[reporters[0]]
    assert reporter["with"]["runners"].split(",") == ids
    assert reporter["env"] == {f"{i.upper()}_RESULTS": f"${{{{steps.{i}.outputs.result}}}}"
                               for i in ids}
    # The table and the JUnit report come after the reporter, whatever it decided.
    after = steps[reporters[0] + 1:]
    assert [s["name"] for s in after] == ["Table of the public checks", "Keep the JUnit report"]
    assert all(s["if"] == "always()" for s in after)
    assert after[0]["run"] == classroom.check_command() + "\n"
    assert after[1]["with"]["path"] == classroom.JUNIT


def test_the_points_are_the_rubric_s_public_points_per_part(job):
    graders = _graders(job)
    public: dict[str, float] = {}
    for check in catalogue():
        if check["visibility"] == "public" and check["group"] in classroom.PARTS:
            public[check["group"]] = public.get(check["group"], 0) + check["points"]
    assert {s["id"]: s["with"]["max-score"] for s in graders} == public
    assert [s["id"] for s in graders] == [p for p in classroom.PARTS if p in public]
    for step in graders:
        part = step["id"]
        assert step["name"] == step["with"]["test-name"] == classroom.PARTS[part]
        assert step["with"]["command"] == f"capgrade check {MODULE} --group {part}"


def test_the_workflow_follows_a_changed_rubric():
    checks = [{"group": "rnn", "visibility": "public", "points": 3},
              {"group": "rnn", "visibility": "hidden", "points": 50},
              {"group": "lstm", "visibility": "public", "points": 2.0},
              {"group": "notebook", "visibility": "public", "points": 9}]
    job = yaml.safe_load(classroom.workflow(WHEEL, checks))["jobs"][classroom.JOB]
    assert {s["id"]: s["with"]["max-score"] for s in _graders(job)} == {"rnn": 3, "lstm": 2}
    with pytest.raises(ValueError, match="whole number"):
        classroom.workflow(WHEEL, [{"group": "rnn", "visibility": "public", "points": 2.5}])


def test_the_install_step_pins_torch_from_the_cpu_index(job):
    install = _run_step(job, "Install capgrade")
    torch, torchvision = pins.pins()
    assert install == (
        f"python -m pip install --disable-pip-version-check {torch} {torchvision} "
        "--index-url https://download.pytorch.org/whl/cpu\n"
        f"python -m pip install --disable-pip-version-check ./{WHEEL}\n")
    names = [s.get("name") for s in job["steps"]]
    assert names.index("Install capgrade") < min(names.index(s["name"]) for s in _graders(job))


# -- the commands, run verbatim ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("part", CHEAP_PARTS)
def test_a_grader_command_passes_the_reference(job, part, tmp_path):
    """Run as the command grader runs it: /bin/sh -c (Node's execSync), PATH and HOME only."""
    assert (VENV_BIN / "capgrade").is_file()
    step = next(s for s in _graders(job) if s["id"] == part)
    repo = _repository(tmp_path, REFERENCE)
    done = subprocess.run(["/bin/sh", "-c", step["with"]["command"]], cwd=repo,
                          env=_grader_env(tmp_path), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.mark.slow
def test_a_grader_command_fails_the_stub(job, tmp_path):
    step = next(s for s in _graders(job) if s["id"] == "rnn")
    repo = _repository(tmp_path, STUB)
    done = subprocess.run(["/bin/sh", "-c", step["with"]["command"]], cwd=repo,
                          env=_grader_env(tmp_path), capture_output=True, text=True)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "not implemented" in done.stdout.lower()


@pytest.mark.slow
def test_the_table_step_writes_the_markdown_table(job, tmp_path):
    """A `run` step: GitHub runs it with `bash -e`, the runner's environment included."""
    repo = _repository(tmp_path, REFERENCE)
    summary = tmp_path / "step-summary.md"
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
           "GITHUB_STEP_SUMMARY": str(summary)}
    done = subprocess.run(["bash", "-e", "-c", _run_step(job, "Table of the public checks")],
                          cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    text = summary.read_text()
    assert text.startswith("## capgrade:") and "| check | status | points | message |" in text
    public = [c for c in catalogue() if c["visibility"] == "public" and not c["slow"]
              and c["group"] in classroom.PARTS]
    assert text.count("\n| `") == len(public)
    assert (repo / classroom.JUNIT).is_file()


@pytest.mark.slow
def test_the_install_step_runs_offline_when_the_pins_are_installed(job, tmp_path):
    """The install step verbatim in a fresh venv that borrows this one's packages, with
    no index and no pip configuration: it passes only if this venv's torch and
    torchvision satisfy the pins exactly (nothing can be downloaded instead)."""
    from grader.authoring.release import build_wheel

    wheel = build_wheel(tmp_path / "dist")
    assert wheel.name == WHEEL
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / wheel.name).write_bytes(wheel.read_bytes())
    bin_dir = freshvenv.make(tmp_path / "venv")
    env = freshvenv.environment(bin_dir, PIP_CONFIG_FILE=os.devnull, PIP_FIND_LINKS="")
    env.pop("PIP_CONSTRAINT", None)
    done = subprocess.run(["bash", "-e", "-c", _run_step(job, "Install capgrade")], cwd=repo,
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for pin in pins.pins():
        assert f"Requirement already satisfied: {pin}" in done.stdout
    where = subprocess.run(["python", "-c", "import grader; print(grader.__file__)"], env=env,
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(bin_dir.parent))
