"""Files that appear whole or not at all, and I/O failures a user can act on (standard library only).

Every file the worker hands to a user (result, PLYs, ``params.json``, contact sheet) is written under a
temporary name in its final folder, flushed to disk, then renamed over the final name: a reader, a
cancel, a full disk or ``kill -9`` can never leave half a file at a final path. The temporary name
carries the writer's process id (``.NAME.PID.RANDOM.part``), so the next write into that folder can
tell the leftovers of a killed writer (process gone) from a write still in flight in another process,
and removes only the former.

A failed write becomes :class:`~inference_server.errors.IOFailedError` (code ``io_error``): the path,
the operating system's reason and the free space left there, never a bare traceback.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .errors import IOFailedError

PART_SUFFIX = ".part"
#: ``.NAME.PID.HEX8.part`` — the name of a file being written by process PID.
_PART_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d{1,10})\.[0-9a-f]{8}\.part$")
#: Leftovers without a readable process id (older versions' names) are removed once this old.
LEGACY_PART_AGE_S = 3600.0


def free_space_text(folder: Path) -> str:
    """'12.3 MB free' for the nearest existing folder of ``folder``; '' when the OS will not say."""
    probe = Path(os.path.abspath(folder))
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return ""
    return f"{free / 1e6:.1f} MB free"


def io_failure(exc: OSError, path: Path | str, doing: str = "write") -> IOFailedError:
    """An :class:`IOFailedError` that names the path, the OS's reason and the free space."""
    target = Path(path)
    reason = exc.strerror or str(exc) or type(exc).__name__
    free = free_space_text(target.parent)
    where = f" ({free} in {target.parent})" if free else ""
    return IOFailedError(
        f"could not {doing} {target}: {reason}{where}",
        "Free some disk space or choose another output folder, then run again; nothing partial was left behind.",
    )


def _os_error_of(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc``: a full disk often surfaces as a later ValueError ('seek of closed file')."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's live process, or a pid the OS cannot even name: leave it
    return True


def remove_stale_parts(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary files of killed writers in ``folder``; returns what was removed."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(PART_SUFFIX)):
            continue
        match = _PART_NAME.match(entry.name)
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if match is not None and sys.platform != "win32":
                stale = not _pid_alive(int(match.group("pid")))
            else:
                stale = now - entry.stat(follow_symlinks=False).st_mtime > LEGACY_PART_AGE_S
            if stale:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue  # a file that vanished or cannot be removed is not this write's problem
    return removed


def _open_part(target: Path) -> tuple[int, Path]:
    while True:
        part = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}{PART_SUFFIX}")
        try:
            return os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644), part
        except FileExistsError:
            continue


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> Path:
    """Create ``path`` from what ``write`` writes into a binary file; all of it or nothing.

    Creates the folder, removes stale ``.part`` files of killed writers there, writes a temporary file,
    flushes it to disk and renames it into place. OS failures (full disk, permissions, read-only file
    system) raise :class:`IOFailedError`; the temporary file is always removed.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise io_failure(exc, target, "create the folder for") from None
    remove_stale_parts(target.parent)
    try:
        fd, part = _open_part(target)
    except OSError as exc:
        raise io_failure(exc, target) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(part, target)
    except BaseException as exc:
        part.unlink(missing_ok=True)
        cause = _os_error_of(exc)
        if cause is not None and not isinstance(exc, KeyboardInterrupt | SystemExit):
            raise io_failure(cause, target) from None
        raise
    return target


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    def write(handle: BinaryIO) -> None:
        handle.write(data)

    return atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
