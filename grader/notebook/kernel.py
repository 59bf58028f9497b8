"""The sandboxed kernel a notebook runs in, and the nbclient client that caps its output."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
from jupyter_core.utils import run_sync
from nbclient import NotebookClient

from grader import sandbox


class _CappedClient(NotebookClient):
    """An nbclient client that keeps at most a cap of each cell's (and the run's) output."""

    def __init__(self, nb: nbformat.NotebookNode, cell_cap: int, total_cap: int, **kw: Any):
        super().__init__(nb, **kw)
        self.cell_cap, self.total_cap = cell_cap, total_cap
        self.total_chars = 0
        self.chars: dict[int, int] = {}
        self.truncated: set[int] = set()
        self.replies: dict[int, dict] = {}
        self.on_cell_executed = self._record_reply

    def _record_reply(self, cell: Any, cell_index: int, execute_reply: dict) -> None:
        self.replies[cell_index] = execute_reply

    def output(self, outs: list, msg: dict, display_id: str | None, cell_index: int) -> Any:
        size = _message_size(msg)
        used = self.chars.get(cell_index, 0)
        self.chars[cell_index] = used + size
        if used + size > self.cell_cap or self.total_chars + size > self.total_cap:
            if cell_index not in self.truncated:
                self.truncated.add(cell_index)
                outs.append(nbformat.v4.new_output(
                    "stream", name="stderr",
                    text=f"\n[capgrade: output beyond {self.cell_cap:,} characters per cell "
                         f"(or {self.total_cap:,} per notebook) was dropped]\n"))
            return None
        self.total_chars += size
        return super().output(outs, msg, display_id, cell_index)


def _message_size(msg: dict) -> int:
    content = msg.get("content", {})
    if "text" in content:
        return len(content["text"])
    if "data" in content:
        return sum(len(v) if isinstance(v, str) else len(json.dumps(v))
                   for v in content["data"].values())
    if "traceback" in content:
        return sum(len(line) for line in content["traceback"])
    return 0


def _kernel_spec_dir(root: Path, box: sandbox.Sandbox, conn: Path) -> Path:
    """A kernelspec for this very interpreter, started inside ``box``'s sandbox."""
    spec = root / "kernels" / "capgrade"
    spec.mkdir(parents=True)
    argv = box.command([sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                       chown=[conn])
    (spec / "kernel.json").write_text(json.dumps({
        "argv": argv, "display_name": "capgrade sandbox", "language": "python"}))
    return spec.parent


class _Kernel:
    """Starts, replaces and finally kills the sandboxed kernel behind a client."""

    def __init__(self, client: _CappedClient, box: sandbox.Sandbox, scratch: Path):
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_client.manager import AsyncKernelManager

        self.client, self.box, self.work = client, box, box.home
        # The connection file and the unix sockets live where the sandbox's user may go.
        self.conn = scratch / "conn"
        self.conn.mkdir()
        specs = _kernel_spec_dir(scratch, box, self.conn)
        self.log = scratch / "kernel.log"  # the kernel's own stderr: why it died
        self.ksm = KernelSpecManager(kernel_dirs=[str(specs)], ensure_native_kernel=False)
        self.manager_class = AsyncKernelManager
        self.pids: list[int] = []

    def start(self) -> None:
        c = self.client
        c.km = self.manager_class(kernel_name="capgrade", kernel_spec_manager=self.ksm,
                                  transport="ipc",  # unix sockets: no TCP port to reach
                                  ip=str(self.conn / "ipc"),
                                  connection_file=str(self.conn / "kernel.json"))
        with open(self.log, "ab") as log:
            c.start_new_kernel(cwd=str(self.work), stdout=log, stderr=log,
                               env=self.box.environment(IPYTHONDIR=str(self.work / ".ipython")))
        pid = getattr(c.km.provisioner, "pid", None)
        if pid is not None:
            self.pids.append(pid)
        c.start_new_kernel_client()

    def stop(self) -> None:
        c = self.client
        try:
            if c.km is not None:
                if c.kc is None:
                    c.kc = c.km.client()  # _cleanup_kernel only releases km when kc is set
                c._cleanup_kernel()
        except Exception:
            pass
        finally:
            c.km = c.kc = None
            for pid in self.pids:
                self.box.kill(pid)

    def replace(self) -> None:
        self.stop()
        self.start()

    def answers(self, within: float) -> bool:
        """Interrupt the kernel; True if it is idle again (state kept) within ``within`` s."""
        # nbclient's are the async manager and client (typed as the sync ones); None when
        # the kernel is gone: the AttributeError below answers False.
        km: Any = self.client.km
        kc: Any = self.client.kc
        try:
            run_sync(km.interrupt_kernel)()
            msg_id = kc.kernel_info()
            deadline = time.monotonic() + within
            while time.monotonic() < deadline:
                reply = run_sync(kc.get_shell_msg)(timeout=max(0.1, deadline - time.monotonic()))
                if reply["parent_header"].get("msg_id") == msg_id:
                    return True
        except Exception:
            return False
        return False
