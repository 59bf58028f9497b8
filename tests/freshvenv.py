"""A fresh virtual environment to install a built wheel into, offline.

The environment is new and empty (``venv --without-pip``); the heavy
dependencies (torch, pip, ...) are borrowed read-only from the project's venv
through a ``.pth`` line, so nothing is downloaded and pip sees them as already
satisfied. Only the wheel under test is installed into it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path


def make(path: Path) -> Path:
    """Create the environment; returns its ``bin`` folder."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return path / "bin"


def environment(bin_dir: Path, **extra: str) -> dict[str, str]:
    """The variables a shell in that environment has; pip never reaches an index."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PATH=f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", VIRTUAL_ENV=str(bin_dir.parent),
               PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.update(extra)
    return env
