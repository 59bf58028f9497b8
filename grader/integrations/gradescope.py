"""Gradescope: build the autograder bundle, and grade one submission inside it.

Gradescope unpacks the bundle's zip into ``/autograder/source``, runs
``setup.sh`` once when it builds the image, then for every submission runs
``/autograder/run_autograder`` as root, with the student's files in
``/autograder/submission``, and reads ``/autograder/results/results.json``
(gradescope-autograders.readthedocs.io, "Autograder Specifications"). Here
``run_autograder`` calls ``python -m grader.integrations.gradescope``, which grades with the
hidden checks through the same ``grade`` as every other mode and always
leaves a valid results.json: a broken or hostile submission gets its failed
checks, a grader failure a zero with the reason, never a missing file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import stat
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

from grader import __version__

CONFIG = "capgrade-autograder.json"
HIDDEN_NAME = "hidden.safetensors"
#: The reference solution, root's alone like the hidden values: it verifies the overfit
#: trainings in a worker that runs no student code.
REFERENCE_NAME = "reference_rnn_lstm_captioning.py"
PYTHON = "/opt/capgrade/bin/python"  # the venv setup.sh makes
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
#: Seconds after which run_autograder stops grading and reports so: under
#: Gradescope's default 10-minute limit, past which it would keep no results at all.
DEADLINE = 540.0

SETUP_SH = """\
#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image.
set -euo pipefail
cd /autograder/source
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends python3 python3-venv python3-pip util-linux
python3 -m venv /opt/capgrade
# The torch the expected values were built with (a newer one may compute other numbers).
{torch_install}
/opt/capgrade/bin/pip install --disable-pip-version-check ./{wheel}
# The hidden expected values are root's alone; student code runs as nobody.
chmod 700 /autograder/source
chmod 600 /autograder/source/{hidden} /autograder/source/{reference}
"""

RUN_AUTOGRADER = """\
#!/usr/bin/env bash
# Gradescope runs this per submission, as root. It always leaves results/results.json.
# CAPGRADE_AUTOGRADER_ROOT and CAPGRADE_PYTHON override the paths (tests, trial runs).
set -u
ROOT="${{CAPGRADE_AUTOGRADER_ROOT:-/autograder}}"
PYTHON="${{CAPGRADE_PYTHON:-{python}}}"
RESULTS="$ROOT/results/results.json"
mkdir -p "$ROOT/results"
rm -f "$RESULTS"
"$PYTHON" -m grader.integrations.gradescope --root "$ROOT"
status=$?
if [ ! -s "$RESULTS" ]; then
  # The grader itself never finished: still a valid results.json, and the reason.
  if [ "$status" -eq 137 ]; then
    why="The grading machine ran out of memory (the autograder was killed, exit status 137)"
    echo "capgrade: killed (exit 137): raise the autograder's memory; measure what it needs" \\
      "with: capgrade gradescope --trial SUBMISSION --memory 768M --cpus 0.5"
  else
    why="The autograder could not run (exit status $status)"
  fi
  printf '%s\\n' "{{\\"score\\": 0, \\"output\\": \\"$why: your submission was not graded, \
and this says nothing about your code. It must be regraded: please tell your instructor.\\", \
\\"tests\\": []}}" > "$RESULTS"
fi
exit 0
"""


def build_bundle(out: Path, hidden: Path, slow: bool = True, notebook: bool = True,
                 timeout: float | None = None, deadline: float = DEADLINE,
                 reference: Path | None = None) -> Path:
    """Write the autograder zip: setup.sh, run_autograder, the wheel, hidden values, reference,
    config. ``reference``: the solution beside the hidden values when not given."""
    from grader.authoring.release import ReleaseError, build_wheel
    from grader.harness import expected as ex
    from grader.integrations import pins

    if not hidden.is_file():
        raise ReleaseError(f"hidden expected values not found at {hidden}: run `capgrade build` "
                           "in the instructors' checkout first")
    ex.load(hidden)  # a damaged file fails here, not on Gradescope
    from grader.contract import MODULE_FILE

    reference = Path(reference) if reference is not None else \
        Path(hidden).resolve().parent.parent / MODULE_FILE
    if not reference.is_file():
        raise ReleaseError(f"the reference solution was not found at {reference}: the bundle "
                           "needs it to verify the overfit trainings (pass --reference)")
    config = {"capgrade": __version__, "slow": slow, "notebook": notebook, "timeout": timeout,
              "deadline": deadline, "hidden_expected": HIDDEN_NAME,
              "reference": REFERENCE_NAME}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="capgrade-gradescope-") as tmp:
        wheel = build_wheel(Path(tmp))
        try:
            torch_install = pins.pinned_install(TORCH_INDEX, pip="/opt/capgrade/bin/pip")
        except pins.PinError as exc:
            raise ReleaseError(f"cannot pin torch for setup.sh: {exc}") from None
        files = {
            "setup.sh": (SETUP_SH.format(torch_install=torch_install, wheel=wheel.name,
                                         hidden=HIDDEN_NAME, reference=REFERENCE_NAME
                                         ).encode(), 0o755),
            "run_autograder": (RUN_AUTOGRADER.format(python=PYTHON).encode(), 0o755),
            CONFIG: ((json.dumps(config, indent=2) + "\n").encode(), 0o644),
            HIDDEN_NAME: (hidden.read_bytes(), 0o600),
            REFERENCE_NAME: (reference.read_bytes(), 0o600),
            wheel.name: (wheel.read_bytes(), 0o644),
        }
        partial = out.with_name(out.name + ".part")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, (data, mode) in files.items():
                info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
                info.external_attr = (stat.S_IFREG | mode) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, data)
        os.replace(partial, out)
    return out


# -- inside Gradescope ---------------------------------------------------------------------


def _failure(message: str, started: float) -> dict[str, Any]:
    """A valid results.json for a submission that could not be graded at all."""
    return {"score": 0.0, "execution_time": round(time.monotonic() - started, 3),
            "output": message, "output_format": "text", "visibility": "visible",
            "stdout_visibility": "hidden", "tests": []}


def _listing(folder: Path, limit: int = 20) -> str:
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit
                                        else "")
    return shown or "none"


def _protect(source: Path, hidden: Path) -> None:
    """Root's alone, whatever setup.sh did: the sandbox user must not read the hidden values."""
    for path, mode in ((source, 0o700), (hidden, 0o600)):
        with contextlib.suppress(OSError):
            os.chmod(path, mode)


