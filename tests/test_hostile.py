"""The hostile-submission corpus (``tests/hostile.py``) against the sandbox.

For every case: the attack is contained, the honest checks keep the verdict
of the unattacked base, no process or temp dir is left behind, and it is over
in bounded time. Plus the two attacks that come as files (a malicious pickle
in the loss file, a zip whose entries escape their folder), and the degraded
sandbox of a laptop without namespaces or root: fewer layers, same verdicts.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import time
import uuid
import zipfile
from pathlib import Path

import pytest
import torch

from grader import sandbox
from grader.batch.archive import ArchiveError, safe_extract
from grader.course.lossfile import FILENAME
from grader.harness.engine import run_checks
from tests.conftest import REFERENCE, STUB
from tests.hostile import ATTACKED, BY_NAME, CASES, HONEST, ONLY, Hostile

pytestmark = [pytest.mark.slow, pytest.mark.alone]  # grades whole submissions in sandboxed workers;
# alone: it scans the whole machine, or times itself, so it runs after the corpus's pool

ROOT = Path(__file__).resolve().parent.parent
BOUND = 120.0  # seconds any one case may take, start to finish


def sandbox_pids(ids: list[str]) -> list[int]:
    """Processes still carrying one of these sandbox ids (all a sandbox starts carries it)."""
    markers = {f"{sandbox.SANDBOX_ID_VAR}={i}".encode() for i in ids}
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if markers & set(f.read().split(b"\0")):
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def any_sandboxed_pids() -> set[int]:
    """Every process carrying any sandbox id, whoever started it (pool processes too).

    Fork servers carry a placeholder id: the one this test process keeps for its
    own gradings is not a leftover; any other (a pool process's) would be.
    """
    from grader.sandbox import forkserver

    own = forkserver.holder().server.proc.pid if forkserver.running() else None
    marker = f"{sandbox.SANDBOX_ID_VAR}=".encode()
    found = set()
    for entry in filter(str.isdigit, os.listdir("/proc")):
        if own is not None and int(entry) == own:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if any(v.startswith(marker) for v in f.read().split(b"\0")):
                    found.add(int(entry))
        except OSError:
            pass
    return found


def leftover_dirs(since: int) -> list[Path]:
    """The temp dirs of the sandboxes created after ``since`` that still exist."""
    return [home.parent for _, home in sandbox.started()[since:] if home.parent.exists()]


def wait_for_no_sandbox(since: int, seconds: float = 10.0) -> list[int]:
    """Wait until no process of the sandboxes created after ``since`` is left."""
    ids = [i for i, _ in sandbox.started()[since:]]
    deadline = time.monotonic() + seconds
    while (left := sandbox_pids(ids)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def active_layers(tmp_path: Path) -> str:
    box = sandbox.Sandbox(tmp_path)
    box.command(["true"])
    return " | ".join(box.layers)


@pytest.fixture(scope="module")
def base_verdicts(tmp_path_factory) -> dict[str, dict[str, str]]:
    verdicts = {}
    for name, source in (("reference", REFERENCE), ("stub", STUB)):
        folder = tmp_path_factory.mktemp(name)
        shutil.copy(source, folder / "rnn_lstm_captioning.py")
        result = run_checks(folder / "rnn_lstm_captioning.py", only=ONLY)
        verdicts[name] = {c.id: c.status for c in result.checks}
    assert set(verdicts["reference"].values()) == {"passed"}
    assert set(verdicts["stub"].values()) == {"failed"}
    return verdicts


@pytest.fixture
def listener():
    """A local TCP server that records whether anyone connected."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.1)
    yield server
    server.close()


def _accepted(server: socket.socket) -> bool:
    try:
        conn, _ = server.accept()
    except (TimeoutError, OSError):
        return False
    conn.close()
    return True


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_submission_is_contained(case: Hostile, tmp_path, base_verdicts, listener):
    layers = active_layers(tmp_path)
    if case.needs and case.needs not in layers:
        pytest.skip(f"this host's sandbox lacks the {case.needs!r} layer: {layers}")
    marker_name = f"capgrade-fake-{uuid.uuid4().hex}.json"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    grader_files = {p: _sha(p) for p in (ROOT / "grader").glob("*.py")}
    started = len(sandbox.started())
    path = case.write(tmp_path, port=str(listener.getsockname()[1]),
                      secret_dir=str(REFERENCE.parent), out_dir=str(out_dir),
                      marker_name=marker_name)
    start = time.monotonic()
    result = run_checks(path, only=ONLY, timeout=case.timeout)
    elapsed = time.monotonic() - start
    checks = {c.id: c for c in result.checks}

    # Bounded time, nothing left behind.
    assert elapsed < BOUND, f"{case.name} took {elapsed:.0f} s"
    assert wait_for_no_sandbox(started) == [], f"{case.name} left processes behind"
    assert leftover_dirs(started) == [], f"{case.name} left temp dirs behind"
    assert {p: _sha(p) for p in grader_files} == grader_files, "grader files changed"

    # The honest verdicts are the base's; the attacked check is what the case says.
    base = base_verdicts[case.base]
    assert sorted(checks) == sorted(base)
    if case.import_error:
        assert result.status == "import-error"
        assert all(c.status == "failed" for c in result.checks)
    else:
        assert result.status == "graded", result.message
        for cid in HONEST:
            assert checks[cid].status == base[cid], (cid, checks[cid].message)
        expected = case.attacked_status or base[ATTACKED]
        assert checks[ATTACKED].status == expected, checks[ATTACKED].message
    CONTAINED[case.name](result, checks, tmp_path, out_dir, marker_name, listener)


def _comparisons(result, checks, *_):
    assert not torch.allclose(torch.zeros(1), torch.ones(1))  # the harness's torch is intact


def _replies(result, checks, *_):
    message = checks[ATTACKED].message
    assert "Liar" not in message or "tensor" in message.lower()


def _exit_at_import(result, *_):
    assert "importing the submission failed" in result.message
    assert "exit" in result.message.lower()


def _exit_in_function(result, checks, *_):
    assert "exit" in checks[ATTACKED].message.lower()


def _timed_out(result, checks, *_):
    assert "timed out" in checks[ATTACKED].message


def _memory(result, checks, *_):
    message = checks[ATTACKED].message.lower()
    assert "alloc" in message or "memory" in message, message


def _flood(result, checks, *_):
    assert checks[ATTACKED].status == "passed"
    assert 0 < len(checks[ATTACKED].output) <= 4_000


def _secrets(result, checks, *_):
    assert "FOUND" not in checks[ATTACKED].output, checks[ATTACKED].output
    assert "nothing found" in checks[ATTACKED].output


def _internals(result, checks, *_):
    pass  # the grader files' hashes are compared for every case


def _fake_files(result, checks, tmp_path, out_dir, marker_name, _):
    for folder in (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"), ROOT, out_dir,
                   Path.home()):
        assert not (folder / marker_name).exists(), folder
    assert not (ROOT / "results.json").exists()


def _network(result, checks, tmp_path, out_dir, marker_name, server):
    assert not _accepted(server), "the submission reached the test's server"
    assert "CONNECTED" not in checks[ATTACKED].output
    assert "refused 127.0.0.1" in checks[ATTACKED].output


def _kill(result, checks, *_):
    assert "worker" in checks[ATTACKED].message  # its broker died; the harness is fine


def _background(result, checks, *_):
    pass  # no leftover sandbox processes is asserted for every case


CONTAINED = {
    "patch_comparisons_at_import": _comparisons,
    "always_equal_tensor_subclass": _replies,
    "always_equal_object": _replies,
    "sys_exit_at_import": _exit_at_import,
    "os_exit_at_import": _exit_at_import,
    "sys_exit_in_function": _exit_in_function,
    "os_exit_in_function": _exit_in_function,
    "infinite_loop": _timed_out,
    "fork_bomb": _timed_out,
    "allocate_30_gb": _memory,
    "print_100_mb": _flood,
    "read_secrets": _secrets,
    "import_grader_internals": _internals,
    "fake_result_files": _fake_files,
    "network_connection": _network,
    "kill_parent": _kill,
    "background_process": _background,
}


def test_the_corpus_is_complete():
    assert len(CASES) >= 15 and set(CONTAINED) == set(BY_NAME)


def test_this_machine_records_its_layers(tmp_path):
    """Every result names the layers actually applied; the CI host has all of them."""
    result = run_checks(REFERENCE, only="rnn_step_forward_public")
    assert result.isolation and result.isolation[:4] == sandbox.BASE_LAYERS[:4]
    if os.geteuid() == 0 and sandbox.namespace_flags() and sandbox.unprivileged_ids():
        text = " | ".join(result.isolation)
        for layer in ("address space", "network namespace", "mount namespace",
                      "PID namespace", "unprivileged user", "private /tmp"):
            assert layer in text


# -- attacks that come as files ---------------------------------------------------------------


def test_malicious_pickle_in_the_loss_file_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"rnn_losses": Payload(), "lstm_losses": [1.0], "attn_losses": [1.0]},
               tmp_path / FILENAME)
    shutil.copy(REFERENCE, tmp_path / "rnn_lstm_captioning.py")
    result = run_checks(tmp_path / "rnn_lstm_captioning.py",
                        only="submission_file or rnn_step_forward_public")
    checks = {c.id: c for c in result.checks}
    assert checks["rnn_step_forward_public"].status == "passed"
    for cid in ("submission_file_format", "submission_file_losses"):
        assert checks[cid].status == "failed" and "system" in checks[cid].message
    assert not marker.exists()


