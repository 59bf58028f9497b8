"""Everything in a batch's OUT folder, exported from its store (``grader.results.store``).

``gradebook.csv`` (one row per student: status, total, a column per check),
``students/<id>/results.json`` (the one result schema) and ``feedback.html``
(what that student may see: hidden checks reduced to passed / failed),
``summary.json``, and three plots: the score histogram, the pass rate per
check and the time per submission. Rerunning the export rewrites them all
from the store, so they never disagree with it. The LMS import files
(``capgrade grade --export``: one total per student) come from the same store
through ``grader.integrations.lms``.
"""

from __future__ import annotations

import csv
import html
import json
import statistics
from pathlib import Path
from typing import Any

from grader.results import RunStatus, Status, SubmissionResult
from grader.results.render import render_csv_row
from grader.results.store import Store

ROW_FIELDS = ["student", "status", "score", "max_score", "message", "content_hash", "seconds",
              "source"]
#: Why an instructor must look at the submission before some points are given ("" if not).
REVIEW_FIELD = "review"
#: Several copies (or inputs) found for the student: which one was graded, and how to pick.
COPIES_FIELD = "copies"


def discovery_note(row: Any) -> str:
    """The stored entry's note on several copies for one student ("" if there was one)."""
    try:
        return json.loads(row["entry"]).get("note") or ""
    except (TypeError, ValueError, KeyError, IndexError):
        return ""


def review_reasons(result: dict | None) -> list[str]:
    """The checks of a stored result that wait for an instructor's review, with why."""
    return [f"{c['id']}: {c['review']}" for c in (result or {}).get("checks", [])
            if c.get("review")]


def export(store: Store, out: Path) -> dict[str, Path]:
    rows = store.latest()
    results = {r["student"]: json.loads(r["result"]) if r["result"] else None for r in rows}
    #: The schema's view of each stored result: the gradebook's cells are its renderer's.
    parsed = {s: SubmissionResult.from_dict(res) if res else None for s, res in results.items()}
    check_ids: list[str] = []
    for result in results.values():
        for c in (result or {}).get("checks", []):
            if c["id"] not in check_ids:
                check_ids.append(c["id"])
    paths = {"gradebook": out / "gradebook.csv", "summary": out / "summary.json"}
    with open(paths["gradebook"], "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[*ROW_FIELDS, REVIEW_FIELD, COPIES_FIELD,
                                                *check_ids])
        writer.writeheader()
        for r in rows:
            row = {k: r[k] for k in ROW_FIELDS}
            row["seconds"] = round(r["seconds"], 2)
            result = parsed[r["student"]]
            row[REVIEW_FIELD] = "; ".join(result.review) if result else ""
            row[COPIES_FIELD] = discovery_note(r)
            if result is not None:
                cells = render_csv_row(result)
                row.update({c.id: cells[c.id] for c in result.checks})
            writer.writerow(row)
    for r in rows:
        folder = out / "students" / r["student"]
        folder.mkdir(parents=True, exist_ok=True)
        result = results[r["student"]]
        record = {"student": r["student"], "status": r["status"], "message": r["message"],
                  "content_hash": r["content_hash"], "graded_at": r["graded_at"],
                  "result": result}
        (folder / "results.json").write_text(json.dumps(record, indent=2, sort_keys=True,
                                                        default=str))
        (folder / "feedback.html").write_text(feedback_html(r["student"], r["status"],
                                                            r["message"], result),
                                              encoding="utf-8")
    summary = _summary(rows, results, check_ids)
    paths["summary"].write_text(json.dumps(summary, indent=2, sort_keys=True))
    paths["misconceptions"] = out / "misconceptions.md"
    paths["misconceptions"].write_text(misconceptions_markdown(summary), encoding="utf-8")
    paths.update(_plots(rows, results, check_ids, out))
    paths["misconceptions_chart"] = _misconceptions_chart(summary, out)
    return paths


def _mistakes(result: dict | None) -> set[str]:
    """The misconceptions named anywhere in one submission's result."""
    return {d["id"] for c in (result or {}).get("checks", []) for d in c.get("diagnoses", [])}


def _misconception_counts(rows: list, results: dict[str, Any]) -> dict[str, Any]:
    """Per misconception: how many graded students made it (most common first)."""
    from grader.diagnosis.catalogue import load

    catalogue = load()
    graded = [r["student"] for r in rows if r["status"] == RunStatus.GRADED]
    counts: dict[str, int] = {}
    for student in graded:
        for mid in _mistakes(results.get(student)):
            counts[mid] = counts.get(mid, 0) + 1
    out = {}
    for mid, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        entry = catalogue.get(mid)
        out[mid] = {"students": n, "share": round(n / len(graded), 4),
                    "name": entry.name if entry else mid,
                    "function": entry.function if entry else ""}
    return out


def misconceptions_markdown(summary: dict[str, Any]) -> str:
    """What to re-teach: the named mistakes, most common first."""
    found = summary["misconceptions"]
    graded = summary["statuses"].get(RunStatus.GRADED, 0)
    lines = [f"# Mistakes named in {graded} graded submissions", "",
             "Each is a known misconception (grader/diagnosis/catalogue.toml, "
             "docs/misconceptions.md) that the checks recognised from the values the code "
             "computed. A submission counts once per mistake.", ""]
    if not found:
        return "\n".join([*lines, "No known mistake was recognised.", ""])
    lines += ["| mistake | where | students | share |", "|---|---|---|---|"]
    lines += [f"| {v['name']} (`{mid}`) | `{v['function']}` | {v['students']} | "
              f"{100 * v['share']:.0f}% |" for mid, v in found.items()]
    return "\n".join([*lines, ""])


