"""`capgrade demo`: the reference and the generated stub on the course's public inputs.

A tour for a new user until batch grading exists: it shows that the stub is in
sync with the reference, what each contract function returns on the course's
inputs (reference) or why it cannot yet (stub), and that the reference model
really learns (a short overfit of each cell type on a tiny random batch).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import torch
from rich.console import Console
from rich.table import Table

from grader.authoring.stubgen import STUB_MARKER, stub_is_current
from grader.course import inputs as ci
from grader.course import settings
from grader.worker.loader import load_module


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        shape = "x".join(map(str, value.shape)) or "scalar"
        return f"{shape} {str(value.dtype).removeprefix('torch.')} sum={value.sum().item():.6g}"
    if isinstance(value, tuple):
        return ", ".join(_describe(v) for v in value if isinstance(v, torch.Tensor))
    return repr(value)


M = TypeVar("M", bound=torch.nn.Module)


def _with_params(module: M, inputs: dict, names: list[str]) -> M:
    with torch.no_grad():
        for name in names:
            getattr(module, name).copy_(inputs.pop(name))
    return module


def _calls(m: ModuleType) -> list[tuple[str, Callable[[], object]]]:
    """One call per contract function, on the course notebook's inputs."""

    def lstm_step():
        inp = ci.lstm_step_forward()
        lstm = _with_params(m.LSTM(4, 5).double(), inp, ["Wx", "Wh", "b"])
        return lstm.step_forward(**inp)

    def attn_lstm():
        inp = ci.attention_lstm_forward()
        cell = _with_params(m.AttentionLSTM(5, 4).double(), inp, ["Wx", "Wh", "Wattn", "b"])
        return cell(**inp)

    def embed():
        inp = ci.word_embedding()
        return _with_params(m.WordEmbedding(5, 3).double(), inp, ["W_embed"])(**inp)

    def captioning(cell_type: str) -> Callable[[], object]:
        def run():
            model = m.CaptioningRNN(settings.CAPTIONING_VOCAB, **settings.CAPTIONING_DIMS,
                                    cell_type=cell_type, image_encoder_pretrained=False,
                                    ignore_index=0)
            ci.fill_by_shape(model)
            return model(**ci.captioning_batch(cell_type))
        return run

    def rnn_backward():
        h, cache = m.rnn_forward(**ci.rnn_forward())
        return m.rnn_backward(torch.ones_like(h), cache)

    return [
        ("rnn_step_forward", lambda: m.rnn_step_forward(**ci.rnn_step_forward())[0]),
        ("rnn_forward", lambda: m.rnn_forward(**ci.rnn_forward())[0]),
        ("rnn_backward", rnn_backward),
        ("WordEmbedding", embed),
        ("temporal_softmax_loss", lambda: m.temporal_softmax_loss(**ci.temporal_softmax_loss(
            1000, 10, 10, 1.0))),
        ("LSTM.step_forward", lstm_step),
        ("dot_product_attention", lambda: m.dot_product_attention(**ci.dot_product_attention())),
        ("AttentionLSTM.forward", attn_lstm),
        ("CaptioningRNN rnn loss", captioning("rnn")),
        ("CaptioningRNN lstm loss", captioning("lstm")),
        ("CaptioningRNN attn loss", captioning("attn")),
    ]


def _outcome(call: Callable[[], object]) -> str:
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return _describe(call())
    except NotImplementedError as exc:
        if STUB_MARKER in str(exc):
            return "[yellow]not implemented yet[/]"
        return f"[red]NotImplementedError: {exc}[/]"
    except Exception as exc:  # the demo reports, it does not stop
        return f"[red]{type(exc).__name__}: {exc}[/]"


#: Learning rates that make each cell overfit the tiny batch within the demo's steps.
OVERFIT_LR = {"rnn": 1e-2, "lstm": 1e-2, "attn": 3e-3}


def _overfit(m: ModuleType, cell_type: str, steps: int = 60) -> tuple[float, float]:
    """Train on 8 random images with fixed captions; return (first, last) loss."""
    torch.manual_seed(0)
    vocab = {"<NULL>": 0, "<START>": 1, "<END>": 2, **{f"w{i}": i + 3 for i in range(7)}}
    images = torch.rand(8, 3, 112, 112)
    captions = torch.randint(3, 10, (8, 7))
    captions[:, 0], captions[:, -1] = 1, 2
    with contextlib.redirect_stdout(io.StringIO()):
        model = m.CaptioningRNN(vocab, input_dim=400, wordvec_dim=32, hidden_dim=64,
                                cell_type=cell_type, image_encoder_pretrained=False, ignore_index=0)
    model.image_encoder.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=OVERFIT_LR[cell_type])
    losses = []
    for _ in range(steps):
        loss = model(images, captions)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses[0], losses[-1]


def run_demo(reference: Path, stub: Path, console: Console | None = None) -> int:
    """Print the tour; return 0 when the reference works and the stub is in sync."""
    console = console or Console()
    in_sync = stub_is_current(reference, stub)
    console.print(f"[bold]Student stub[/] {stub}: "
                  + ("[green]in sync with the reference[/]" if in_sync
                     else "[red]STALE: run `capgrade build-stub`[/]"))

    ref = load_module(reference, "capgrade_demo_reference")
    student = load_module(stub, "capgrade_demo_stub")
    table = Table(title="Course notebook inputs: reference vs generated stub")
    table.add_column("function")
    table.add_column("reference (shape dtype checksum)")
    table.add_column("stub")
    failures = 0
    for (name, ref_call), (_, stub_call) in zip(_calls(ref), _calls(student), strict=True):
        ref_out = _outcome(ref_call)
        failures += ref_out.startswith("[red]")
        table.add_row(name, ref_out, _outcome(stub_call))
    console.print(table)

    table = Table(title="Reference overfits 8 random images (AdamW, 60 steps, CPU)")
    for column in ("cell", "first loss", "last loss"):
        table.add_column(column)
    for cell_type in ("rnn", "lstm", "attn"):
        first, last = _overfit(ref, cell_type)
        failures += not last < first / 2
        table.add_row(cell_type, f"{first:.3f}", f"{last:.3f}")
    console.print(table)

    from grader.harness.engine import run_checks
    from grader.harness.expected import hidden_values_path

    table = Table(title="capgrade check --all (public + hidden checks, sandboxed worker)")
    for column in ("submission", "score", "passed", "failed", "error", "seconds"):
        table.add_column(column)
    hidden = hidden_values_path().is_file()
    for label, path in (("reference", reference), ("stub", stub)):
        result = run_checks(path, hidden=hidden)
        counts = result.counts()
        table.add_row(label, f"{result.score:g} / {result.max_score:g}", str(counts["passed"]),
                      str(counts["failed"]), str(counts["error"]), f"{result.duration:.1f}")
        failures += label == "reference" and not result.all_passed
    console.print(table)
    return 0 if in_sync and not failures else 1
