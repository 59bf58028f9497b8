"""The assignment's fixed names, shared by every side of the trust boundary (plain constants).

One spelling of each: the student's module, notebook and loss file, the cell
types, and the marker the generated stub's TODOs raise with.
"""

from __future__ import annotations

MODULE_NAME = "rnn_lstm_captioning"
MODULE_FILE = f"{MODULE_NAME}.py"
NOTEBOOK_FILE = f"{MODULE_NAME}.ipynb"
LOSS_FILE = "rnn_lstm_attention_submission.pt"
CELL_TYPES = ("rnn", "lstm", "attn")
#: In the NotImplementedError every TODO of the generated stub raises.
STUB_MARKER = "[capgrade stub]"
#: The functions and methods a student writes, each with checks of its own (rubric targets);
#: a check that stops inside one of them that is not its own names it.
PARTS = ("rnn_step_forward", "rnn_forward", "rnn_step_backward", "rnn_backward",
         "RNN.__init__", "RNN.forward", "RNN.step_forward", "WordEmbedding.__init__",
         "WordEmbedding.forward", "temporal_softmax_loss", "CaptioningRNN.__init__",
         "CaptioningRNN.forward", "CaptioningRNN.sample", "LSTM.__init__", "LSTM.step_forward",
         "LSTM.forward", "dot_product_attention", "AttentionLSTM.__init__",
         "AttentionLSTM.step_forward", "AttentionLSTM.forward")
