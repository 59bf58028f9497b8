"""The mount namespace's allowlist: which folders a sandbox sees, and how the rest is covered."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

#: The empty tmpfs that covers a folder: only mount points in it, nothing to write.
COVER_OPTIONS = "size=1m,nr_inodes=4096"
#: Top-level folders a sandbox keeps seeing whole, read-only (the operating system).
SYSTEM_DIRS = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "dev", "proc", "sys"}
#: Folders a sandbox gets a fresh private tmpfs of (``Limits.tmp_size``), its home bound back.
PRIVATE_TMP = ("/tmp", "/var/tmp", "/dev/shm")
#: What a sandbox sees of /etc (whatever of it exists): what the dynamic loader, the
#: user and host lookups, locale, time zone, file types and fonts read, a system
#: Python's own configuration, the alternatives that system commands and libraries
#: resolve through, Jupyter's and IPython's system-wide settings. Measured (strace of
#: a worker importing torch and of a kernel with matplotlib): ld.so.cache,
#: nsswitch.conf, passwd, localtime, mime.types, fonts.
ETC_ENTRIES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "ld.so.preload",
               "passwd", "group", "nsswitch.conf", "hosts", "host.conf", "gai.conf",
               "protocols", "services", "localtime", "timezone", "locale.alias", "locale.conf",
               "mime.types", "fonts", "alternatives", "os-release", "mtab",
               "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}",
               "jupyter", "ipython")
#: What a sandbox sees of /var: the system's font cache (matplotlib's fc-list reads it;
#: without it fonts are scanned again). Python and torch read nothing there.
VAR_ENTRIES = ("cache/fontconfig",)


def _outermost(paths: Iterable[Path]) -> list[str]:
    """The paths, without those inside another one of them."""
    unique = sorted({Path(p).resolve() for p in paths})
    return [str(p) for p in unique if not any(q in p.parents for q in unique)]


def _private_tmp() -> list[Path]:
    return [Path(t).resolve() for t in PRIVATE_TMP]


def _allowed_system_entries() -> list[Path]:
    """The ``ETC_ENTRIES`` and ``VAR_ENTRIES`` this host has (links kept as links)."""
    found = []
    for top, names in (("/etc", ETC_ENTRIES), ("/var", VAR_ENTRIES)):
        for name in names:
            entry = Path(top).resolve() / name
            if entry.exists() or entry.is_symlink():
                found.append(entry)
    return found


def view_plan(keep: Iterable[Path]) -> tuple[list[str], list[str], list[str]]:
    """How the mount namespace shows only the allowlist: the system, Python, the venv, grader/.

    Returns (``--reveal`` specs: every top-level folder but ``SYSTEM_DIRS`` and
    /tmp covered by an empty tmpfs with the ``keep`` paths (and the allowed
    entries of /etc and /var) inside it bound back; top-level files to blank;
    the ``keep`` paths inside a ``PRIVATE_TMP`` folder, bound back into its
    private tmpfs).
    """
    keep = [Path(p).resolve() for p in keep]
    private = _private_tmp()

    def in_private(p: Path) -> bool:
        return any(t == p or t in p.parents for t in private)

    allowed = _allowed_system_entries()
    reveals, files = [], []
    for top in sorted(Path("/").iterdir()):
        if top.name in SYSTEM_DIRS or top.is_symlink() or top in private:
            continue
        if top.is_dir():
            if top in keep:
                continue
            inside = _outermost(p for p in keep if top in p.parents and not in_private(p))
            inside += [str(p) for p in allowed if top in p.parents and not any(
                Path(q) == p or Path(q) in p.parents for q in inside)]
            reveals.append(":".join([str(top), *inside]))
        elif top.is_file():
            files.append(str(top))
    return reveals, files, _outermost(p for p in keep if in_private(p))

