"""Run one benchmark: ``python scripts/bench.py NAME [ARGS...]`` (``--list`` names them).

The benchmarks are the modules of scripts/bench/; see scripts/bench/__init__.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.bench import main

if __name__ == "__main__":
    sys.exit(main())
