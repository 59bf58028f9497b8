"""The home's quota: a size-capped tmpfs mounted on its folder on the host, copied back after.

Copies never follow a link and keep no setuid bits: the tree may be a student's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

from grader.sandbox.limits import TMPFS_INODES

#: The source name of a sandbox home's tmpfs on the host (``mount_home``).
HOME_SOURCE = "capgrade-home"


def _home_mounts() -> set[str]:
    """Mount points of sandbox homes' tmpfs that this process sees."""
    from grader.sandbox.cgroup import mounts

    return {point for _, point, fstype, source, _ in mounts()
            if fstype == "tmpfs" and source == HOME_SOURCE}


def mount_home(home: str | Path, size: int) -> None:
    """Mount a tmpfs of ``size`` bytes on the folder ``home`` (root), unless one is there.

    What the folder holds moves into the tmpfs (the notebook runner copies the
    submission in before the sandbox exists; a kernel restarted finds its
    files). Owner and mode are the folder's; no setuid files, no devices.
    Raises OSError when it cannot be mounted.
    """
    from grader.sandbox import launch

    home = os.path.realpath(home)
    if home in _home_mounts():
        return
    st = os.lstat(home)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(20, "not a folder", home)
    options = (f"size={size},nr_inodes={TMPFS_INODES},mode={st.st_mode & 0o7777:o},"
               f"uid={st.st_uid},gid={st.st_gid}")
    disk = os.open(home, os.O_RDONLY | os.O_DIRECTORY)  # still reachable under the mount
    try:
        present = os.listdir(disk)
        launch._mount(HOME_SOURCE, home, "tmpfs", launch.MS_NOSUID | launch.MS_NODEV, options)
        if present:
            below = f"/proc/self/fd/{disk}"
            _copy_tree(below, home, size, TMPFS_INODES)
            for name in present:
                _remove(os.path.join(below, name))
    finally:
        os.close(disk)


def release_home(home: str | Path, keep: bool = True) -> None:
    """Unmount the home's tmpfs, its contents first copied back to the folder (``keep``)."""
    from grader.sandbox import launch

    home = os.path.realpath(home)
    if home not in _home_mounts():
        return
    staging = None
    if keep:
        staging = tempfile.mkdtemp(prefix=".capgrade-home-", dir=os.path.dirname(home))
        _copy_tree(home, staging, _mounted_size(home), TMPFS_INODES)
    while home in _home_mounts():
        launch.unmount(home)
    if staging is not None:
        for name in os.listdir(staging):
            _remove(os.path.join(home, name))
            os.rename(os.path.join(staging, name), os.path.join(home, name))
        os.rmdir(staging)


def _mounted_size(path: str) -> int:
    """Bytes the file system at ``path`` holds at most."""
    info = os.statvfs(path)
    return info.f_blocks * info.f_frsize


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


#: How deep ``_copy_tree`` follows folders.
COPY_DEPTH = 32


def _copy_tree(source: str, dest: str, size: int, entries: int) -> None:
    """Regular files, folders and links (as links) under ``source`` into the folder ``dest``.

    Owners kept, modes without setuid, setgid or sticky bits; at most ``size``
    bytes of files and ``entries`` entries, ``COPY_DEPTH`` folders deep; the rest
    (and pipes, sockets, devices) left out. Never follows a link: the tree may
    be a student's.
    """
    todo = [(source, dest, 0)]
    while todo:
        src, dst, depth = todo.pop()
        try:
            listing = list(os.scandir(src))
        except OSError:
            continue
        for entry in listing:
            if entries <= 0:
                return
            entries -= 1
            target = os.path.join(dst, entry.name)
            try:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(entry.path), target)
                elif stat.S_ISDIR(st.st_mode):
                    if depth >= COPY_DEPTH:
                        continue
                    os.mkdir(target, 0o700)
                    todo.append((entry.path, target, depth + 1))
                elif stat.S_ISREG(st.st_mode) and st.st_size <= size:
                    size -= st.st_size
                    _copy_file(entry.path, target, st.st_size)
                else:
                    continue
                os.lchown(target, st.st_uid, st.st_gid)
                if not stat.S_ISLNK(st.st_mode):
                    os.chmod(target, st.st_mode & 0o777)
            except OSError:
                continue


def _copy_file(source: str, dest: str, length: int) -> None:
    src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        dst = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            while length > 0:
                chunk = memoryview(os.read(src, min(length, 1 << 20)))
                if not chunk:
                    break
                length -= len(chunk)
                while chunk:
                    chunk = chunk[os.write(dst, chunk):]
        finally:
            os.close(dst)
    finally:
        os.close(src)

