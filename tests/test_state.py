"""Where the grader keeps state: on ``grader.settings.SETTINGS`` and the plugin's stash only.

A module-level value is a constant (immutable, or a table nothing in ``grader/``
changes), a function (``functools.cache`` memos of facts of the host or of
packaged files included: they never change what a call returns), or the one
settings object. And the environment's ``CAPGRADE_*`` knobs are read in
``grader/settings.py`` alone.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import importlib
import re
import types
import typing
from pathlib import Path, PurePath

import pytest
import torch

from grader.settings import SETTINGS, Settings

GRADER = Path(__file__).resolve().parent.parent / "grader"
SOURCES = sorted(GRADER.rglob("*.py"))
MUTATORS = {"append", "extend", "insert", "pop", "remove", "clear", "update", "setdefault",
            "add", "discard", "popitem", "sort", "reverse"}
IMMUTABLE = (int, float, str, bytes, bool, type(None), frozenset, range, PurePath, re.Pattern,
             type, types.ModuleType, typing.TypeVar, enum.Enum, types.MappingProxyType,
             torch.dtype, pytest.StashKey)


def _module(path: Path) -> str:
    parts = path.relative_to(GRADER.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _assigned(tree: ast.Module) -> set[str]:
    """Names a module binds at its top level by assignment (not imports, defs or classes)."""
    names = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) and node.value else []
        names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names - {"__all__"}


def _constant(value: object) -> bool:
    if isinstance(value, tuple):
        return all(_constant(v) for v in value)
    if isinstance(value, IMMUTABLE) or callable(value):
        return True
    return dataclasses.is_dataclass(value) and not isinstance(value, type) \
        and value.__dataclass_params__.frozen  # type: ignore[attr-defined]


def _module_values() -> dict[str, dict[str, object]]:
    found = {}
    for path in SOURCES:
        module = importlib.import_module(_module(path))
        names = _assigned(ast.parse(path.read_text()))
        found[module.__name__] = {n: vars(module)[n] for n in names if n in vars(module)}
    return found


def _name(node: ast.AST) -> str | None:
    return node.id if isinstance(node, ast.Name) else \
        node.attr if isinstance(node, ast.Attribute) else None


def _mutations(names: set[str]) -> list[str]:
    """Where grader/ changes a table of these names in place (subscript, mutator, +=, del)."""
    found = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            changed = None
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
                targets = [node.target] if isinstance(node, ast.AugAssign) else node.targets
                for target in targets:
                    if isinstance(target, ast.Subscript) and _name(target.value) in names:
                        changed = _name(target.value)
                    elif isinstance(node, ast.AugAssign) and _name(target) in names:
                        changed = _name(target)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in MUTATORS and _name(node.func.value) in names:
                changed = _name(node.func.value)
            if changed:
                found.append(f"{path.relative_to(GRADER.parent)}:{node.lineno} changes {changed}")
    return found


def test_module_level_values_are_constants_or_the_settings_object() -> None:
    stateful = [f"{module}.{name} ({type(value).__name__})"
                for module, values in _module_values().items()
                for name, value in values.items()
                if not _constant(value) and not isinstance(value, (dict, list, set))
                and value is not SETTINGS]
    assert stateful == []
    assert [m for m, values in _module_values().items()
            if any(isinstance(v, Settings) for v in values.values())] == ["grader.settings"]


def test_no_module_level_table_is_changed_in_place() -> None:
    tables = {name for values in _module_values().values()
              for name, value in values.items() if isinstance(value, (dict, list, set))}
    assert len(tables) > 40  # the scan sees the tables (rubric marks, token ids, ...)
    assert _mutations(tables) == []


def test_no_global_statements_and_no_module_rebinds_another() -> None:
    grader_modules = {_module(p) for p in SOURCES}
    found = []
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        aliases = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                   and n.module and n.level == 0 for a in n.names
                   if f"{n.module}.{a.name}" in grader_modules}
        for node in ast.walk(tree):
            if isinstance(node, ast.Global):
                found.append(f"{path.name}:{node.lineno} global {', '.join(node.names)}")
            if isinstance(node, ast.Assign):
                found += [f"{path.name}:{node.lineno} sets {ast.unparse(t)}" for t in node.targets
                          if isinstance(t, ast.Attribute) and _name(t.value) in aliases]
    assert found == []


def _reads_environment(node: ast.AST) -> ast.AST | None:
    """K of ``os.environ.get(K)``, ``os.getenv(K)``, ``os.environ[K]``, ``K in os.environ``."""
    if isinstance(node, ast.Call) and ast.unparse(node.func) in ("os.environ.get", "os.getenv") \
            and node.args:
        return node.args[0]
    if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ" \
            and isinstance(node.ctx, ast.Load):
        return node.slice
    if isinstance(node, ast.Compare) \
            and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) \
            and any(ast.unparse(c) == "os.environ" for c in node.comparators):
        return node.left
    return None


def test_capgrade_variables_are_read_in_settings_only() -> None:
    reads = []
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        strings = {n.id: v for n, v in _string_constants(tree)}
        for node in ast.walk(tree):
            key = _reads_environment(node)
            if key is None:
                continue
            text = key.value if isinstance(key, ast.Constant) else strings.get(_name(key) or "")
            if isinstance(text, str) and text.startswith("CAPGRADE_") \
                    and path != GRADER / "settings.py":
                reads.append(f"{path.relative_to(GRADER.parent)}:{node.lineno} reads {text}")
    assert reads == []


def _string_constants(tree: ast.Module) -> list[tuple[ast.Name, str]]:
    return [(t, n.value.value) for n in tree.body if isinstance(n, ast.Assign)
            and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
            for t in n.targets if isinstance(t, ast.Name)]


def test_settings_read_the_environment_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPGRADE_FORKSERVER", "0")
    monkeypatch.setenv("CAPGRADE_SANDBOX_MEMORY", "2e9")
    monkeypatch.setenv("CAPGRADE_PARALLEL_TRAININGS", "two")
    assert not SETTINGS.forkserver
    assert SETTINGS.sandbox_memory(1) == 2_000_000_000
    assert SETTINGS.parallel_trainings is None  # not a number: the machine decides
    monkeypatch.setenv("CAPGRADE_FORKSERVER", "1")
    monkeypatch.setenv("CAPGRADE_SANDBOX_MEMORY", "lots")
    monkeypatch.setenv("CAPGRADE_PARALLEL_TRAININGS", "0")
    assert SETTINGS.forkserver
    assert SETTINGS.sandbox_memory(7) == 7
    assert SETTINGS.parallel_trainings == 1


def test_one_holder_of_each_kind_per_process() -> None:
    from grader.sandbox import cgroup, forkserver, reaping

    assert forkserver.holder() is forkserver.holder()
    assert reaping.started() is reaping.started()
    assert cgroup._seen() is cgroup._seen()

    class Kind:
        pass

    assert isinstance(SETTINGS.one(Kind), Kind) and SETTINGS.one(Kind) is SETTINGS.one(Kind)
