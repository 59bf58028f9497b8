"""The bundled example class that ``capgrade demo`` (``make demo``) grades.

Built from the reference and the stub at demo time, so it never goes stale: a
correct solution, the untouched stub, three realistic bugs, a hostile
submission, a copy handed in as a zip, a broken file and an empty folder,
laid out as an instructor receives them (one folder or zip per student).
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from grader.contract import MODULE_FILE as MODULE

#: student -> (what they did, text in the reference, what they wrote instead)
BUGS = {
    "bea_no_tanh": ("forgot the tanh in rnn_step_forward",
                    "next_h = torch.tanh(x @ Wx + prev_h @ Wh + b)",
                    "next_h = x @ Wx + prev_h @ Wh + b"),
    "cal_no_carry": ("rnn_backward drops the gradient from step t + 1",
                     "rnn_step_backward(dh[:, t] + dprev_h, cache[t])",
                     "rnn_step_backward(dh[:, t], cache[t])"),
    "dee_unscaled": ("dot_product_attention does not divide by sqrt(H)",
                     'scores = torch.einsum("nh,nhp->np", prev_h, A_flat) / math.sqrt(H)',
                     'scores = torch.einsum("nh,nhp->np", prev_h, A_flat)'),
}

#: Imports fine, then leaves the grader nothing to trust: exits at import.
HOSTILE = ("import os as _os\n"
           "import torch as _torch\n"
           "_torch.allclose = lambda *a, **k: True  # 'every comparison passes'\n"
           "_os._exit(0)\n")


def write_examples(reference: Path, stub: Path, dest: Path) -> dict[str, str]:
    """Write the example class into ``dest``; returns student -> what their entry is."""
    source = reference.read_text()
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)

    def put(student: str, text: str) -> None:
        (dest / student).mkdir()
        (dest / student / MODULE).write_text(text)

    described = {"ana_correct": "a correct solution", "bob_stub": "the stub, untouched"}
    put("ana_correct", source)
    put("bob_stub", stub.read_text())
    for student, (what, old, new) in BUGS.items():
        if source.count(old) != 1:
            raise ValueError(f"example {student}: the reference no longer contains {old!r}")
        put(student, source.replace(old, new))
        described[student] = what
    put("eve_hostile", source.replace("import math\n", "import math\n" + HOSTILE, 1))
    described["eve_hostile"] = "patches torch.allclose and exits at import"
    with zipfile.ZipFile(dest / "fay_copy.zip", "w") as zf:
        zf.writestr(f"fay/{MODULE}", source)
    described["fay_copy"] = "the correct solution again, as a zip"
    put("gus_broken", source.replace("def rnn_forward(", "def rnn_forward(:", 1))
    described["gus_broken"] = "a syntax error"
    (dest / "hal_empty").mkdir()
    described["hal_empty"] = "an empty folder"
    return described


def grade_class(reference: Path, stub: Path, out: Path, workers: int | None = None) -> int:
    """``capgrade demo``: write the example class into OUT/submissions, grade it, show it.

    Public and hidden checks (no slow ones); the gradebook is printed from the
    gradebook.csv the batch wrote, each student beside what their submission is.
    """
    import csv

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from grader.batch.grading import grade_all
    from grader.harness.request import GradingRequest

    console = Console()
    described = write_examples(reference, stub, out / "submissions")
    console.print(f"grading the example class ({len(described)} submissions in "
                  f"{out / 'submissions'}): public + hidden checks")
    summary = grade_all(out / "submissions", out, workers=workers,
                        options=GradingRequest(hidden=True))
    with open(out / "gradebook.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    table = Table(title="gradebook", title_justify="left")
    for name in ("student", "what it is", "status", "score", "message"):
        table.add_column(name, overflow="fold")
    for row in rows:
        score = f"{float(row['score']):g} / {float(row['max_score']):g}" \
            if row["status"] == "graded" else "-"
        table.add_row(row["student"], described.get(row["student"], ""), row["status"], score,
                      Text(row["message"][:90]))
    console.print(table)
    console.print(f"{summary.seconds:.0f} s. Gradebook {out / 'gradebook.csv'}, feedback "
                  f"{out / 'students'}, plots and summary.json in {out}")
    return 0
