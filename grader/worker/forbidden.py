"""Runtime detection of library versions of what students must build themselves.

A text search is easy to dodge (``getattr(torch, "lstm" + "_cell")``) and
flags dead code; this watches what actually runs. A ``TorchFunctionMode`` sees
every torch-level call, including the C builtins behind ``nn.LSTM`` and
``F.embedding``, and module constructors are wrapped too. A use is recorded
only when the student's file is on the call stack, so the grader's own code
(its encoder, its checks) never counts.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from types import FrameType

from torch import nn
from torch.overrides import TorchFunctionMode

#: torch function names (as ``func.__name__``) that implement what students write.
FORBIDDEN_FUNCTIONS = {
    "rnn_tanh_cell": "torch.rnn_tanh_cell",
    "rnn_relu_cell": "torch.rnn_relu_cell",
    "lstm_cell": "torch.lstm_cell",
    "gru_cell": "torch.gru_cell",
    "rnn_tanh": "torch.rnn_tanh (nn.RNN)",
    "rnn_relu": "torch.rnn_relu (nn.RNN)",
    "lstm": "torch.lstm (nn.LSTM)",
    "gru": "torch.gru (nn.GRU)",
    "_thnn_fused_lstm_cell": "fused LSTM cell",
    "_thnn_fused_gru_cell": "fused GRU cell",
    "embedding": "F.embedding / nn.Embedding",
    "embedding_bag": "F.embedding_bag / nn.EmbeddingBag",
    "scaled_dot_product_attention": "F.scaled_dot_product_attention",
    "multi_head_attention_forward": "F.multi_head_attention_forward (nn.MultiheadAttention)",
    "_native_multi_head_attention": "native multi-head attention",
}

#: Module classes whose construction from student code counts as a use.
FORBIDDEN_MODULES: dict[type[nn.Module], str] = {
    nn.RNNBase: "nn.RNN / nn.LSTM / nn.GRU",
    nn.RNNCellBase: "nn.RNNCell / nn.LSTMCell / nn.GRUCell",
    nn.MultiheadAttention: "nn.MultiheadAttention",
    nn.Embedding: "nn.Embedding",
    nn.EmbeddingBag: "nn.EmbeddingBag",
}


@dataclass(frozen=True)
class Use:
    api: str
    line: int
    function: str


class ForbiddenMonitor(TorchFunctionMode):
    """Records forbidden calls made (directly or not) from the student's file."""

    def __init__(self, student_file: str):
        super().__init__()
        self.student_file = student_file
        self.uses: set[Use] = set()
        self._originals: dict[type, object] = {}

    def _student_frame(self):
        frame: FrameType | None = sys._getframe(2)
        while frame is not None:
            if frame.f_code.co_filename == self.student_file:
                return frame
            frame = frame.f_back
        return None

    def _record(self, api: str) -> None:
        frame = self._student_frame()
        if frame is not None:
            self.uses.add(Use(api, frame.f_lineno, frame.f_code.co_name))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in FORBIDDEN_FUNCTIONS:
            self._record(FORBIDDEN_FUNCTIONS[name])
        return func(*args, **(kwargs or {}))

    def install(self) -> None:
        """Enter the mode for the rest of the process and wrap the module constructors."""
        self.__enter__()
        for cls, api in FORBIDDEN_MODULES.items():
            original = cls.__init__
            self._originals[cls] = original

            @functools.wraps(original)
            def init(obj, *args, _original=original, _api=api, **kwargs):
                self._record(_api)
                _original(obj, *args, **kwargs)

            # Replacing the constructor is the point: a typed assignment cannot say it.
            cls.__init__ = init  # type: ignore[method-assign,assignment]

    def report(self) -> list[dict]:
        return [
            {"api": u.api, "line": u.line, "function": u.function}
            for u in sorted(self.uses, key=lambda u: (u.line, u.api))
        ]