def grade(root: Path, progress: Any = None) -> dict[str, Any]:
    """Grade ``root``/submission with the bundle in ``root``/source; results.json as a dict."""
    from grader.batch.submissions import find_file
    from grader.contract import LOSS_FILE, MODULE_FILE, NOTEBOOK_FILE
    from grader.harness.engine import grade as grade_submission
    from grader.harness.request import GradingRequest
    from grader.results import RunStatus
    from grader.results.render import gradescope_dict

    started = time.monotonic()
    source, submission = root / "source", root / "submission"
    config_path = source / CONFIG
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    hidden = source / config.get("hidden_expected", HIDDEN_NAME)
    reference = source / config.get("reference", REFERENCE_NAME)
    _protect(source, hidden)
    _protect(source, reference)
    if not submission.is_dir():
        return _failure(f"No submission folder at {submission}.", started)
    module = find_file(submission, MODULE_FILE)
    if module is None:
        return _failure(f"No {MODULE_FILE} in your submission (files found: "
                        f"{_listing(submission)}). Upload it with that name and submit again.",
                        started)
    # No notebook_out: nobody reads the executed copy here, so no HTML export is paid for.
    result = grade_submission(GradingRequest(
        submission=module, hidden=True, slow=config.get("slow", True),
        notebook=config.get("notebook", True), timeout=config.get("timeout"),
        hidden_expected=hidden, loss_file=find_file(submission, LOSS_FILE),
        notebook_path=find_file(submission, NOTEBOOK_FILE),
        reference=reference if reference.is_file() else None), progress=progress)
    if not RunStatus(result.status).graded:
        raise RuntimeError(f"{result.status}: {result.message}")
    if result.needs_regrade:  # run_autograder's stdout: instructors only
        from grader.results.render import limits_note

        print(limits_note(result))
    return gradescope_dict(result)


def write_results(data: dict[str, Any], path: Path) -> None:
    """Strict JSON, written whole (a partial file is never seen)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False, default=str)
    partial = path.with_name(path.name + ".part")
    partial.write_text(text + "\n", encoding="utf-8")
    os.replace(partial, path)


def _watchdog(deadline: float, results: Path, started: float, progress: Any) -> None:
    """At the deadline: keep the verdicts so far, the rest an error to regrade; then stop.

    Each check has its own timeout, so the whole run passes the deadline only
    when the machine is too slow for this assignment: the grader's limit,
    never the student's failure.
    """
    time.sleep(deadline)
    from grader import sandbox
    from grader.results.render import gradescope_dict, limits_note

    try:
        partial = progress.interrupted(f"grading was stopped at the autograder's {deadline:g} s "
                              "deadline before this check ran")
        if partial is not None:
            data = gradescope_dict(partial)
            print(limits_note(partial))
        else:
            data = _failure(f"Grading did not finish within {deadline:g} s on this grading "
                            "machine, so it was stopped. This says nothing about your code: the "
                            "submission must be regraded. Please tell your instructor.", started)
        write_results(data, results)
    finally:
        sandbox.kill_all_started()
        os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="grade one Gradescope submission")
    parser.add_argument("--root", type=Path, default=Path("/autograder"))
    args = parser.parse_args(argv)
    started = time.monotonic()
    results = args.root / "results" / "results.json"
    try:
        config = json.loads((args.root / "source" / CONFIG).read_text())
    except (OSError, ValueError):
        config = {}
    from grader.harness.engine import InProgress

    progress = InProgress()  # what the watchdog reports at the deadline
    threading.Thread(target=_watchdog, daemon=True, args=(
        float(config.get("deadline") or DEADLINE), results, started, progress)).start()
    try:
        data = grade(args.root, progress)
    except MemoryError:
        print("capgrade: MemoryError in the grader: raise the autograder's memory")
        data = _failure("The grading machine ran out of memory, so your submission was not "
                        "graded; this says nothing about your code. It must be regraded: "
                        "please tell your instructor.", started)
    except Exception as exc:  # the grader broke: a zero that says so, never no results
        data = _failure(f"The autograder itself failed ({type(exc).__name__}: {exc}); your "
                        "submission was not graded. Please tell your instructor.", started)
    write_results(data, results)
    print(data.get("output", ""))
    return 0


def unpack_for_trial(bundle: Path, root: Path) -> Path:
    """Lay out ``bundle`` as Gradescope does (source/, run_autograder) for a local trial."""
    source = root / "source"
    if source.exists():
        shutil.rmtree(source)
    source.mkdir(parents=True)
    with zipfile.ZipFile(bundle) as zf:
        for info in zf.infolist():
            target = source / info.filename
            target.write_bytes(zf.read(info))
            os.chmod(target, (info.external_attr >> 16) & 0o777 or 0o644)
    shutil.copy2(source / "run_autograder", root / "run_autograder")
    for sub in ("submission", "results"):
        (root / sub).mkdir(exist_ok=True)
    return root / "run_autograder"


if __name__ == "__main__":
    sys.exit(main())
