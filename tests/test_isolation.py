"""Each submission alone, and bounded: written as the submissions that would get around it.

- a submission that walks the file system for its classmates' modules (the
  class folder under /var/lib, /srv, /home or /tmp) finds none of them, nor
  anything else outside its own home, graded through the fork server and as a
  new Python;
- System V shared memory, semaphores and message queues, POSIX message queues
  and files in /tmp and /dev/shm that one submission leaves are not there for
  the next one, nor on the host after grading;
- /tmp, /var/tmp, /dev/shm and the home are size-capped: writing past the cap
  fails inside the sandbox (ENOSPC) instead of filling the machine's memory or
  disk; what the sandbox wrote in its home still reaches the grader;
- children forked through libc (past the worker's audit hook), each under the
  per-process address-space limit, together more than the sandbox's memory:
  killed by the sandbox's own cgroup; the grader is unharmed and can tell.

The tests that need root and namespaces, or a cgroup, skip (saying why) on a
host without them.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from grader import sandbox
from grader.harness.engine import run_checks
from grader.sandbox import home_tmpfs
from tests.conftest import REFERENCE

# Alone: it scans the whole machine, or times itself, so it runs after the corpus's pool.
pytestmark = pytest.mark.alone

ONLY = "rnn_step_forward_public"
MIB = 1 << 20
#: The documented default caps (``grader.sandbox.TMP_SIZE``, ``HOME_SIZE``).
TMP_SIZE, HOME_SIZE = 256 * MIB, 512 * MIB

needs_namespaces = pytest.mark.skipif(
    os.geteuid() != 0 or not sandbox.namespace_flags(),
    reason="needs root and namespaces (the sandbox's mount and IPC namespaces)")


def _no_cgroup() -> str:
    try:
        from grader.sandbox import cgroup
    except ImportError as exc:  # a grader without per-sandbox cgroups: the test must fail
        return f"FAIL: {exc}"
    folder, why = cgroup.parent()
    return "" if folder is not None else why


def _cgroup_expected() -> bool:
    """True where a sandbox gets a cgroup of its own (or the grader cannot make them at all)."""
    why = _no_cgroup()
    return not why or why.startswith("FAIL")


# -- probes run directly in a sandbox (a new Python, no torch: fast) ------------------------


def _in_sandbox(code: str, limits: sandbox.Limits | None = None, files: dict | None = None,
                timeout: float = 60) -> tuple[dict, sandbox.Sandbox, Path]:
    """Run ``code`` in a fresh check-worker sandbox; its last stdout line, as JSON.

    The sandbox is killed before this returns; its home folder is left for the
    caller to look at (and remove).
    """
    scratch = Path(tempfile.mkdtemp(prefix="capgrade-isolation-"))
    scratch.chmod(0o711)
    home = scratch / "home"
    home.mkdir()
    for name, text in (files or {}).items():
        (home / name).write_text(text)
    box = sandbox.Sandbox(home, limits=limits or sandbox.Limits(), own_user=True)
    command = box.command([sys.executable, "-c", code])
    proc = subprocess.Popen(command, cwd=home, env=box.environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        box.kill(proc.pid)  # before it is reaped: its pid is still its own
        proc.wait()
        raise
    box.kill(None)  # it has ended: what is left of the sandbox, then its cgroup and home
    lines = out.decode(errors="replace").strip().splitlines()
    assert lines, f"the probe said nothing (code {proc.returncode}): {err.decode()[-2000:]}"
    return json.loads(lines[-1]), box, scratch


FILL = """
import errno, json, os
CHUNK = b"x" * (1 << 20)
found = {"given": open(os.path.join(os.environ["HOME"], "given.txt")).read()}
with open(os.path.join(os.environ["HOME"], "result.txt"), "w") as f:
    f.write("written inside")
