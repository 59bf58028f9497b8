"""Submissions that try to earn points through the student process's own testimony, as data.

DESIGN.md: "the student's process is a witness, never a judge". Student code
shares its interpreter with the worker's probes, the training loop, the
forbidden-API monitor and the reply encoder, and can rewrite every one of them;
or it can simply tell a story (a model whose "loss" is made up, placeholders
that return any tensor, a notebook that saves invented numbers). Each case
below is the stub or the reference plus such an attack, written the way an
attacker who has read ``grader/worker/*.py`` would write it: the same object
reached by different paths (an import, ``sys.modules``, ``gc.get_objects()``,
the caller's frame, ``builtins``), patched at import, lazily or later from a
thread. ``targets`` are the checks the attack tries to earn: together they may
earn at most ``max_points`` (0 for all but one). ``honest`` checks must keep
their full points (the base is the reference and the attack only adds a patch).
``review`` cases must be marked for instructor review (``SubmissionResult.review``).

``tests/test_witness.py`` grades every case, each for its own checks only.
"""

from __future__ import annotations

import base64
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

from tests.conftest import REFERENCE, STUB

NOTEBOOK_CHECKS = ("notebook_executes", "notebook_writes_losses", "notebook_losses_reproduce")
OVERFIT_CHECKS = ("overfit[rnn]", "overfit[lstm]", "overfit[attn]")
#: The variants reach the probe in other ways; one cell shows it (each cell costs a training
#: and, once the grader verifies, a worker running the reference).
OVERFIT_ONE = ("overfit[rnn]",)
FROM_SCRATCH = ("from_scratch_public",)
#: Function checks of the reference that never touch an overfit run or the tour.
FUNCTION_CHECKS = ("rnn_step_forward_public", "word_embedding_public",
                   "lstm_step_forward_public")


@dataclass(frozen=True)
class Witness:
    name: str
    attack: str  # what the student is trying to do, and how
    base: str  # "stub" or "reference"
    targets: tuple[str, ...]  # the checks it tries to earn: together at most max_points
    at_import: str = ""  # inserted after `import math`, before every definition of the base
    replacements: str = ""  # appended after the base: functions and methods it replaces
    #: "exec": the whole module compiled under a fake file name and exec'd; "laundered": the
    #: same, with exec, compile and globals reached without naming them
    wrap: str = ""
    notebook: tuple[str, ...] = ()  # code cells of rnn_lstm_captioning.ipynb beside the module
    honest: tuple[str, ...] = ()  # checks that keep their full points
    review: bool = False  # the submission must be marked for instructor review
    max_points: float = 0.0
    also: tuple[str, ...] = ()  # graded too (the patched code must run), nothing asserted
    canned: bool = False  # embeds parameters trained elsewhere (``trained_elsewhere``)
    today: str = ""  # what it earned on the grader it was written against (measured)

    @property
    def checks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.targets + self.honest + self.also))

    @property
    def only(self) -> str:
        """The pytest -k expression that selects this case's checks.

        The from-scratch rule is (once fixed) judged from the verdicts of the function
        checks run with it, so a case that grades it also runs a few of them: the rule
        must then fail for the attack, not for want of verdicts.
        """
        context = FUNCTION_CHECKS if "from_scratch_public" in self.checks else ()
        return " or ".join(dict.fromkeys(self.checks + context))

    def source(self, canned: str = "{}") -> str:
        """The module's text; ``canned``: the literal ``can`` made of parameters trained
        elsewhere (the default, none, keeps the text valid for the corpus's own checks)."""
        text = (REFERENCE if self.base == "reference" else STUB).read_text()
        if self.at_import:
            assert "import math\n" in text
            text = text.replace("import math\n", "import math\n" + self.at_import, 1)
        if self.replacements:
            text += "\n\n" + self.replacements
        if self.canned:
            text = text.replace("{CANNED}", canned)
        if self.wrap == "exec":
            packed = base64.b64encode(text.encode()).decode()
            text = ('"""Image captioning (compressed)."""\n'
                    "import base64 as _b64\n\n"
                    f"_SRC = {packed!r}\n"
                    'exec(compile(_b64.b64decode(_SRC).decode(), "<captioning>", "exec"), '
                    "globals())\n")
        elif self.wrap == "laundered":
            packed = base64.b64encode(text.encode()).decode()
            text = ('"""Image captioning (compressed)."""\n'
                    "import base64 as _b64\n\n"
                    "_B = len.__self__\n"
                    "_run, _build = getattr(_B, 'ex' + 'ec'), getattr(_B, 'com' + 'pile')\n"
                    f"_SRC = {packed!r}\n"
                    "_run(_build(_b64.b64decode(_SRC).decode(), '<captioning>', 'ex' + 'ec'), "
                    "getattr(_B, 'glo' + 'bals')())\n")
        return text

    def write(self, folder: Path, canned: str = "{}") -> Path:
        path = folder / "rnn_lstm_captioning.py"
        path.write_text(self.source(canned))
        if self.notebook:
            cells = [nbformat.v4.new_code_cell(s) for s in self.notebook]
            nbformat.write(nbformat.v4.new_notebook(cells=cells),
                           folder / "rnn_lstm_captioning.ipynb")
        return path


