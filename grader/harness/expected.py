"""TRUSTED side: expected values, recorded from the reference by `capgrade build`.

Public values ship in ``grader/expected/public.safetensors``; hidden ones live in
``reference/expected/hidden.safetensors`` (instructors only). Both are encoded
like the worker's replies (``grader.protocol``: safetensors arrays plus JSON, no
pickle, no torch needed to read them), with a ``__meta__`` entry (generator
version, torch version, seeds, checksums of the reference and of the code that
defines the checks) that the staleness test compares.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parent.parent
PUBLIC_PATH = PACKAGE / "expected" / "public.safetensors"
HIDDEN_PATH = Path("reference") / "expected" / "hidden.safetensors"
META = "__meta__"
GENERATOR_VERSION = 2  # 2: safetensors + JSON instead of torch.save

#: Files whose content determines the expected values (besides the reference).
DEFINING_FILES = ["course/inputs.py", "course/encoder.py", "worker/probes.py",
                  "worker/function_probes.py", "worker/matching.py", "worker/probe_support.py",
                  "worker/values.py", "checks/inputs.py", "course/synthetic.py",
                  "course/data/encoder_synthetic.pt"]
#: The misconceptions' mutations, beside the reference (instructors only).
MUTATIONS = "misconceptions.toml"


def hidden_values_path(given: Path | None = None) -> Path:
    """Where the hidden values are: ``given`` when named, else the installed checkout's.

    The one rule every caller uses (``check --all``, ``grade``, ``build``, ``gradescope``,
    ``demo``, ``GradingRequest.hidden_values``). An editable install (instructors) has
    the checkout beside the package, so the values are found from any working
    directory; otherwise ./reference/expected/.
    """
    if given is not None:
        return Path(given)
    beside = PACKAGE.parent / HIDDEN_PATH
    return beside if beside.is_file() else Path.cwd() / HIDDEN_PATH


def default_hidden_path() -> Path:
    """``hidden_values_path()`` with nothing named (kept for its callers)."""
    return hidden_values_path()


class ExpectedMissing(FileNotFoundError):
    """Hidden expected values were asked for but are not on this machine."""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def catalogue_checksum() -> str:
    """Checksum of the catalogue and of the code that builds its inputs."""
    digest = hashlib.sha256()
    files = [PACKAGE / f for f in DEFINING_FILES] + sorted((PACKAGE / "checks").glob("test_*.py"))
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def metadata(reference: Path, seeds: dict[str, list[int]]) -> dict[str, Any]:
    return {
        "generator_version": GENERATOR_VERSION,
        "torch": _torch_version(),
        "reference_sha256": sha256(reference),
        "catalogue_sha256": catalogue_checksum(),
        "mutations_sha256": _mutations_checksum(reference),
        "seeds": {k: list(v) for k, v in sorted(seeds.items())},
    }


def _mutations_checksum(reference: Path) -> str:
    mutations = Path(reference).parent / MUTATIONS
    return sha256(mutations) if mutations.is_file() else ""


def _torch_version() -> str:
    """The torch the values were computed with (the worker's; read without importing it)."""
    import importlib.metadata

    return importlib.metadata.version("torch").split("+")[0]


def load(path: Path) -> dict[str, Any]:
    from grader import protocol  # numpy: not for the command line's start

    if not path.is_file():
        raise ExpectedMissing(str(path))
    try:
        return protocol.decode(path.read_bytes())
    except protocol.ProtocolError as exc:
        raise ExpectedMissing(f"{path} is not a capgrade expected-values file ({exc}); "
                              "run `capgrade build`") from None


def save(values: dict[str, Any], meta: dict[str, Any], path: Path) -> None:
    from grader import protocol

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(protocol.encode({META: meta, **dict(sorted(values.items()))}))


def staleness(path: Path, reference: Path) -> list[str]:
    """Why the stored values no longer match the reference and catalogue (empty: fresh)."""
    meta = load(path).get(META, {})
    reasons = []
    if meta.get("generator_version") != GENERATOR_VERSION:
        reasons.append("generator version changed")
    if meta.get("reference_sha256") != sha256(reference):
        reasons.append("the reference solution changed")
    if meta.get("catalogue_sha256") != catalogue_checksum():
        reasons.append("the check catalogue or its inputs changed")
    mutations = _mutations_checksum(reference)  # only where the instructors' file is
    if mutations and meta.get("mutations_sha256") != mutations:
        reasons.append("the misconceptions' mutations changed")
    return reasons