for where in ("/tmp", "/var/tmp", "/dev/shm", os.environ["HOME"]):
    written, error = 0, None
    try:
        for n in range(%(files)d):  # files of 4 MiB, far below the file-size limit
            with open(os.path.join(where, "fill-%%d" %% n), "wb") as f:
                for _ in range(4):
                    f.write(CHUNK)
                    f.flush()
                    written += len(CHUNK)
    except OSError as exc:
        error = errno.errorcode.get(exc.errno, str(exc.errno))
    found[where] = [written, error]
    if where != os.environ["HOME"]:
        for name in os.listdir(where):
            if name.startswith("fill-"):
                os.unlink(os.path.join(where, name))  # memory back before the next one
print(json.dumps(found))
"""


@needs_namespaces
def test_writing_past_the_caps_of_tmp_shm_and_home_fails_inside_the_sandbox(monkeypatch):
    """The RAM-backed folders and the home stop at their cap, with ENOSPC, not the host's RAM."""
    cap, home_cap = 16 * MIB, 24 * MIB
    monkeypatch.setenv("CAPGRADE_SANDBOX_TMP_SIZE", str(cap))
    monkeypatch.setenv("CAPGRADE_SANDBOX_HOME_SIZE", str(home_cap))
    found, box, scratch = _in_sandbox(FILL % {"files": 20}, sandbox.Limits(),  # <= 80 MiB each
                                      files={"given.txt": "from the grader"})
    try:
        for where in ("/tmp", "/var/tmp", "/dev/shm"):
            written, error = found[where]
            assert error == "ENOSPC" and cap - 2 * MIB <= written <= cap, (where, found)
        written, error = found[box.environment()["HOME"]]
        assert error == "ENOSPC" and home_cap - 2 * MIB <= written <= home_cap, found
        assert any(layer.startswith("home: a tmpfs of 24 MiB") for layer in box.layers)
        # What the grader put in the home was there; what the sandbox wrote is back on disk,
        # the tmpfs gone (the notebook runner reads a kernel's files after killing it).
        home = scratch / "home"
        assert found["given"] == "from the grader"
        assert (home / "result.txt").read_text() == "written inside"
        assert str(home) not in home_tmpfs._home_mounts()
        assert written <= sum(p.stat().st_size for p in home.glob("fill-*")) <= home_cap
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


CHILDREN_ALLOCATE = """
import ctypes, json, os, time
libc = ctypes.CDLL(None, use_errno=True)
children = []
for _ in range(4):
    pid = libc.fork()  # no audit hook sees this one
    if pid == 0:
        held = b"\\1" * (%(each)d << 20)  # filled: every page touched
        time.sleep(3)
        libc._exit(0)
    children.append(pid)
print(json.dumps([os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in children]))
"""


@pytest.mark.slow
@needs_namespaces
def test_children_forked_through_libc_are_bounded_by_the_sandbox_s_own_cgroup():
    """Four children of 400 MiB each, each under the 768 MiB address-space limit: together
    twice the sandbox's memory. Its own cgroup kills them; the grader can tell it did."""
    if not _cgroup_expected():
        pytest.skip(f"no cgroup for the sandbox here: {_no_cgroup()}")
    canary = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        codes, box, scratch = _in_sandbox(CHILDREN_ALLOCATE % {"each": 400},
                                          sandbox.Limits(memory=768 * MIB))
        shutil.rmtree(scratch, ignore_errors=True)
        assert -9 in codes, f"every child kept its 400 MiB: {codes}"
        from grader.sandbox import cgroup

        assert cgroup.oom_kills(box.id) >= codes.count(-9) >= 1
        # Read after the sandbox (and its group) is gone, as the harness does after close():
        assert cgroup.killed_by_own_limit(cgroup.MemoryEvents(0, 0), cgroup.events(box.id))
        assert cgroup.counters(box.id)["oom_kill"] >= 1 and cgroup.counters(box.id)["oom"] >= 1
        assert box.cgroup is not None and not box.cgroup.exists()
        assert any(layer.startswith("memory cgroup of its own") and "0.75 GiB" in layer
                   for layer in box.layers), box.layers
        assert canary.poll() is None  # the grader's side is unharmed
    finally:
        canary.kill()
        canary.wait()


# -- submissions graded for real: through the fork server, and as a new Python ----------------

