"""``python -m scripts.bench NAME [ARGS...]``: the same as ``python scripts/bench.py``."""

import sys

from scripts.bench import main

if __name__ == "__main__":
    sys.exit(main())
