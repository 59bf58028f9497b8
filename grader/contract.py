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