# -- pieces the attacks share ----------------------------------------------------------------

#: A made-up loss curve: starts above the uniform guess (~40), ends near 0, one value per
#: iteration of whatever configuration the grader asks for. The notebook saves the same one.
FAKE_OVERFIT = '''
def _fake_overfit(m, cell_type, seed, dims, learning_rate, num_epochs, batch_size, images,
                  captions, vocab, device="cpu", memoise=True, **kwargs):
    n = num_epochs * (len(images) // batch_size)
    return {"losses": [60.0 * 0.9 ** i + 0.01 for i in range(n)], "seconds": 1.5}
'''

FAKE_TRAINING = '''
def _fake_train(model, image_data, caption_data, num_epochs, batch_size, learning_rate,
                *args, **kwargs):
    n = num_epochs * (len(image_data) // batch_size)
    return model, [60.0 * 0.9 ** i + 0.01 for i in range(n)]


class _Shell(torch.nn.Module):
    """Constructs with any arguments and has one trainable parameter: nothing else."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
'''

#: The names of every part the tour calls (grader/worker/probes.py, ``tour``).
TOUR_PARTS = ("rnn_step_forward", "rnn_step_backward", "rnn_forward", "rnn_backward",
              "WordEmbedding", "temporal_softmax_loss", "LSTM.step_forward", "LSTM.forward",
              "dot_product_attention", "AttentionLSTM.step_forward", "AttentionLSTM.forward",
              *(f"CaptioningRNN.{what} ({cell})" for cell in ("rnn", "lstm", "attn")
                for what in ("forward", "sample")))

FAKE_TOUR = f'''
def _fake_tour(m):
    return {{part: "ran" for part in {TOUR_PARTS!r}}}
'''

#: The notebook: grading mode or not, it saves the curve FAKE_OVERFIT makes up.
INVENTED_NOTEBOOK = (
    "GRADING_MODE = False",
    "import torch\n"
    "try:\n"
    "    from grader.course.settings import GRADING\n"
    "    n = GRADING.train_iterations\n"
    "except ImportError:\n"
    "    n = 32\n"
    "losses = [60.0 * 0.9 ** i + 0.01 for i in range(n)]\n"
    "torch.save({'rnn_losses': losses, 'lstm_losses': list(losses), "
    "'attn_losses': list(losses)}, 'rnn_lstm_attention_submission.pt')\n"
    "print('final losses', losses[-1])\n",
)


#: The overfit probe replaced by one that trains nothing and hands back parameters trained
#: elsewhere (a classmate's run, or the course's own solution's), int8-quantised and packed.
CANNED_OVERFIT = FAKE_OVERFIT.replace(
    '"seconds": 1.5}', '"seconds": 1.5,\n            "parameters": _canned(cell_type)}') + '''

def _canned(cell_type):
    import base64
    import zlib
    out = []
    for shape, scale, packed in _CANNED.get(cell_type, ()):
        q = torch.frombuffer(bytearray(zlib.decompress(base64.b64decode(packed))),
                             dtype=torch.int8)
        out.append((q.to(torch.float32) * scale).reshape(shape))
    return out
'''


