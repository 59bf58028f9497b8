"""Write notebooks/rnn_lstm_captioning.ipynb (``--check``: only compare).

The cells and the code are grader/authoring/notebook.py's; ``capgrade build`` writes it too.
"""

import sys

from grader.authoring.notebook import build, main, sources  # noqa: F401  (tests load build, sources)

if __name__ == "__main__":
    sys.exit(main())