def _misconceptions_chart(summary: dict[str, Any], out: Path) -> Path:
    from matplotlib.figure import Figure

    path = out / "misconceptions.png"
    found = summary["misconceptions"]
    names = [v["name"] for v in found.values()]
    fig = Figure(figsize=(7, max(2.5, 0.3 * len(names) + 1)))
    ax = fig.add_subplot()
    ax.barh(range(len(names)), [v["students"] for v in found.values()])
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("students")
    ax.set_title("Known mistakes named by the checks" if names else
                 "No known mistake was recognised")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _summary(rows: list, results: dict[str, Any], check_ids: list[str]) -> dict[str, Any]:
    graded = [r for r in rows if r["status"] == RunStatus.GRADED]
    scores = [r["score"] for r in graded]
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    pass_rate = {}
    advisories: dict[str, int] = {}
    for res in results.values():
        for c in (res or {}).get("checks", []):
            if c["status"] == Status.ADVISORY:
                advisories[c["id"]] = advisories.get(c["id"], 0) + 1
    for cid in check_ids:
        outcomes = [c["status"] == Status.PASSED for res in results.values() if res
                    for c in res.get("checks", [])
                    if c["id"] == cid and c["status"] != Status.SKIPPED]
        pass_rate[cid] = round(sum(outcomes) / len(outcomes), 4) if outcomes else None
    return {
        "submissions": len(rows), "statuses": statuses,
        "score": {"mean": round(statistics.mean(scores), 3) if scores else None,
                  "median": statistics.median(scores) if scores else None,
                  "min": min(scores) if scores else None,
                  "max": max(scores) if scores else None,
                  "max_score": max((r["max_score"] for r in graded), default=None)},
        "pass_rate": pass_rate,
        "advisories": dict(sorted(advisories.items())),
        # Submissions whose points wait for a person (e.g. code that reaches around the grader).
        "review": {r["student"]: review_reasons(results[r["student"]]) for r in rows
                   if review_reasons(results[r["student"]])},
        "misconceptions": _misconception_counts(rows, results),
        # Students with several copies (or inputs): which was graded, and how to pick another.
        "copies": {r["student"]: discovery_note(r) for r in rows if discovery_note(r)},
        "seconds": {"total": round(sum(r["seconds"] for r in rows), 2),
                    "per_submission": {r["student"]: round(r["seconds"], 2) for r in rows}},
    }


def feedback_html(student: str, status: str, message: str, result: dict | None) -> str:
    """A page a student may see: their checks, with hidden ones reduced to pass/fail."""
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(student)}</title>",
             "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
             "td,th{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left}"
             ".passed{color:#070}.failed,.error{color:#a00}.advisory{color:#a60}</style></head><body>",
             f"<h1>Feedback for {esc(student)}</h1>"]
    if result is None:
        parts.append(f"<p><b>{esc(status)}</b>: {esc(message)}</p></body></html>")
        return "".join(parts)
    visible = SubmissionResult.from_dict(result).visible_to_student()
    parts.append(f"<p>Total: <b>{visible.score:g} / {visible.max_score:g}</b></p>")
    if visible.review:
        parts.append("<p><b>Needs your instructor's review</b> (points withheld until then): "
                     f"{esc('; '.join(visible.review))}</p>")
    if message:
        parts.append(f"<p>{esc(message)}</p>")
    parts.append("<table><tr><th>check</th><th>status</th><th>score</th><th>message</th></tr>")
    for c in visible.checks:
        parts.append(f"<tr><td>{esc(c.id)}</td><td class='{esc(c.status)}'>{esc(c.status)}</td>"
                     f"<td>{c.score:g} / {c.max_score:g}</td><td>{esc(c.feedback)}</td></tr>")
    parts.append("</table></body></html>")
    return "".join(parts)


def _plots(rows: list, results: dict[str, Any], check_ids: list[str], out: Path
           ) -> dict[str, Path]:
    from matplotlib.figure import Figure

    paths = {"scores": out / "score_histogram.png", "pass_rate": out / "pass_rate.png",
             "times": out / "time_per_submission.png"}
    graded = [r for r in rows if r["status"] == RunStatus.GRADED]
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.hist([r["score"] for r in graded], bins=20)
    ax.set_xlabel("score")
    ax.set_ylabel("students")
    ax.set_title(f"Scores ({len(graded)} graded)")
    fig.tight_layout()
    fig.savefig(paths["scores"], dpi=100)

    rates = _summary(rows, results, check_ids)["pass_rate"]
    fig = Figure(figsize=(7, max(3, 0.22 * len(check_ids))))
    ax = fig.add_subplot()
    ax.barh(range(len(check_ids)), [rates[c] or 0 for c in check_ids])
    ax.set_yticks(range(len(check_ids)), check_ids, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("pass rate")
    fig.tight_layout()
    fig.savefig(paths["pass_rate"], dpi=100)

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.bar(range(len(rows)), [r["seconds"] for r in rows])
    ax.set_xlabel("submission")
    ax.set_ylabel("seconds")
    ax.set_title("Grading time per submission")
    fig.tight_layout()
    fig.savefig(paths["times"], dpi=100)
    return paths
