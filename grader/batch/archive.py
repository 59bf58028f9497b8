"""Unpack a submitted zip without letting it write anywhere but its own folder.

Entry names in a zip are untrusted paths. Every entry is checked before
anything is written: absolute paths, drive letters, ``..`` components,
symbolic links and other special files, names used twice, too many entries and
too many bytes (a zip bomb) are refused, and the error names the entry. Bytes
are counted as they are really decompressed, not as the headers claim.
"""

from __future__ import annotations

import os
import stat
import time
import zipfile
from pathlib import Path, PurePosixPath

MAX_FILES = 2_000
MAX_BYTES = 200 * 1024 * 1024
CHUNK = 1 << 20


class ArchiveError(ValueError):
    """The archive cannot be unpacked safely; the message says which entry and why."""


def _member_path(info: zipfile.ZipInfo) -> PurePosixPath | None:
    """The entry's relative path, or None for a directory entry; raises if unsafe."""
    name = info.filename.replace("\\", "/")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ArchiveError(f"{info.filename!r} is a symbolic link")
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ArchiveError(f"{info.filename!r} is not a regular file")
    path = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"{info.filename!r} is an absolute path")
    if ".." in path.parts:
        raise ArchiveError(f"{info.filename!r} points outside the archive's folder")
    if "\0" in name or not path.parts:
        raise ArchiveError(f"{info.filename!r} is not a usable file name")
    return None if info.is_dir() else path


def safe_extract(archive: str | Path, dest: str | Path, max_files: int = MAX_FILES,
                 max_bytes: int = MAX_BYTES) -> list[Path]:
    """Extract ``archive`` into ``dest`` (created); returns the files written.

    Raises ArchiveError (nothing written outside ``dest``; a refused archive
    may leave a partial ``dest``, which the caller discards).
    """
    dest = Path(dest)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"{Path(archive).name} is not a readable zip file ({exc})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > max_files:
            raise ArchiveError(f"{len(infos)} entries (at most {max_files})")
        plan: dict[str, tuple[zipfile.ZipInfo, PurePosixPath]] = {}
        for info in infos:
            path = _member_path(info)
            if path is None:
                continue
            key = str(path).lower()
            if key in plan:
                raise ArchiveError(f"{info.filename!r} appears twice")
            plan[key] = (info, path)
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        written, total = [], 0
        for info, path in plan.values():
            target = root.joinpath(*path.parts)
            if root not in target.parents:  # defence in depth; _member_path already refused
                raise ArchiveError(f"{info.filename!r} points outside the archive's folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "xb") as out:
                    while chunk := src.read(CHUNK):
                        total += len(chunk)
                        if total > max_bytes:
                            raise ArchiveError(f"more than {max_bytes:,} bytes once unpacked "
                                               f"(at {info.filename!r}): a zip bomb?")
                        out.write(chunk)
            except FileExistsError:
                raise ArchiveError(f"{info.filename!r} collides with another entry") from None
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
                raise ArchiveError(f"{info.filename!r} cannot be read ({exc})") from None
            _keep_date(target, info)
            written.append(target)
        return written


def _keep_date(target: Path, info: zipfile.ZipInfo) -> None:
    """The file's date as the zip recorded it: "the newest copy" compares real dates."""
    try:
        stamp = time.mktime((*info.date_time, 0, 0, -1))
        os.utime(target, (stamp, stamp))
    except (OverflowError, ValueError, OSError):
        pass  # an impossible date in the zip: the unpacking time stands