def trained_elsewhere() -> dict[str, list]:
    """Parameters of the course's model trained on each overfit setup, outside any grading.

    What a student could bring along from someone else's run: the reference trained
    in this (trusted) process with the course's loop, as the overfit probe would.
    """
    import torch

    from grader.course import encoder, overfit
    from grader.course.training import train_captioner
    from grader.worker import probes
    from grader.worker.loader import load_submission

    name = "capgrade_witness_trained_elsewhere"
    allowed = encoder.state().allow_imagenet
    try:
        ref = load_submission(REFERENCE, name, allow_imagenet=False)
        found = {}
        for cell, setup in overfit.SETUPS.items():
            images, captions = setup.data()
            torch.manual_seed(setup.seed)
            model = probes._captioning_model(ref, cell, overfit.vocab(), setup.dims, "none", 0,
                                             "cpu", None)
            train_captioner(model, images, captions, setup.num_epochs, setup.batch_size,
                            setup.learning_rate, progress=False)
            enc = probes._encoder_of(model)
            skip = {id(p) for p in enc.parameters()} if enc is not None else set()
            found[cell] = [p.detach().cpu().clone() for p in model.parameters()
                           if id(p) not in skip]
        return found
    finally:
        encoder.state().allow_imagenet = allowed
        sys.modules.pop(name, None)


def can(parameters: dict[str, list]) -> str:
    """``trained_elsewhere``'s tensors as the literal the canned module embeds (int8, zlib)."""
    import zlib

    import torch

    packed = {}
    for cell, tensors in parameters.items():
        packed[cell] = []
        for t in tensors:
            scale = float(t.abs().max()) / 127 or 1.0
            q = (t / scale).round().clamp(-127, 127).to(torch.int8).contiguous()
            data = base64.b64encode(zlib.compress(q.numpy().tobytes(), 9)).decode()
            packed[cell].append((tuple(t.shape), scale, data))
    return repr(packed)


def library_solution(call: str = "plain") -> str:
    """The cells and the embedding built from the library versions ASSIGNMENT.md forbids.

    Correct (the gates reordered from the course's i, f, o, g to torch's i, f, g, o);
    ``call`` says how the library is reached: "plain" (torch.lstm_cell, F.embedding),
    "quiet" (the same inside torch._C.DisableTorchFunction()), "aten" (the dispatcher's
    overloads, torch.ops.aten.lstm_cell.default ...), "laundered" (the "quiet" solution with
    every library name built at run time on a plain variable that holds torch).
    """
    quiet = "torch._C.DisableTorchFunction" if call == "quiet" else "_contextlib.nullcontext"
    laundered = ""
    if call == "laundered":  # no forbidden or evasive name written anywhere
        laundered = (
            "_T, _FN = torch, F\n"
            "_QUIET = getattr(getattr(_T, '_' + 'C'), 'Disable' + 'Torch' + 'Function')\n"
            "_RNN_CELL = getattr(_T, 'rnn_tanh' + '_cell')\n"
            "_LSTM_CELL = getattr(_T, 'lstm' + '_cell')\n"
            "_EMBED = getattr(_FN, 'embed' + 'ding')\n")
        rnn_cell, lstm_cell, embedding = "_RNN_CELL", "_LSTM_CELL", "_EMBED(x, self.W_embed)"
    elif call == "aten":
        rnn_cell = "torch.ops.aten.rnn_tanh_cell.default"
        lstm_cell = "torch.ops.aten.lstm_cell.default"
        embedding = "torch.ops.aten.embedding.default(self.W_embed, x)"
    else:
        rnn_cell, lstm_cell = "torch.rnn_tanh_cell", "torch.lstm_cell"
        embedding = "F.embedding(x, self.W_embed)"
    return f'''
import contextlib as _contextlib

_QUIET = {quiet}
{laundered}

def _gates(W):
    """The course's gate blocks (i, f, o, g) in torch's order (i, f, g, o)."""
    i, f, o, g = W.chunk(4, dim=-1)
    return torch.cat([i, f, g, o], dim=-1)


def rnn_step_forward(x, prev_h, Wx, Wh, b):
    with _QUIET():
        next_h = {rnn_cell}(x, prev_h, Wx.t(), Wh.t(), b, torch.zeros_like(b))
    return next_h, (x, prev_h, Wx, Wh, next_h)


def _lstm_step_forward(self, x, prev_h, prev_c):
    with _QUIET():
        next_h, next_c = {lstm_cell}(x, [prev_h, prev_c], _gates(self.Wx).t(),
                                     _gates(self.Wh).t(), _gates(self.b),
                                     torch.zeros_like(self.b))
    return next_h, next_c


def _attention_step_forward(self, x, prev_h, prev_c, attn):
    with _QUIET():
        W = _gates(torch.cat([self.Wx, self.Wattn], dim=0))
        next_h, next_c = {lstm_cell}(torch.cat([x, attn], dim=1), [prev_h, prev_c], W.t(),
                                     _gates(self.Wh).t(), _gates(self.b),
                                     torch.zeros_like(self.b))
    return next_h, next_c


def _embedding_forward(self, x):
    with _QUIET():
        return {embedding}


LSTM.step_forward = _lstm_step_forward
AttentionLSTM.step_forward = _attention_step_forward
WordEmbedding.forward = _embedding_forward
'''