#: At import: what a submission can find of its classmates and of the submission before
#: it, then the same traces left for the next one; printed by rnn_step_forward.
SNOOP = """
import ctypes as _ctypes, json as _json, os as _os

_KEY, _MARK = {key}, b"{marker}"
_libc = _ctypes.CDLL(None, use_errno=True)
_libc.shmat.restype = _ctypes.c_void_p
_libc.shmat.argtypes = [_ctypes.c_int, _ctypes.c_void_p, _ctypes.c_int]
_libc.shmdt.argtypes = [_ctypes.c_void_p]
_MQ = b"/capgrade-isolation-%d" % _KEY


def _walk():
    found, mine = [], _os.path.realpath(__file__)
    prune = {{"/proc", "/sys", "/dev", "/usr"}}
    for folder, dirs, files in _os.walk("/"):
        dirs[:] = [d for d in dirs if _os.path.join(folder, d) not in prune
                   and d not in ("site-packages", "dist-packages")]
        for name in files:
            path = _os.path.join(folder, name)
            if name.startswith("{marker}") or (
                    name == "rnn_lstm_captioning.py" and _os.path.realpath(path) != mine):
                found.append(path)
    return found


def _shm_seen():
    shm = _libc.shmget(_KEY, 0, 0)
    if shm < 0:
        return None
    at = _libc.shmat(shm, None, 0)
    if at in (None, 2**64 - 1):
        return "attached nothing"
    return _ctypes.string_at(at, len(_MARK)).decode(errors="replace")


def _leave():
    shm = _libc.shmget(_KEY, 4096, 0o1000 | 0o666)  # IPC_CREAT
    at = _libc.shmat(shm, None, 0)
    _ctypes.memmove(at, _MARK, len(_MARK))
    _libc.shmdt(at)
    _libc.semget(_KEY, 1, 0o1000 | 0o666)
    _libc.msgget(_KEY, 0o1000 | 0o666)
    queue = _libc.mq_open(_MQ, 0o100 | 0o2, 0o666, None)  # O_CREAT | O_RDWR
    for where in ("/tmp", "/dev/shm"):
        open(_os.path.join(where, "{marker}-left"), "w").write("left")
    return {{"shm": shm >= 0, "mq": queue >= 0}}


def _size(point):
    size = None
    for line in open("/proc/self/mountinfo"):
        fields = line.split()
        if fields[4] == point:
            options = line.split(" - ")[1].split()[2].split(",")
            size = next((o[5:] for o in options if o.startswith("size=")), "none")
    return size


def _memory_cgroup():
    lines = [line.rstrip("\\n").split(":", 2) for line in open("/proc/self/cgroup")]
    for _, controllers, group in lines:  # v1
        if "memory" in controllers.split(","):
            folder = "/sys/fs/cgroup/memory" + group
            return group, open(folder + "/memory.limit_in_bytes").read().strip()
    for _, controllers, group in lines:  # v2
        if controllers == "" and _os.path.exists("/sys/fs/cgroup" + group + "/memory.max"):
            return group, open("/sys/fs/cgroup" + group + "/memory.max").read().strip()
    return None, None


_SEEN = {{
    "found": _walk()[:20],
    "top": sorted(_os.listdir("/")),
    "etc": sorted(_os.listdir("/etc")),
    "var": sorted(_os.listdir("/var")),
    "shm_before": _shm_seen(),
    "sem_before": _libc.semget(_KEY, 0, 0) >= 0,
    "msg_before": _libc.msgget(_KEY, 0) >= 0,
    "mq_before": _libc.mq_open(_MQ, 0, 0, None) >= 0,
    "files_before": [p for p in ("/tmp/{marker}-left", "/dev/shm/{marker}-left")
                     if _os.path.exists(p)],
    "sizes": {{p: _size(p) for p in ("/tmp", "/var/tmp", "/dev/shm", _os.environ["HOME"])}},
    "cgroup": _memory_cgroup(),
    "id": _os.environ.get("CAPGRADE_SANDBOX_ID"),
}}
_SEEN["left"] = _leave()

_real_step = rnn_step_forward


def rnn_step_forward(*args, **kwargs):
    print("SNOOP " + _json.dumps(_SEEN))
    return _real_step(*args, **kwargs)
"""


