"""The one way a student's module is imported: as ``rnn_lstm_captioning``, with our encoder.

Used by the worker (every check), the notebook (``grader.notebook.support``) and
the grader's own tours, so what a module sees never depends on who imported it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from grader.contract import MODULE_NAME


def load_module(path: str | Path, name: str) -> ModuleType:
    """Import ``path`` as module ``name`` (registered in sys.modules for pickling/dataclasses)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such module file: {path}")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def load_submission(path: str | Path, name: str = MODULE_NAME,
                    allow_imagenet: bool | None = None) -> ModuleType:
    """Import a student's module and give it the grader's ImageEncoder.

    The provided ImageEncoder downloads ImageNet weights; the grader's copy has
    the same interface and never downloads. ``allow_imagenet=False`` (grading)
    also ignores weights a machine happens to have cached, so verdicts do not
    depend on the machine; None leaves the setting as it is.
    """
    from grader.course import encoder

    module = load_module(path, name)
    if allow_imagenet is not None:
        encoder.state().allow_imagenet = allow_imagenet
    vars(module)["ImageEncoder"] = encoder.ImageEncoder  # the module's global name
    return module
