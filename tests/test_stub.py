"""The student stub: generated from the reference, in sync, and recognisably unfinished."""

from __future__ import annotations

import contextlib
import io
import re
import shutil

import pytest
import torch

from grader.authoring.stubgen import STUB_MARKER, StubError, find_regions, make_stub
from grader.cli import main as cli_main
from grader.course import inputs as ci
from grader.course import settings
from grader.worker.loader import load_module

from .conftest import REFERENCE, STUB


@pytest.fixture(scope="module")
def stub():
    return load_module(STUB, "capgrade_stub_under_test")


def test_committed_stub_is_in_sync_with_the_reference():
    expected = make_stub(REFERENCE.read_text())
    assert STUB.read_text() == expected, "student/ is stale: run `capgrade build-stub`"


def test_no_solution_line_reaches_the_stub():
    lines = REFERENCE.read_text().splitlines()
    regions = find_regions(lines)
    inside = {i for r in regions for i in range(r.start, r.end + 1)}
    provided = {line.strip() for i, line in enumerate(lines) if i not in inside}
    stub_lines = {line.strip() for line in STUB.read_text().splitlines()}
    leaked = [
        line.strip()
        for i in sorted(inside)
        if (line := lines[i]).strip() and not line.strip().startswith("#")
        and line.strip() in stub_lines and line.strip() not in provided
    ]
    assert not leaked
    assert "BEGIN SOLUTION" not in STUB.read_text()
    assert "Reference solution (instructor only)" not in STUB.read_text()


def _todo_calls(m):
    """One call into every TODO region of the contract, on the course's inputs."""
    lstm, attn_lstm = m.LSTM(4, 5).double(), m.AttentionLSTM(5, 4).double()
    step, seq = ci.lstm_step_forward(), ci.attention_lstm_forward()
    attn_step = ci.attention_lstm_step_forward()
    h = torch.zeros(2, 3, 5, dtype=torch.float64)
    return {
        "rnn_step_forward": lambda: m.rnn_step_forward(**ci.rnn_step_forward()),
        "rnn_step_backward": lambda: m.rnn_step_backward(h[:, 0], None),
        "rnn_forward": lambda: m.rnn_forward(**ci.rnn_forward()),
        "rnn_backward": lambda: m.rnn_backward(h, None),
        "RNN.forward": lambda: m.RNN(4, 5).double()(ci.rnn_forward()["x"], h[:, 0]),
        "WordEmbedding.forward": lambda: m.WordEmbedding(5, 3)(ci.word_embedding()["x"]),
        "temporal_softmax_loss": lambda: m.temporal_softmax_loss(
            **ci.temporal_softmax_loss(10, 2, 5, 1.0)),
        "LSTM.step_forward": lambda: lstm.step_forward(step["x"], step["prev_h"], step["prev_c"]),
        "LSTM.forward": lambda: lstm(ci.lstm_forward()["x"][..., :4], step["prev_h"][:2]),
        "dot_product_attention": lambda: m.dot_product_attention(**ci.dot_product_attention()),
        "AttentionLSTM.step_forward": lambda: m.AttentionLSTM(4, 5).double().step_forward(
            attn_step["x"], attn_step["prev_h"], attn_step["prev_c"], attn_step["attn"]),
        "AttentionLSTM.forward": lambda: attn_lstm(seq["x"], seq["A"]),
        "CaptioningRNN.__init__": lambda: m.CaptioningRNN(
            settings.CAPTIONING_VOCAB, **settings.CAPTIONING_DIMS, image_encoder_pretrained=False),
    }


def test_every_todo_raises_the_recognisable_not_implemented(stub):
    for name, call in _todo_calls(stub).items():
        with pytest.raises(NotImplementedError) as info, contextlib.redirect_stdout(io.StringIO()):
            call()
        assert STUB_MARKER in str(info.value), name
        # The message names the function whose TODO was hit (RNN.forward delegates to rnn_forward).
        assert str(info.value).endswith(name if name != "RNN.forward" else "rnn_forward"), name