def _seen(result) -> dict:
    assert result.status == "graded", result.message
    check = next(c for c in result.checks if c.id == ONLY)
    assert check.status == "passed", check.message
    line = next(s for s in check.output.splitlines() if s.startswith("SNOOP "))
    return json.loads(line.removeprefix("SNOOP "))


def _sysv_keys(kind: str) -> set[int]:
    """Keys of the host's System V objects of one kind (shm, sem, msg)."""
    lines = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()[1:]
    return {int(line.split()[0]) for line in lines if line.split()}


def _remove_ipc(key: int, queue: bytes) -> None:
    """Whatever a failing run left on the host."""
    for option in ("-M", "-S", "-Q"):
        subprocess.run(["ipcrm", option, str(key)], capture_output=True, check=False)
    ctypes.CDLL(None).mq_unlink(queue)


@pytest.fixture(scope="module")
def snooped():
    """Class folders under /var/lib, /srv, /home and /tmp; three of its students graded."""
    if os.geteuid() != 0 or not sandbox.namespace_flags():
        pytest.skip("needs root and namespaces")
    from grader.sandbox import forkserver

    marker = f"capgrade-classmate-{uuid.uuid4().hex[:12]}"
    key = 0x6CA00000 + int(uuid.uuid4().hex[:5], 16)
    queue = b"/capgrade-isolation-%d" % key
    classes, students = [], []
    try:
        for base in ("/var/lib", "/srv", "/home", "/tmp"):
            Path(base).mkdir(parents=True, exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix="capgrade-class-", dir=base))
            folder.chmod(0o755)
            classes.append(folder)
            for name in ("alice", "bob"):
                (folder / name).mkdir()
                shutil.copy(REFERENCE, folder / name / "rnn_lstm_captioning.py")
                (folder / name / f"{marker}-{name}.txt").write_text("a classmate's file")
            snoop = folder / "mallory"
            snoop.mkdir()
            (snoop / "rnn_lstm_captioning.py").write_text(
                REFERENCE.read_text() + SNOOP.format(key=key, marker=marker))
            students.append(snoop / "rnn_lstm_captioning.py")
        forkserver.shutdown()
        first = run_checks(students[0], only=ONLY)  # /var/lib: leaves its traces
        second = run_checks(students[1], only=ONLY)  # /srv: forked from the same server
        os.environ["CAPGRADE_FORKSERVER"] = "0"
        try:
            cold = run_checks(students[2], only=ONLY)  # /home: a new Python
        finally:
            del os.environ["CAPGRADE_FORKSERVER"]
        host = {kind: key in _sysv_keys(kind) for kind in ("shm", "sem", "msg")}
        libc = ctypes.CDLL(None)
        opened = libc.mq_open(queue, 0, 0, None)
        host["mq"] = opened >= 0
        if opened >= 0:
            libc.mq_close(opened)
        yield {"first": _seen(first), "second": _seen(second), "cold": _seen(cold),
               "results": (first, second, cold), "host": host, "classes": classes}
    finally:
        for folder in classes:
            shutil.rmtree(folder, ignore_errors=True)
        _remove_ipc(key, queue)


@pytest.mark.slow
def test_a_submission_finds_none_of_its_classmates(snooped):
    for name in ("first", "second", "cold"):
        seen = snooped[name]
        assert seen["found"] == [], (name, seen["found"])
        # /var and /etc: the allowlist only (no /var/lib, no class folders, no host secrets).
        assert "lib" not in seen["var"] and set(seen["var"]) <= {"tmp", "cache"}, seen["var"]
        assert set(seen["etc"]) <= set(sandbox.ETC_ENTRIES), seen["etc"]
        assert "passwd" in seen["etc"] and "ld.so.cache" in seen["etc"]


@pytest.mark.slow
def test_what_one_submission_leaves_in_ipc_and_tmp_the_next_never_sees(snooped):
    first, second, cold = snooped["first"], snooped["second"], snooped["cold"]
    assert first["left"] == {"shm": True, "mq": True}  # the traces were really left
    for seen in (second, cold):
        assert seen["shm_before"] is None, seen["shm_before"]
        assert not seen["sem_before"] and not seen["msg_before"] and not seen["mq_before"]
        assert seen["files_before"] == []
    # ... and none of it outlived grading on the host.
    assert snooped["host"] == {"shm": False, "sem": False, "msg": False, "mq": False}


