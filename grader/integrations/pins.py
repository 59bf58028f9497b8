"""The torch and torchvision that CI installs: those the expected values were built with.

The public expected values record the torch of ``capgrade build`` in their
``__meta__``. A CI runner that installs whatever torch is newest computes the
student's numbers with different kernels than the ones the expected values
came from, and a later torch can change defaults or remove APIs the stub
uses; pinning both packages keeps CI on the versions the grader was checked
against. Setup scripts (GitHub Classroom's workflow, Gradescope's
``setup.sh``) build their install line with :func:`pinned_install`.

torchvision is not recorded, so it is derived from torch's version: each
torch minor release ships with one torchvision release, 2.N.P with 0.(N+15).P
(2.1.0/0.16.0, 2.2.2/0.17.2, ..., 2.9.1/0.24.1, 2.14.1/0.29.1), except torch
2.0.x, whose torchvision numbers are one patch ahead (0.15.0 was never
published). A ``torchvision`` entry in the metadata, if a later build records
one, wins over the derivation.
"""

from __future__ import annotations

import re
from pathlib import Path

#: CPU wheels: CI runners have no GPU, and the default CUDA build is gigabytes.
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
#: torch releases whose torchvision does not follow 0.(N+15).P.
TORCHVISION_EXCEPTIONS = {"2.0.0": "0.15.1", "2.0.1": "0.15.2"}
#: The first torch minor release the 0.(N+15).P rule holds for.
RULE_FROM = (2, 1)


class PinError(ValueError):
    """The expected values name no torch release that a torchvision can be matched to."""


def recorded_versions(expected: Path | None = None) -> dict[str, str]:
    """The versions recorded in the expected values' metadata (torch, and torchvision if any).

    Reads the safetensors header only through ``grader.protocol``: no torch import.
    """
    from grader.harness import expected as ex

    meta = ex.load(expected or ex.PUBLIC_PATH).get(ex.META, {})
    if not isinstance(meta.get("torch"), str):
        raise PinError(f"{expected or ex.PUBLIC_PATH} records no torch version: "
                       "run `capgrade build`")
    return {k: meta[k].split("+")[0] for k in ("torch", "torchvision")
            if isinstance(meta.get(k), str)}


def torchvision_for(torch: str) -> str:
    """The torchvision release made for ``torch`` (a plain X.Y.Z version, local suffix stripped)."""
    torch = torch.split("+", 1)[0]
    if torch in TORCHVISION_EXCEPTIONS:
        return TORCHVISION_EXCEPTIONS[torch]
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", torch)
    if not match or match[1] != "2" or (int(match[1]), int(match[2])) < RULE_FROM:
        raise PinError(f"no known torchvision for torch {torch}: record torchvision in the "
                       "expected values' metadata or extend grader/integrations/pins.py")
    return f"0.{int(match[2]) + 15}.{match[3]}"


def pins(expected: Path | None = None) -> list[str]:
    """``["torch==X", "torchvision==Y"]`` for the shipped (or given) expected values."""
    versions = recorded_versions(expected)
    torchvision = versions.get("torchvision") or torchvision_for(versions["torch"])
    return [f"torch=={versions['torch']}", f"torchvision=={torchvision}"]


def pinned_install(index_url: str = CPU_INDEX, pip: str = "python -m pip",
                   expected: Path | None = None) -> str:
    """The one shell line that installs the pinned torch and torchvision from ``index_url``.

    ``pip`` is the command that runs pip (e.g. ``/opt/capgrade/bin/pip`` in a setup script).
    """
    return (f"{pip} install --disable-pip-version-check {' '.join(pins(expected))} "
            f"--index-url {index_url}")