def _zip(path: Path, entries: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, target)
    return path


@pytest.mark.parametrize("name, links, expected", [
    ("../escaped.py", None, "points outside"),
    ("sub/../../escaped.py", None, "points outside"),
    ("/tmp/capgrade-absolute-escape.py", None, "absolute path"),
    ("C:/escaped.py", None, "absolute path"),
    ("link.py", {"link.py": "/etc/passwd"}, "symbolic link"),
])
def test_a_zip_whose_entries_escape_is_refused(tmp_path, name, links, expected):
    dest = tmp_path / "unpacked"
    entries = {"rnn_lstm_captioning.py": b"x = 1\n"}
    if links is None:
        entries[name] = b"import os\n"
    archive = _zip(tmp_path / "submission.zip", entries, links)
    with pytest.raises(ArchiveError, match=expected):
        safe_extract(archive, dest)
    assert not (tmp_path / "escaped.py").exists()
    assert not Path("/tmp/capgrade-absolute-escape.py").exists()
    assert not dest.exists() or not any(dest.rglob("*"))


def test_a_zip_bomb_and_a_broken_zip_are_refused(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("rnn_lstm_captioning.py", b"\0" * (3 * 1024 * 1024))
    with pytest.raises(ArchiveError, match="zip bomb"):
        safe_extract(archive, tmp_path / "out", max_bytes=1024 * 1024)
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ArchiveError, match="not a readable zip"):
        safe_extract(tmp_path / "broken.zip", tmp_path / "out2")


