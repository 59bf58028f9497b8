"""The harness's own reading of the source (``grader.harness.source_rules``): no code runs.

Written the way students (and students trying to get around the monitor) write:
every import spelling of the forbidden APIs, and the classic ways to reach around
a runtime monitor. The real solutions in tests/ must come out clean.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.harness.source_rules import scan
from tests.conftest import REFERENCE, STUB

ROOT = Path(__file__).resolve().parent
CLEAN = [REFERENCE, STUB, ROOT / "starter" / "rnn_lstm_captioning.py",
         ROOT / "solutions" / "alt_style_rnn_lstm_captioning.py",
         *sorted((ROOT / "solutions").rglob("s*_*.py")),
         *sorted((ROOT / "solutions").rglob("b*_*.py"))]


def _scan(tmp_path: Path, source: str):
    path = tmp_path / "rnn_lstm_captioning.py"
    path.write_text(source)
    return scan(path)


@pytest.mark.parametrize("path", CLEAN, ids=lambda p: p.name)
def test_real_solutions_are_clean(path):
    found = scan(path)
    assert (found.forbidden, found.evasion, found.unreadable) == ([], [], "")


@pytest.mark.parametrize("source, api", [
    ("import torch\ndef f(x, h, a, b, c):\n    return torch.rnn_tanh_cell(x, h, a, b, c, c)\n",
     "torch.rnn_tanh_cell"),
    ("import torch as T\ny = T.lstm_cell\n", "torch.lstm_cell"),
    ("from torch import nn\nclass M(nn.Module):\n    def __init__(self):\n"
     "        self.c = nn.LSTMCell(3, 4)\n", "nn.LSTMCell"),
    ("import torch.nn.functional as F\ndef f(x, W):\n    return F.embedding(x, W)\n",
     "F.embedding"),
    ("from torch.nn import functional as Fn\nz = Fn.scaled_dot_product_attention\n",
     "F.scaled_dot_product_attention"),
    ("from torch.nn import Embedding as E\nm = E(5, 3)\n", "nn.Embedding"),
    ("import torch\nm = torch.nn.modules.rnn.LSTM(3, 4)\n", "nn.LSTM"),
    ("import torch\nf = getattr(torch, 'gru_cell')\n", "torch.gru_cell"),
])
def test_forbidden_apis_are_found_however_imported(tmp_path, source, api):
    found = _scan(tmp_path, source)
    assert api in [f.what for f in found.forbidden]


def test_a_finding_names_its_line_and_function(tmp_path):
    found = _scan(tmp_path, "import torch\n\n\nclass WordEmbedding:\n    def forward(self, x):\n"
                            "        return torch.embedding(self.W, x)\n")
    (finding,) = found.forbidden
    assert (finding.line, finding.function) == (6, "WordEmbedding.forward")


@pytest.mark.parametrize("source, marker", [
    ("import torch\nwith torch._C.DisableTorchFunction():\n    pass\n", "DisableTorchFunction"),
    ("code = compile('x = 1', 'other.py', 'exec')\nexec(code)\n", "exec"),
    ("import sys\nsys.modules['grader.worker.forbidden'].ForbiddenMonitor.report = None\n",
     "sys.modules"),
    ("from grader.worker import probes\nprobes.PROBES['overfit'] = print\n", "grader"),
    ("import importlib\nm = importlib.import_module('gra' + 'der.worker.probes')\n",
     "importlib"),
    ("import ctypes\nlibc = ctypes.CDLL(None)\n", "ctypes"),
    ("import gc\nfor o in gc.get_objects():\n    pass\n", "gc.get_objects"),
    ("import torch\nf = getattr(torch, 'lstm' + '_cell')\n", "name computed at run time"),
    ("def f():\n    pass\nf.__code__ = (lambda: 1).__code__\n", "__code__"),
    ("b = __builtins__\n", "__builtins__"),
    ("import torch\nf = torch.ops.aten.lstm_cell\n", "torch.ops"),
    ("m = __import__('grad' + 'er')\n", "__import__"),
    ("import inspect\nframe = inspect.currentframe()\n", "inspect"),
    # laundered: no forbidden or evasive name written anywhere
    ("import torch\n_T = torch\ncell = getattr(_T, 'lstm' + '_cell')\n",
     "name computed at run time"),
    ("_B = len.__self__\nrun = _B.__dict__\n", "__self__"),
    ("def f(obj, name):\n    return getattr(obj, name)\n", "name computed at run time"),
])
def test_evasion_is_found(tmp_path, source, marker):
    found = _scan(tmp_path, source)
    assert found.needs_review
    assert any(marker in f.what for f in found.evasion), [f.what for f in found.evasion]


def test_unparseable_or_huge_source_needs_review(tmp_path):
    assert _scan(tmp_path, "def broken(:\n").needs_review
    assert _scan(tmp_path, "x = 1\n" * 400_000).unreadable.startswith("the module is")


def test_ordinary_student_code_is_not_flagged(tmp_path):
    source = "\n".join([
        "import math", "import torch", "import torch.nn as nn",
        "from torch.nn import functional as F", "import os, sys, time", "",
        "class LSTM(nn.Module):", "    def __init__(self):", "        super().__init__()",
        "        self.lstm = None", "        for m in self.modules():", "            pass",
        "        w = getattr(self, 'W' + str(1), None)", "",
        "def loss(x, y):", "    return F.cross_entropy(x, y, reduction='sum') / x.shape[0]",
        "print(os.path.join('a', 'b'), sys.version, time.time(), math.sqrt(2))", ""])
    found = _scan(tmp_path, source)
    assert (found.forbidden, found.evasion) == ([], [])
