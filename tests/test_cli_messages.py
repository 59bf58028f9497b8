"""`capgrade check` / `grade` on ordinary mistakes: one message naming the problem, exit 2.

Each is said before any worker starts (a student waiting 18 s for a temp path is
the bug); Ctrl-C in `check` says "interrupted", stops its workers and exits 130.
Every test runs the real command line in a subprocess, from a folder of its own.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grader.contract import MODULE_FILE

# Alone: it scans the whole machine, or times itself, so it runs after the corpus's pool.
pytestmark = pytest.mark.alone

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "reference" / MODULE_FILE
#: Said before grading: no worker, no torch import (a few seconds at most on a busy machine).
QUICK = 15.0


def _capgrade(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "grader.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    return done, time.monotonic() - start


def _refused(done: subprocess.CompletedProcess, seconds: float, *said: str) -> None:
    """Exit 2, no table, each of ``said`` in the one message, quick."""
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Total" not in done.stdout and "┃" not in done.stdout, done.stdout
    for text in said:
        assert text in done.stderr, done.stderr
    assert "capgrade-worker" not in done.stderr and "catalogue failed" not in done.stderr
    assert seconds < QUICK, f"{seconds:.1f} s: refused only after starting to grade"


# -- item 8: the module's path ---------------------------------------------------------------


def test_no_module_in_the_current_folder_says_so(tmp_path):
    done, seconds = _capgrade("check", cwd=tmp_path)
    _refused(done, seconds, f"no {MODULE_FILE} in the current folder ({tmp_path})",
             f"capgrade check path/to/{MODULE_FILE}")
    assert "student/" not in done.stderr  # the instructors' repository means nothing here


def test_a_folder_without_the_module_says_so(tmp_path):
    (tmp_path / "hw").mkdir()
    (tmp_path / "hw" / "my_rnn.py").write_text("x = 1\n")
    done, seconds = _capgrade("check", "hw", cwd=tmp_path)
    _refused(done, seconds, f"no {MODULE_FILE} in the folder hw", "my_rnn.py")


def test_a_folder_means_the_module_in_it(tmp_path):
    from grader.cli import _submission

    assert _submission(REFERENCE.parent) == (REFERENCE, None)
    assert _submission(REFERENCE) == (REFERENCE, None)


def test_a_notebook_is_refused_at_once_with_the_right_command(tmp_path):
    (tmp_path / "nb.ipynb").write_text("{}")
    done, seconds = _capgrade("check", "nb.ipynb", cwd=tmp_path)
    _refused(done, seconds, "nb.ipynb is a notebook", f"capgrade check {MODULE_FILE}",
             "--group notebook --notebook nb.ipynb")


def test_a_missing_path_is_one_error_and_no_table(tmp_path):
    done, seconds = _capgrade("check", "nope.py", cwd=tmp_path)
    _refused(done, seconds, "no such file: nope.py")
    assert done.stderr.count("nope.py") == 1 and not done.stdout.strip()


# -- item 8: the selection -------------------------------------------------------------------


def test_an_unknown_group_is_a_usage_error_listing_the_groups(tmp_path):
    done, seconds = _capgrade("check", str(REFERENCE), "--group", "rnnn", cwd=tmp_path)
    _refused(done, seconds, "unknown group 'rnnn'", "did you mean 'rnn'?",
             "groups are: attention, captioning, embedding_loss, lstm")


def test_a_malformed_only_is_a_usage_error(tmp_path):
    done, seconds = _capgrade("check", str(REFERENCE), "--only", "lstm and", cwd=tmp_path)
    _refused(done, seconds, "--only 'lstm and' is not a valid selection",
             "--only rnn_step_forward")


def test_an_only_that_selects_nothing_says_so_without_a_table(tmp_path):
    done, _ = _capgrade("check", str(REFERENCE), "--only", "zzz", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert not done.stdout.strip(), done.stdout  # no "Total 0 / 0"
    assert "no check matches --only 'zzz'" in done.stderr and "need --all" in done.stderr


# -- item 8: grade's LMS export --------------------------------------------------------------


def test_canvas_without_a_roster_is_refused_before_grading(tmp_path):
    (tmp_path / "subs" / "ann").mkdir(parents=True)
    done, seconds = _capgrade("grade", "subs", "-o", "out", "--quiet", "--export", "canvas",
                              cwd=tmp_path)
    _refused(done, seconds, "--export canvas needs --roster ROSTER.csv", "Nothing was graded")
    assert not (tmp_path / "out" / "gradebook.csv").exists()


# -- item 7: --device cuda without a GPU -----------------------------------------------------

_GPU_HERE = shutil.which("nvidia-smi") is not None or os.path.exists("/proc/driver/nvidia")


@pytest.mark.skipif(_GPU_HERE, reason="this machine may have a usable GPU")
@pytest.mark.parametrize("command", [["check", str(REFERENCE)], ["grade", "subs", "-o", "out"]])
def test_cuda_without_a_gpu_is_refused_before_grading(tmp_path, command):
    (tmp_path / "subs" / "ann").mkdir(parents=True)
    done, seconds = _capgrade(*command, "--device", "cuda", cwd=tmp_path)
    _refused(done, seconds, "--device cuda: this machine has no GPU driver",
             "Use --device cpu")
    assert "Found no NVIDIA driver" not in done.stdout + done.stderr
    assert not (tmp_path / "out").exists()


def test_an_unknown_device_is_a_usage_error(tmp_path):
    done, seconds = _capgrade("check", str(REFERENCE), "--device", "gpu", cwd=tmp_path)
    _refused(done, seconds, "--device 'gpu': expected cpu or cuda")


# -- item 2: Ctrl-C in check -----------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, start time, wchan) of every process /proc shows."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            wchan = Path(f"/proc/{entry}/wchan").read_text()
        except OSError:
            continue
        table[int(entry)] = (int(stat[1]), stat[19], wchan)
    return table


def _descendants(root: int) -> dict[int, tuple[str, str]]:
    """pid -> (start time, wchan) of every process started under ``root``."""
    table, found, frontier = _proc_table(), {}, {root}
    while frontier:
        frontier = {p for p, (parent, *_) in table.items() if parent in frontier
                    and p not in found}
        found.update({p: table[p][1:] for p in frontier})
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_in_check_says_interrupted_and_leaves_no_worker(tmp_path):
    """Ctrl-C (SIGINT to the terminal's process group) while the second check's call sleeps."""
    sleepy = tmp_path / "hw"
    sleepy.mkdir()
    source = REFERENCE.read_text()
    head = "def rnn_forward(x, h0, Wx, Wh, b):\n"
    assert head in source
    (sleepy / MODULE_FILE).write_text(source.replace(
        head, head + "    import time\n    time.sleep(300)\n", 1))
    cli = subprocess.Popen(
        [sys.executable, "-m", "grader.cli", "check", f"hw/{MODULE_FILE}", "--timeout", "600",
         "--only", "rnn_step_forward_public or rnn_forward_public"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    seen: dict[int, tuple[str, str]] = {}
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and cli.poll() is None:
            now = _descendants(cli.pid)
            seen.update(now)
            if any("nanosleep" in wchan for _, wchan in now.values()):
                break  # the student's rnn_forward is sleeping: the first check has finished
            time.sleep(0.2)
        else:
            pytest.fail(f"the sleeping check never started: {cli.communicate(timeout=60)}")
        os.killpg(cli.pid, signal.SIGINT)
        out, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
    assert cli.returncode == 130, out + err
    assert "interrupted (Ctrl-C) after 1 check(s) had finished" in err, err
    assert "rnn_step_forward_public: passed" in err and "Total" not in out
    time.sleep(0.5)
    table = _proc_table()
    left = [p for p, (start, _) in seen.items() if p in table and table[p][1] == start]
    assert not left, f"processes the check started are still running: {left}"
