"""The student's install: what pyproject declares, one version, a broken torch, no POSIX.

Each test simulates a laptop the CI machine is not (an undeclared module, a
torchvision that fails at import, a Python without ``pwd``/``resource``)
without installing anything: a fake package or an import blocker on the path.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

import grader

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
REFERENCE = ROOT / "reference" / "rnn_lstm_captioning.py"


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    """Every distribution pyproject names: dependencies and all extras."""
    project = PYPROJECT["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs += extra
    return {_normal(re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0]) for spec in specs}


def _minimum_python() -> tuple[int, int]:
    found = re.fullmatch(r">=\s*(\d+)\.(\d+)", PYPROJECT["project"]["requires-python"].strip())
    assert found, "requires-python must be a plain lower bound"
    return int(found[1]), int(found[2])


def _dead_for(test: ast.expr, minimum: tuple[int, int]) -> tuple[bool, bool]:
    """(body dead, else dead) of ``if sys.version_info OP (3, N)`` on Pythons >= minimum."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1
            and ast.unparse(test.left) == "sys.version_info"
            and isinstance(test.comparators[0], ast.Tuple)):
        return False, False
    bound = tuple(ast.literal_eval(test.comparators[0]))[:2]
    if isinstance(test.ops[0], ast.GtE):  # body is for >= bound; else for < bound
        return False, minimum >= bound
    if isinstance(test.ops[0], ast.Lt):
        return minimum >= bound, False
    return False, False


def _imports(tree: ast.AST, minimum: tuple[int, int]) -> set[str]:
    """Top-level names imported, leaving out branches no supported Python takes."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If):
            dead_body, dead_else = _dead_for(node.test, minimum)
            visit(node.test)
            for child in ([] if dead_body else node.body) + ([] if dead_else else node.orelse):
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_pyproject_declares_every_third_party_module_grader_imports() -> None:
    """The tomli class of bug: a module imported on a supported Python but never declared."""
    minimum = _minimum_python()
    providers = metadata.packages_distributions()
    declared = _declared()
    missing = {}
    for path in sorted((ROOT / "grader").rglob("*.py")):
        for name in _imports(ast.parse(path.read_text(encoding="utf-8")), minimum):
            if name in sys.stdlib_module_names or name in ("grader", "__future__", "_pytest"):
                continue
            dists = {_normal(d) for d in providers.get(name, [])}
            if not dists & declared:
                missing.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_one_version_source() -> None:
    """pyproject reads the version from grader/__init__.py; the installed metadata agrees."""
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project.get("dynamic", [])
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "grader.__version__"}
    assert metadata.version("capgrade") == grader.__version__


def _run_cli(python: str | Path, *args: str, env: dict[str, str], cwd: Path,
             timeout: float = 170) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "grader.cli", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=timeout)


def _grade_in(python: str | Path, env: dict[str, str], cwd: Path) -> dict:
    """``grade`` of the reference's rnn_step checks in ``python``: status, checks, message."""
    code = ("import json; from grader.harness.engine import run_checks; "
            f"r = run_checks({str(REFERENCE)!r}, only='rnn_step'); "
            "print(json.dumps({'status': r.status, 'message': r.message, "
            "'checks': [c.id for c in r.checks]}))")
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=170)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_no_pwd_or_resource_imports_and_check_says_use_wsl(tmp_path: Path) -> None:
    """A Python without ``pwd``/``resource`` (native Windows): importable, and ``check`` says why.

    No check runs (the worker needs os.fork and inherited pipes): exit code 2 and
    a message naming WSL 2, never a crash at import.
    """
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name in ('pwd', 'resource'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, _Block())\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(ROOT)])}
    probe = subprocess.run(
        [sys.executable, "-c",
         "import grader.sandbox.host as s, grader.harness.engine, grader.cli; "
         "assert s.pwd is None and s.resource is None; print(s.unsupported_reason())"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert "WSL 2" in probe.stdout and "pwd, resource" in probe.stdout
    result = _grade_in(sys.executable, env, tmp_path)
    assert result["status"] == "environment-error" and result["checks"] == []
    done = _run_cli(sys.executable, "check", str(REFERENCE), "--only", "rnn_step",
                    env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "WSL 2" in done.stderr and "rnn_step" not in done.stdout


def _broken_torchvision_env(tmp_path: Path) -> Path:
    """A venv whose torchvision fails at import as PyPI's does beside another torch build.

    Everything else (torch, numpy, grader's other dependencies) comes from this
    venv's site-packages, added after the fake one.
    """
    venv = tmp_path / "broken"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=60)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    real = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "torch").is_dir())
    (site / "zz_real.pth").write_text(f"import site; site.addsitedir({real!r})\n")
    (site / "torchvision").mkdir()
    (site / "torchvision" / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n')
    return python


@pytest.mark.slow
def test_broken_torchvision_is_an_environment_error_before_any_check(tmp_path: Path) -> None:
    """Grading with that venv: no check judged, the environment's status and message.

    (Before: every check failed with "importing the submission failed ... nms",
    status import-error: the student blamed for the install; the CLI turns this
    status into exit code 2, as the WSL test shows.) No namespaces, so the
    sandbox shows the real venv this fake one borrows from.
    """
    python = _broken_torchvision_env(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CAPGRADE_SANDBOX_NAMESPACES": "0"}
    result = _grade_in(python, env, tmp_path)
    assert result["status"] == "environment-error", result["message"]
    assert result["checks"] == []
    assert "operator torchvision::nms does not exist" in result["message"]
    assert "pip install" in result["message"] and "not your code" in result["message"]
    assert f"torch {metadata.version('torch')}" in result["message"]  # the two versions found
    assert "torchvision==" in result["message"]  # the pair to install


def test_the_notebook_trains_laptop_sized_on_a_cpu_and_the_course_run_is_one_flag_away() -> None:
    """A CPU never starts 3 x 2,340 iterations unasked; FULL_RUN = True (or a GPU) runs them."""
    from grader.course.settings import COURSE, GRADING, settings

    laptop = settings(False, "cpu")
    assert laptop.train_iterations * 10 == COURSE.train_iterations
    assert settings(False, "cpu", full=True).train_iterations == COURSE.train_iterations
    assert settings(False, "cuda").train_iterations == COURSE.train_iterations
    assert settings(True, "cuda", full=True) == GRADING  # grading mode is unaffected
    notebook = (ROOT / "notebooks" / "rnn_lstm_captioning.ipynb").read_text()
    assert "FULL_RUN = None" in notebook and "full=FULL_RUN" in notebook
    assert "will NOT pass the hand-in" in notebook
