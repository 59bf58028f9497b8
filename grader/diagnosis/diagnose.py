"""Weigh each check's evidence over the whole submission and name the mistakes found.

A misconception is named on a failing check whose values are exactly what it
computes, unless another check *of the same function* contradicts it (the
function is the check's rubric ``target``), or a check of the function where
the mistake lives (its catalogue ``function``) does. Contradictions count per
function because a student may make two mistakes in different functions: a
check of CaptioningRNN then shows both mixed and matches neither, which says
nothing against either one where a check isolates its function.

Where several mistakes give exactly the same values on a check (a loss function
that ignores nothing, or a CaptioningRNN that never passes ignore_index), the
ones that some other check shows alone are preferred: the simplest explanation
of every failing value. Nothing is guessed: a failing check that matches no
fingerprint gets no diagnosis.

Confidence, 0 to 1: the share of the checks that could show the mistake (those it
changes, that ran) and agree, times 1 - 2^-k for k agreeing checks (several
checks agreeing make it more certain), divided among the mistakes that match
the same check equally well.
"""

from __future__ import annotations

from grader.diagnosis.catalogue import Misconception
from grader.diagnosis.evidence import verdict
from grader.results import CheckResult


def confidence(matched: int, contradicted: int, rivals: int) -> float:
    if matched == 0:
        return 0.0
    agreement = matched / (matched + contradicted)
    return round(agreement * (1 - 0.5 ** matched) / max(rivals, 1), 2)


def text(entry: Misconception, rivals: list[Misconception], agreeing: int) -> str:
    if not rivals:
        agree = f" ({agreeing} checks agree.)" if agreeing > 1 else ""
        return f"Likely cause: {entry.text()}{agree}"
    names = ", ".join(f'"{r.name}"' for r in rivals)
    return (f"Possible cause (one of {len(rivals) + 1} mistakes that give exactly these values; "
            f"the others: {names}): {entry.text()}")


def diagnose(checks: list[CheckResult], notes: dict[str, dict[str, list[str]]],
             catalogue: dict[str, Misconception]) -> None:
    """Set ``diagnoses`` on every failing check from ``notes`` ({check id: {mid: words}})."""
    verdicts: dict[str, dict[str, str]] = {}
    for check in checks:
        if check.advisory or check.id not in notes:
            continue
        failed = check.status == "failed"
        verdicts[check.id] = {mid: v for mid, words in notes[check.id].items()
                              if mid in catalogue
                              and (v := verdict(words, catalogue[mid], failed))}
    by_id = {c.id: c for c in checks}
    against = [(mid, by_id[cid].target) for cid, found in verdicts.items()
               for mid, v in found.items() if v == "contradicts"]
    refuted = set(against)
    refuted_at_home = {mid for mid, target in against if target == catalogue[mid].function}
    named: dict[str, list[str]] = {}  # check id -> misconceptions named there
    for cid, found in verdicts.items():
        named[cid] = [mid for mid, v in found.items() if v == "match" and mid not in
                      refuted_at_home and (mid, by_id[cid].target) not in refuted]
    alone = {mids[0] for mids in named.values() if len(mids) == 1}
    for cid, mids in named.items():
        if len(mids) > 1 and alone.intersection(mids):
            named[cid] = [mid for mid in mids if mid in alone]
    matched = {mid: sum(mid in mids for mids in named.values()) for mid in catalogue}
    contradicted = {mid: sum(found.get(mid) == "contradicts" for found in verdicts.values())
                    for mid in catalogue}
    for cid, mids in named.items():
        by_id[cid].diagnoses = [
            {"id": mid,
             "confidence": confidence(matched[mid], contradicted[mid], len(mids)),
             "text": text(catalogue[mid], [catalogue[m] for m in mids if m != mid],
                          matched[mid])}
            for mid in mids]


def summary(checks: list[CheckResult]) -> dict[str, int]:
    """How many checks name each misconception (a submission's mistakes, for reports)."""
    counts: dict[str, int] = {}
    for check in checks:
        for d in check.diagnoses:
            counts[d["id"]] = counts.get(d["id"], 0) + 1
    return counts