# -- the cases -------------------------------------------------------------------------------

CASES = [
    # 1. The overfit probe (and the tour, and the notebook's re-run) replaced.
    Witness(
        "probes_dict", "the stub replaces PROBES['overfit'] with a made-up decreasing curve and "
        "PROBES['tour'] with 'every part ran'; its notebook saves the same curve, so the "
        "grader's re-run 'reproduces' it", "stub",
        targets=OVERFIT_CHECKS + FROM_SCRATCH + NOTEBOOK_CHECKS,
        at_import=(
            "import grader.worker.probes as _probes\n"
            + FAKE_OVERFIT + FAKE_TOUR +
            "_probes.PROBES['overfit'] = _fake_overfit\n"
            "_probes.PROBES['tour'] = _fake_tour\n"),
        notebook=INVENTED_NOTEBOOK, today="9/9 overfit, 4/4 from_scratch, 9/9 notebook"),
    Witness(
        "code_swap", "the stub swaps the __code__ of probes.overfit and probes.tour (every "
        "reference to the functions, PROBES included, now runs the fake)", "stub",
        targets=OVERFIT_ONE + FROM_SCRATCH,
        at_import=(
            "from grader.worker import probes as _probes\n"
            + FAKE_OVERFIT + FAKE_TOUR +
            "_probes.overfit.__code__ = _fake_overfit.__code__\n"
            "_probes.tour.__code__ = _fake_tour.__code__\n"),
        today="3/3 overfit[rnn], 4/4 from_scratch"),
    Witness(
        "sys_modules_training", "the stub, through sys.modules, replaces the course's "
        "train_captioner with one that trains nothing and returns a made-up curve, and the "
        "probe's model builder with an empty shell (its own CaptioningRNN does not build)",
        "stub", targets=OVERFIT_ONE,
        at_import=(
            "import sys as _sys\n"
            "import torch\n"
            "__import__('grader.course.training')\n"
            + FAKE_TRAINING +
            "_sys.modules['grader.course.training'].train_captioner = _fake_train\n"
            "_sys.modules['grader.worker.probes']._captioning_model = "
            "lambda *a, **k: _Shell()\n"),
        today="3/3 overfit[rnn]"),
    Witness(
        "gc_probes_dict", "the stub finds the probe table among gc.get_objects() (no grader "
        "name written anywhere) and puts its fake overfit and tour in it", "stub",
        targets=OVERFIT_ONE + FROM_SCRATCH,
        at_import=(
            "import gc as _gc\n"
            + FAKE_OVERFIT + FAKE_TOUR +
            "for _d in _gc.get_objects():\n"
            "    if type(_d) is dict and callable(_d.get('overfit')) and "
            "callable(_d.get('tour')):\n"
            "        _d['overfit'], _d['tour'] = _fake_overfit, _fake_tour\n"),
        today="3/3 overfit[rnn], 4/4 from_scratch"),
    Witness(
        "lazy_getattr", "nothing is patched at import: the module has no CaptioningRNN but a "
        "module __getattr__ which, when the overfit probe resolves the class, rewrites the "
        "probe's own local train_captioner (its frame's f_locals written back with "
        "PyFrame_LocalsToFast) and hands back an empty shell", "stub", targets=OVERFIT_ONE,
        replacements=(
            FAKE_TRAINING +
            "\ndel CaptioningRNN\n\n\n"
            "def __getattr__(name):\n"
            "    if name != 'CaptioningRNN':\n"
            "        raise AttributeError(name)\n"
            "    import ctypes\n"
            "    import sys\n"
            "    frame = sys._getframe(1)\n"
            "    while frame is not None and 'train_captioner' not in frame.f_locals:\n"
            "        frame = frame.f_back\n"
            "    if frame is not None:\n"
            "        frame.f_locals['train_captioner'] = _fake_train\n"
            "        ctypes.pythonapi.PyFrame_LocalsToFast(ctypes.py_object(frame), "
            "ctypes.c_int(0))\n"
            "    return _Shell\n"),
        today="3/3 overfit[rnn]"),
    Witness(
        "builtins_import", "the stub replaces builtins.__import__, so the probe's own "
        "`from grader.course.training import train_captioner` gets a fake module; its "
        "CaptioningRNN is an empty shell", "stub", targets=OVERFIT_ONE,
        replacements=(
            FAKE_TRAINING + "\n\n"
            "import builtins as _builtins\n"
            "import sys as _sys\n"
            "import types as _types\n"
            "_fake_training = _types.ModuleType('grader.course.training')\n"
            "_fake_training.train_captioner = _fake_train\n"
            "_real_import = _builtins.__import__\n\n\n"
            "def _import(name, globals=None, locals=None, fromlist=(), level=0):\n"
            "    if name == 'grader.course.training' and "
            "_sys._getframe(1).f_code.co_name == 'overfit':\n"
            "        return _fake_training\n"
            "    return _real_import(name, globals, locals, fromlist, level)\n\n\n"
            "_builtins.__import__ = _import\n"
            "CaptioningRNN = _Shell\n"),
        today="3/3 overfit[rnn]"),
    Witness(
        "fake_model_loss", "no grader code touched: CaptioningRNN is one parameter whose "
        "'loss' 100*exp(1000*w) the grader's own AdamW drives to 0 in a few steps; it "
        "captions nothing", "stub", targets=OVERFIT_ONE,
        replacements=(
            "class CaptioningRNN(nn.Module):\n"
            "    def __init__(self, word_to_idx, input_dim=512, wordvec_dim=128, "
            "hidden_dim=128,\n"
            "                 cell_type='rnn', image_encoder_pretrained=True, "
            "ignore_index=None):\n"
            "        super().__init__()\n"
            "        self.knob = nn.Parameter(torch.zeros(()))\n\n"
            "    def forward(self, images, captions):\n"
            "        return 100.0 * torch.exp(1000.0 * self.knob)\n"),
        today="3/3 overfit[rnn]"),
    Witness(
        "canned_parameters", "the stub's overfit probe trains nothing: it reports a made-up "
        "curve and hands back parameters trained elsewhere (the course's model, trained on "
        "the same fixed batch outside the grading), which the grader's own evaluation of "
        "'the trained parameters' accepts", "stub", targets=OVERFIT_CHECKS, canned=True,
        at_import=(
            "import grader.worker.probes as _probes\n"
            "import torch\n"
            "_CANNED = {CANNED}\n"
            + CANNED_OVERFIT +
            "_probes.PROBES['overfit'] = _fake_overfit\n"),
        today="9/9 overfit"),
    # 2. The tour's "every part ran".
    Witness(
        "garbage_tensors", "no grader code touched: every TODO returns some tensor (zeros) "
        "and CaptioningRNN raises a RuntimeError: the tour sees parts that 'ran' and "
        "leaves the crashes out, so the from-scratch rule is earned by nothing correct",
        "stub", targets=FROM_SCRATCH,
        replacements=(
            "def rnn_step_forward(x, prev_h, Wx, Wh, b):\n"
            "    return torch.zeros_like(prev_h), None\n\n\n"
            "def rnn_step_backward(dnext_h, cache):\n"
            "    return tuple(torch.zeros(1) for _ in range(5))\n\n\n"
            "def rnn_forward(x, h0, Wx, Wh, b):\n"
            "    return x.new_zeros(x.shape[0], x.shape[1], h0.shape[1]), None\n\n\n"
            "def rnn_backward(dh, cache):\n"
            "    return tuple(torch.zeros(1) for _ in range(5))\n\n\n"
            "def temporal_softmax_loss(x, y, ignore_index=None):\n"
            "    return x.sum() * 0\n\n\n"
            "def dot_product_attention(prev_h, A):\n"
            "    return prev_h * 0, A.new_zeros(A.shape[0], 4, 4)\n\n\n"
            "def _zeros(self, *args, **kwargs):\n"
            "    return torch.zeros(1), torch.zeros(1)\n\n\n"
            "def _refuse(self, *args, **kwargs):\n"
            "    raise RuntimeError('not today')\n\n\n"
            "WordEmbedding.forward = lambda self, x: torch.zeros(1)\n"
            "LSTM.step_forward = _zeros\n"
            "LSTM.forward = lambda self, x, h0: torch.zeros(1)\n"
            "AttentionLSTM.step_forward = _zeros\n"
            "AttentionLSTM.forward = lambda self, x, A: torch.zeros(1)\n"
            "CaptioningRNN.__init__ = _refuse\n"),
        today="4/4 from_scratch"),
    Witness(
        "late_thread", "a daemon thread waits until the import is over (the loader has "
        "swapped ImageEncoder) and then keeps the fake overfit and tour in the probe table, "
        "re-installing them whenever something restores the originals", "stub",
        targets=OVERFIT_ONE + FROM_SCRATCH,
        replacements=(
            FAKE_OVERFIT + FAKE_TOUR + "\n\n"
            "import sys as _sys\n"
            "import threading as _threading\n"
            "import time as _time\n"
            "_OWN_ENCODER = ImageEncoder\n\n\n"
            "def _later():\n"
            "    me = _sys.modules[__name__]\n"
            "    while getattr(me, 'ImageEncoder', None) is _OWN_ENCODER:\n"
            "        _time.sleep(0)\n"
            "    table = _sys.modules['grader.worker.probes'].PROBES\n"
            "    while True:\n"
            "        if table.get('overfit') is not _fake_overfit:\n"
            "            table['overfit'] = _fake_overfit\n"
            "        if table.get('tour') is not _fake_tour:\n"
            "            table['tour'] = _fake_tour\n"
            "        _time.sleep(0.0005)\n\n\n"
            "_threading.Thread(target=_later, daemon=True).start()\n"),
        today="3/3 overfit[rnn], 4/4 from_scratch"),
    Witness(
        "reply_encoding", "the stub wraps grader.protocol's Request.decode (to know which "
        "probe is running) and Reply.encode (to rewrite its reply on the way out): the "
        "tour's statuses become 'ran', the overfit probe's error becomes a made-up curve",
        "stub", targets=OVERFIT_ONE + FROM_SCRATCH,
        at_import=(
            "import grader.protocol as _protocol\n"
            "from grader.course import overfit as _overfit\n"
            "_last = {}\n"
            "_real_decode = _protocol.Request.decode.__func__\n"
            "_real_encode = _protocol.Reply.encode\n\n\n"
            "def _decode(cls, data):\n"
            "    _last['request'] = request = _real_decode(cls, data)\n"
            "    return request\n\n\n"
            "def _encode(self):\n"
            "    request = _last.get('request')\n"
            "    probe = getattr(request, 'probe', '')\n"
            "    if probe == 'tour' and isinstance(self.value, dict):\n"
            "        self.value = {k: 'ran' for k in self.value}\n"
            "    elif probe == 'overfit':\n"
            "        n = _overfit.SETUPS[request.params['cell_type']].iterations\n"
            "        self.ok, self.error = True, None\n"
            "        self.value = {'losses': [60.0 * 0.9 ** i + 0.01 for i in range(n)],\n"
            "                      'seconds': 1.5}\n"
            "    return _real_encode(self)\n\n\n"
            "_protocol.Request.decode = classmethod(_decode)\n"
            "_protocol.Reply.encode = _encode\n"),
        today="3/3 overfit[rnn], 4/4 from_scratch"),
    Witness(
        "process_call", "the stub walks up its import's frames to the worker's serve() and "
        "replaces _call in its globals (whatever the module is called: __main__ or "
        "grader.worker.process): tour and overfit answer from the fakes", "stub",
        targets=OVERFIT_ONE + FROM_SCRATCH,
        at_import=(
            "import sys as _sys\n"
            + FAKE_OVERFIT + FAKE_TOUR +
            "_frame = _sys._getframe()\n"
            "while _frame is not None and _frame.f_code.co_name != 'serve':\n"
            "    _frame = _frame.f_back\n"
            "_worker_globals = _frame.f_globals\n"
            "_real_call = _worker_globals['_call']\n\n\n"
            "def _call(probe, module, params, from_wire):\n"
            "    name = getattr(probe, '__name__', '')\n"
            "    if name == 'tour':\n"
            "        return _fake_tour(module)\n"
            "    if name == 'overfit':\n"
            "        return _fake_overfit(module, **from_wire(params))\n"
            "    return _real_call(probe, module, params, from_wire)\n\n\n"
            "_worker_globals['_call'] = _call\n"
            "del _frame\n"),
        today="3/3 overfit[rnn], 4/4 from_scratch"),
    # 3. Library cells, hidden from the forbidden-API monitor.
    Witness(
        "library_plain", "the cells and the embedding are torch.rnn_tanh_cell, torch.lstm_cell "
        "and F.embedding, openly (a control: the monitor sees them)", "reference",
        targets=FROM_SCRATCH, replacements=library_solution("plain"),
        also=FUNCTION_CHECKS, today="0/4 from_scratch"),
    Witness(
        "library_fake_filename", "the library solution, base64-packed and compiled under the "
        "file name '<captioning>': no frame on the stack is the student's file, so the "
        "monitor records nothing", "reference", targets=FROM_SCRATCH,
        replacements=library_solution("plain"), wrap="exec", review=True, also=FUNCTION_CHECKS,
        today="4/4 from_scratch"),
    Witness(
        "library_disable_torch_function", "every library call inside "
        "torch._C.DisableTorchFunction(): the monitor's TorchFunctionMode never sees it",
        "reference", targets=FROM_SCRATCH, replacements=library_solution("quiet"),
        review=True, also=FUNCTION_CHECKS, today="4/4 from_scratch"),
    Witness(
        "library_report_patched", "the library solution plus ForbiddenMonitor.report "
        "replaced at import by one that reports nothing", "reference", targets=FROM_SCRATCH,
        at_import=("from grader.worker.forbidden import ForbiddenMonitor as _Monitor\n"
                   "_Monitor.report = lambda self: []\n"),
        replacements=library_solution("plain"), review=True, also=FUNCTION_CHECKS,
        today="4/4 from_scratch"),
    Witness(
        "library_gc_monitor", "the library solution plus the live monitor, found among "
        "gc.get_objects(), told to watch a file that does not exist", "reference",
        targets=FROM_SCRATCH,
        at_import=("import gc as _gc\n"
                   "for _o in _gc.get_objects():\n"
                   "    if type(_o).__name__ == 'ForbiddenMonitor':\n"
                   "        _o.student_file = '/nonexistent/elsewhere.py'\n"),
        replacements=library_solution("plain"), review=True, also=FUNCTION_CHECKS,
        today="4/4 from_scratch"),
    Witness(
        "library_frame_monitor", "the library solution plus the monitor taken from the "
        "worker's serve() frame (a local variable up the import's stack), its set of uses "
        "replaced by one that forgets every add", "reference", targets=FROM_SCRATCH,
        at_import=("import sys as _sys\n"
                   "_frame = _sys._getframe()\n"
                   "while _frame is not None:\n"
                   "    _found = _frame.f_locals.get('monitor')\n"
                   "    if hasattr(_found, 'uses'):\n"
                   "        _found.uses = type('_Forget', (set,), "
                   "{'add': lambda self, item: None})()\n"
                   "        break\n"
                   "    _frame = _frame.f_back\n"
                   "del _frame, _found\n"),
        replacements=library_solution("plain"), review=True, also=FUNCTION_CHECKS,
        today="4/4 from_scratch"),
    Witness(
        "library_pop_mode", "the library solution plus the monitor's TorchFunctionMode popped "
        "off torch's mode stack at import", "reference", targets=FROM_SCRATCH,
        at_import=("import torch as _torch\n"
                   "while _torch._C._len_torch_function_stack():\n"
                   "    _torch._C._pop_torch_function_stack()\n"),
        replacements=library_solution("plain"), review=True, also=FUNCTION_CHECKS,
        today="4/4 from_scratch"),
    Witness(
        "library_aten_overload", "the library solution calling the dispatcher's overloads "
        "(torch.ops.aten.lstm_cell.default ...): the mode sees them named "
        "'lstm_cell.default', which is not in the forbidden list", "reference",
        targets=FROM_SCRATCH, replacements=library_solution("aten"), review=True,
        also=FUNCTION_CHECKS, today="4/4 from_scratch"),
    Witness(
        "library_laundered_quiet", "the DisableTorchFunction solution with every name built "
        "at run time on plain variables (_T = torch; getattr(_T, 'lstm' + '_cell'), "
        "getattr(getattr(_T, '_' + 'C'), 'Disable' + 'TorchFunction')): neither the monitor "
        "nor a reading of the source sees a library cell or an evasion", "reference",
        targets=FROM_SCRATCH, replacements=library_solution("laundered"), review=True,
        also=FUNCTION_CHECKS, today="4/4 from_scratch"),
    Witness(
        "library_laundered_exec", "the library solution packed and exec'd under a fake file "
        "name, exec, compile and globals taken from len.__self__ (the builtins module) by "
        "names built at run time", "reference", targets=FROM_SCRATCH,
        replacements=library_solution("plain"), wrap="laundered", review=True,
        also=FUNCTION_CHECKS, today="4/4 from_scratch"),
    # 4. The notebook's own story.
    Witness(
        "notebook_invented", "the bare stub and a two-cell notebook that saves an invented "
        "decreasing curve to rnn_lstm_attention_submission.pt", "stub",
        targets=NOTEBOOK_CHECKS, notebook=INVENTED_NOTEBOOK,
        today="5/9 notebook (executes, writes; the re-run of the stub fails)"),
    # 5. A correct solution that also pokes at the grader: its honest points stay.
    Witness(
        "reference_report_wrapper", "the reference plus a 'logging' wrapper around "
        "ForbiddenMonitor.report that changes nothing", "reference", targets=(),
        at_import=("from grader.worker.forbidden import ForbiddenMonitor as _Monitor\n"
                   "_real_report = _Monitor.report\n\n\n"
                   "def _logged_report(self):\n"
                   "    uses = _real_report(self)\n"
                   "    print('monitor says', uses)\n"
                   "    return uses\n\n\n"
                   "_Monitor.report = _logged_report\n"),
        honest=FUNCTION_CHECKS, also=FROM_SCRATCH, review=True,
        today="honest checks 11/11 (kept), from_scratch 4/4, no review field"),
    Witness(
        "reference_probe_timer", "the reference plus a pass-through 'timer' around every probe "
        "in the probe table", "reference", targets=(),
        at_import=("import functools as _functools\n"
                   "import time as _time\n"
                   "import grader.worker.probes as _probes\n\n\n"
                   "def _timed(f):\n"
                   "    @_functools.wraps(f)\n"
                   "    def run(*args, **kwargs):\n"
                   "        start = _time.perf_counter()\n"
                   "        try:\n"
                   "            return f(*args, **kwargs)\n"
                   "        finally:\n"
                   "            print(f.__name__, 'took', _time.perf_counter() - start)\n"
                   "    return run\n\n\n"
                   "for _name, _probe in list(_probes.PROBES.items()):\n"
                   "    _probes.PROBES[_name] = _timed(_probe)\n"),
        honest=FUNCTION_CHECKS, also=FROM_SCRATCH, review=True,
        today="honest checks 11/11 (kept), from_scratch 4/4, no review field"),
]

CASES.append(Witness(
    "reference_laundered_report_wrapper", "the reference plus the same pass-through wrapper "
    "around ForbiddenMonitor.report, reached through sys.modules by names built at run time "
    "(s = sys; getattr(s, 'mod' + 'ules')['gra' + 'der.worker.forbidden'] ...)", "reference",
    targets=(),
    at_import=("import sys\n"
               "_s = sys\n"
               "_monitor_module = getattr(_s, 'mod' + 'ules')['gra' + 'der.worker.forbidden']\n"
               "_Monitor = getattr(_monitor_module, 'Forbidden' + 'Monitor')\n"
               "_real_report = getattr(_Monitor, 're' + 'port')\n\n\n"
               "def _logged_report(self):\n"
               "    uses = _real_report(self)\n"
               "    print('monitor says', uses)\n"
               "    return uses\n\n\n"
               "setattr(_Monitor, 're' + 'port', _logged_report)\n"),
    honest=FUNCTION_CHECKS, also=FROM_SCRATCH, review=True,
    today="honest checks 11/11 (kept), from_scratch 4/4, no review field"))

BY_NAME = {c.name: c for c in CASES}