def test_a_good_zip_unpacks(tmp_path):
    archive = _zip(tmp_path / "ok.zip", {"student/rnn_lstm_captioning.py": b"x = 1\n",
                                         "student/notes.txt": b"hi"})
    written = safe_extract(archive, tmp_path / "out")
    assert sorted(p.name for p in written) == ["notes.txt", "rnn_lstm_captioning.py"]
    assert (tmp_path / "out" / "student" / "rnn_lstm_captioning.py").read_bytes() == b"x = 1\n"


# -- a laptop: no root, no namespaces ---------------------------------------------------------


@pytest.fixture
def degraded(monkeypatch):
    """The sandbox as on a laptop: no namespaces, no user switch."""
    monkeypatch.setenv("CAPGRADE_SANDBOX_NAMESPACES", "0")
    monkeypatch.setenv("CAPGRADE_SANDBOX_USER", "")
    sandbox.namespace_flags.cache_clear()
    sandbox.unprivileged_ids.cache_clear()
    yield
    monkeypatch.undo()
    sandbox.namespace_flags.cache_clear()
    sandbox.unprivileged_ids.cache_clear()


@pytest.mark.parametrize("name", ["print_100_mb", "os_exit_in_function", "network_connection",
                                  "patch_comparisons_at_import", "background_process"])
def test_without_namespaces_the_verdicts_are_the_same(name, tmp_path, base_verdicts, listener,
                                                      degraded):
    case = BY_NAME[name]
    started = len(sandbox.started())
    path = case.write(tmp_path, port=str(listener.getsockname()[1]))
    result = run_checks(path, only=ONLY, timeout=case.timeout)
    checks = {c.id: c for c in result.checks}
    for cid in HONEST:
        assert checks[cid].status == base_verdicts[case.base][cid]
    assert checks[ATTACKED].status == (case.attacked_status or base_verdicts[case.base][ATTACKED])
    text = " | ".join(result.isolation)
    assert "no namespaces on this host" in text and "namespace (" not in text
    assert wait_for_no_sandbox(started) == []
    if name == "network_connection":
        assert not _accepted(listener)
        assert "PermissionError" in checks[ATTACKED].output  # the audit hook said no


def test_without_the_mount_namespace_secrets_are_exposed_and_the_result_says_so(
        tmp_path, degraded):
    """The read_secrets case is not vacuous: with the layer gone it finds the reference,
    and the result carries the warning an instructor must see."""
    case = BY_NAME["read_secrets"]
    path = case.write(tmp_path, secret_dir=str(REFERENCE.parent))
    result = run_checks(path, only=ATTACKED)
    (check,) = result.checks
    assert "FOUND" in check.output
    assert "WARNING: secrets readable from the sandbox" in " | ".join(result.isolation)