def test_the_reference_answers_every_call_the_stub_refuses(ref):
    with contextlib.redirect_stdout(io.StringIO()):
        calls = _todo_calls(ref)
        for name in ("rnn_step_backward", "rnn_backward"):  # need a real cache
            calls.pop(name)
        for name, call in calls.items():
            assert call() is not None, name


def test_provided_code_is_kept_in_the_stub(stub, ref):
    torch.manual_seed(0)
    assert stub.RNN(3, 4).Wx.shape == (3, 4)
    assert stub.LSTM(3, 4).Wh.shape == (4, 16)
    assert {n for n, _ in stub.AttentionLSTM(3, 4).named_parameters()} == {
        "Wx", "Wh", "Wattn", "b"}
    assert stub.WordEmbedding(7, 2).W_embed.shape == (7, 2)
    encoder = stub.ImageEncoder(pretrained=False, verbose=False)
    assert encoder.out_channels == 400
    assert encoder(torch.zeros(1, 3, 112, 112)).shape == (1, 400, 4, 4)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        stub.hello_rnn_lstm_captioning()
    assert "Hello" in out.getvalue()
    with pytest.raises(ValueError):
        stub.CaptioningRNN(settings.CAPTIONING_VOCAB, cell_type="gru",
                           image_encoder_pretrained=False)


def test_todo_block_layout():
    source = (
        "def f(x):\n"
        "    '''Doc.'''\n"
        "    # BEGIN SOLUTION: y, z\n"
        "    # Task: double x,\n"
        "    # then halve it.\n"
        "    y = 2 * x\n"
        "    z = y / 2\n"
        "    # END SOLUTION\n"
        "    return y, z\n"
        "\n"
        "\n"
        "# BEGIN SOLUTION\n"
        "def helper():\n"
        "    return 1\n"
        "# END SOLUTION\n"
    )
    stub = make_stub(source)
    assert "    y, z = None, None\n" in stub
    assert "    # TODO: double x,\n    # then halve it.\n" in stub
    assert f'raise NotImplementedError("{STUB_MARKER} TODO: f")' in stub
    assert "y = 2 * x" not in stub and "helper" not in stub
    assert stub.rstrip().endswith("return y, z")
    namespace: dict = {}
    exec(compile(stub, "<stub>", "exec"), namespace)
    with pytest.raises(NotImplementedError):
        namespace["f"](1)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def f():\n    # BEGIN SOLUTION\n    pass\n", "line 2: BEGIN SOLUTION is never closed"),
        ("def f():\n    # END SOLUTION\n", "line 2: END SOLUTION without a BEGIN"),
        ("def f():\n    # BEGIN SOLUTION\n    # BEGIN SOLUTION\n", "line 3: BEGIN SOLUTION inside"),
        ("def f():\n    # BEGIN SOLUTION: 1x\n    # END SOLUTION\n", "'1x' is not a variable"),
        ("if True:\n    # BEGIN SOLUTION\n    x = 1\n    # END SOLUTION\n", "inside a function"),
    ],
)
def test_malformed_markers_are_rejected_with_the_line(source, message):
    with pytest.raises(StubError, match=re.escape(message)):
        make_stub(source)


def test_cli_build_stub_check_and_write(tmp_path, capsys):
    reference = tmp_path / "ref.py"
    shutil.copy(REFERENCE, reference)
    out = tmp_path / "student" / "rnn_lstm_captioning.py"
    args = ["build-stub", "--reference", str(reference), "--out", str(out)]
    assert cli_main([*args, "--check"]) == 1  # missing counts as stale
    assert cli_main(args) == 0 and out.read_text() == STUB.read_text()
    assert cli_main([*args, "--check"]) == 0
    reference.write_text(reference.read_text().replace("# END SOLUTION", "", 1))
    assert cli_main(args) == 2
    assert "BEGIN SOLUTION inside the region" in capsys.readouterr().err
    assert cli_main(["build-stub", "--reference", str(tmp_path / "nope.py")]) == 2