@pytest.mark.slow
def test_tmpfs_caps_and_the_cgroup_hold_on_both_paths(snooped):
    for name in ("first", "second", "cold"):
        seen = snooped[name]
        home = next(p for p in seen["sizes"] if p.endswith("/home"))
        assert seen["sizes"]["/tmp"] == seen["sizes"]["/var/tmp"] == seen["sizes"]["/dev/shm"] \
            == f"{TMP_SIZE >> 10}k", seen["sizes"]
        assert seen["sizes"][home] == f"{HOME_SIZE >> 10}k", seen["sizes"]
        if _cgroup_expected():
            group, limit = seen["cgroup"]
            assert group is not None and group.endswith(f"/capgrade-{seen['id']}"), group
            assert int(limit) == sandbox.Limits().memory
    assert (sandbox.TMP_SIZE, sandbox.HOME_SIZE) == (TMP_SIZE, HOME_SIZE)  # as documented
    for result in snooped["results"]:
        text = " | ".join(result.isolation)
        for layer in ("IPC namespace", "UTS namespace", "home: a tmpfs of",
                      "private /tmp, /var/tmp and /dev/shm (a tmpfs of 256 MiB each)"):
            assert layer in text, text
        if _cgroup_expected():
            assert "memory cgroup of its own" in text, text


@pytest.mark.slow
def test_nothing_of_the_graded_sandboxes_is_left_on_the_host(snooped):
    """Their cgroups removed, their homes' tmpfs unmounted (the IPC: see above)."""
    from grader.sandbox import cgroup

    ids = {snooped[name]["id"] for name in ("first", "second", "cold")}
    for sandbox_id in ids:
        group = cgroup.path(sandbox_id)
        assert group is None or not group.exists()
    homes = {os.path.realpath(home) for i, home in sandbox.started() if i in ids}
    assert len(homes) == 3 and not homes & home_tmpfs._home_mounts()


#: A notebook's cells: what its home is, before and after its kernel was replaced.
HOME_SEEN = ("import json, os\n"
             "st = os.statvfs('.')\n"
             "print('HOME ' + json.dumps([st.f_blocks * st.f_frsize, sorted(os.listdir('.')),\n"
             "                            os.getcwd() == os.environ['HOME']]))\n")


@pytest.mark.slow
@needs_namespaces
def test_a_notebook_kernel_replaced_keeps_its_capped_home_and_its_files(tmp_path):
    """The kernel's home is the size-capped tmpfs before and after a replacement, holds what
    was written before it, and everything reaches the grader's folder at the end."""
    import nbformat

    from grader.notebook import runner

    cells = [HOME_SEEN + "open('before.txt', 'w').write('1')",
             "import os\nos.kill(os.getpid(), 9)",
             HOME_SEEN + "open('after.txt', 'w').write('2')"]
    path = tmp_path / "home.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c)
                                                   for c in cells]), path)
    shutil.copy(REFERENCE, tmp_path / "rnn_lstm_captioning.py")
    report = runner.run_notebook(path, out_dir=tmp_path / "out", cell_timeout=60, html=False)
    assert [c.status for c in report.cells][-3:] == ["ok", "kernel-died", "ok"], report.cells
    executed = nbformat.read(report.executed_path, as_version=4)
    seen = [json.loads(o["text"].split("HOME ", 1)[1]) for c in executed.cells
            if c.cell_type == "code" for o in c.get("outputs", []) if "HOME " in o.get("text", "")]
    assert len(seen) == 2, seen
    (size, before, cwd_ok), (size_again, after, cwd_again) = seen
    assert size == size_again == HOME_SIZE and cwd_ok and cwd_again
    assert "rnn_lstm_captioning.py" in before and {"rnn_lstm_captioning.py", "before.txt"} <= \
        set(after)
    assert {"before.txt", "after.txt"} <= set(report.produced)
    assert any(layer.startswith("home: a tmpfs of") for layer in report.isolation)
