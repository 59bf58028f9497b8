"""TRUSTED side: the one reader of ``grader/checks/rubric.toml``.

Every part of capgrade that needs the rubric (the pytest plugin, the reporting order,
the Gradescope settings, the hand-in's loss-file rules) reads it here, so the file has
one meaning. ``load_rubric`` returns one entry per check id, as the catalogue collects
them, with two conveniences of the file expanded:

- ``points_each``: one entry covering a parametrised check. ``params`` lists its
  parameter ids in order; the entry becomes ``name[param]`` for each, worth
  ``points_each``. Its ``requires`` is one text for all (``{param}`` is replaced by the
  parameter id) or a table of one text per parameter::

      "overfit" = { points_each = 3, params = ["rnn", "lstm"], requires = { rnn = "...", ... } }

- ``visibility``: a check id ending in ``_public`` is public, one ending in ``_hidden``
  (before any ``[params]``) is hidden; the rubric may leave ``visibility`` out for
  them. Where it gives one that disagrees with the suffix, loading fails (RubricError).
  A check without either suffix is "public" unless the rubric says otherwise.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

RUBRIC_PATH = Path(__file__).resolve().parent / "checks" / "rubric.toml"
VISIBILITIES = ("public", "hidden", "after_due_date")
#: Where the rubric's [gradescope] table may show the hidden checks (see results.render).
HIDDEN_CHOICES = ("after_due_date", "after_published")
#: Keys of a points_each entry that are its own, not copied into the expanded entries.
_EACH_KEYS = ("points_each", "params")


class RubricError(ValueError):
    """The rubric is malformed: the message names the file, the entry and the fix."""


def read(path: Path = RUBRIC_PATH) -> dict[str, Any]:
    """The whole rubric file as TOML gives it (no expansion)."""
    with open(path, "rb") as f:
        return tomllib.load(f)


def suffix_visibility(check_id: str) -> str | None:
    """"public" / "hidden" as the id's ``_public`` / ``_hidden`` suffix says; None without one."""
    base = check_id.split("[", 1)[0]
    if base.endswith("_public"):
        return "public"
    if base.endswith("_hidden"):
        return "hidden"
    return None


def _visibility(path: Path, check_id: str, entry: dict[str, Any]) -> str:
    given, implied = entry.get("visibility"), suffix_visibility(check_id)
    if given is None:
        return implied or "public"
    if given not in VISIBILITIES:
        raise RubricError(f"{path}: {check_id}: visibility = {given!r}: use one of "
                          f"{', '.join(VISIBILITIES)}")
    if implied is not None and (given == "public") != (implied == "public"):
        raise RubricError(f"{path}: {check_id}: visibility = {given!r}, but its id ends in "
                          f"_{implied}: rename the check or drop the visibility (the suffix "
                          "gives it)")
    return str(given)


def _expand(path: Path, name: str, entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A points_each entry as the per-parameter entries it stands for."""
    if "points" in entry:
        raise RubricError(f"{path}: {name} has both points and points_each: keep one")
    params = entry.get("params")
    if "[" in name or not isinstance(params, list) or not params or \
            not all(isinstance(p, str) and p for p in params) or len(set(params)) != len(params):
        raise RubricError(f"{path}: {name}: points_each needs the check's name without "
                          "[...] and params = [\"id1\", \"id2\", ...] (its parameter ids, "
                          "each once)")
    requires = entry.get("requires", "")
    if isinstance(requires, dict) and set(requires) != set(params):
        raise RubricError(f"{path}: {name}: requires names {sorted(requires)} but params are "
                          f"{params}: give one text per parameter")
    common = {k: v for k, v in entry.items() if k not in _EACH_KEYS}
    out = {}
    for param in params:
        text = requires[param] if isinstance(requires, dict) else \
            str(requires).replace("{param}", param)
        out[f"{name}[{param}]"] = {**common, "points": entry["points_each"],
                                   **({"requires": text} if "requires" in entry else {})}
    return out


def load_checks(path: Path = RUBRIC_PATH) -> dict[str, dict[str, Any]]:
    """The [checks] table, one entry per check id in the file's order, expanded and checked."""
    checks: dict[str, dict[str, Any]] = {}
    for name, entry in read(path).get("checks", {}).items():
        if not isinstance(entry, dict):
            raise RubricError(f"{path}: {name} must be a table ({{ points = ..., ... }})")
        found = _expand(path, name, entry) if "points_each" in entry else {name: dict(entry)}
        for cid, e in found.items():
            if cid in checks:
                raise RubricError(f"{path}: {cid} is in the rubric twice")
            if "points" not in e:
                raise RubricError(f"{path}: {cid} has no points (points = N, or points_each)")
            e["visibility"] = _visibility(path, cid, e)
            if e.get("advisory", False) and e.get("points", 0) != 0:
                raise RubricError(f"{path}: {cid} is an advisory (worth nothing) but has "
                                  f"{e['points']} points; set advisory = false to grade it")
            checks[cid] = e
    return checks


def load_rubric(path: Path = RUBRIC_PATH, include_slow: bool = True
                ) -> dict[str, dict[str, Any]]:
    """The rubric's checks; without the slow / hand-in ones when ``include_slow`` is False.

    Self-reported checks are worth 0 (``unscored``) unless ``[self_reported] score = true``.
    """
    checks = load_checks(path)
    opted_in = bool(load_rubric_table(path, "self_reported").get("score", False))
    for entry in checks.values():
        if entry.get("self_reported", False) and not opted_in:
            # A claim of the student's own code: reported, never scored (see the rubric).
            entry["unscored"], entry["points"] = True, 0
    return {k: v for k, v in checks.items() if include_slow or not v.get("slow", False)}


def load_rubric_table(path: Path = RUBRIC_PATH, table: str = "") -> dict[str, Any]:
    """Another table of the rubric (e.g. ``submission_file``); empty when absent."""
    return dict(read(path).get(table, {}))


def check_rank(path: Path = RUBRIC_PATH) -> dict[str, int]:
    """Check id -> its position in the rubric (expanded); {} when the rubric cannot be read."""
    try:
        return {cid: i for i, cid in enumerate(load_checks(path))}
    except (OSError, ValueError):  # a broken rubric fails grading elsewhere, not a table
        return {}


def hidden_checks_visibility(path: Path = RUBRIC_PATH) -> str:
    """How the rubric shows its hidden checks on Gradescope: after_due_date or after_published."""
    try:
        chosen = read(path).get("gradescope", {}).get("hidden_checks", HIDDEN_CHOICES[0])
    except OSError:
        chosen = HIDDEN_CHOICES[0]
    if chosen not in HIDDEN_CHOICES:
        raise ValueError(f"{path}: [gradescope] hidden_checks = {chosen!r}: use one of "
                         f"{', '.join(HIDDEN_CHOICES)} (a hidden Gradescope test must not carry "
                         "points)")
    return chosen
