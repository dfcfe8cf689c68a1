"""Atomic writes: every file landscape writes appears whole or not at all.

The data go to a temporary file beside the target, are flushed to disk, and the file is renamed
over the target. A crash, an interruption or a full disk leaves the previous file (or none) in
place, never a torn one. The temporary file's name carries the writer's process id, so one left by
a killed run is removed the next time the same output is written.

What the target may be: a regular file or a new name (replaced atomically); a symbolic link (the
file it points to is replaced, the link is kept); a device, FIFO or socket such as ``/dev/stdout``
(written through, never replaced by a regular file); a folder is refused.
"""

from __future__ import annotations

import errno
import glob
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Callable

from ._errors import LandscapeError


def read_text(path, what: str = "file") -> str:
    """The UTF-8 text of ``path``; a file that is not UTF-8 is a one-line error naming it and the byte."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise LandscapeError(f"{path}: this {what} is not UTF-8 ({err.reason} at byte {err.start}); "
                             "save it as UTF-8") from None


def atomic_write(path, write: Callable) -> Path:
    """Call ``write(binary_file)`` on a temporary file beside ``path``, fsync, then rename over ``path``.

    Raises
    ------
    LandscapeError
        When the folder cannot be written or the disk is full; the old file is left intact.
    """

    def through_handle(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())

    return atomic_write_file(path, through_handle)


def atomic_write_bytes(path, data: bytes | str) -> Path:
    """Write ``data`` (text is UTF-8 encoded) atomically to ``path``."""
    data = data.encode() if isinstance(data, str) else data
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_file(path, write: Callable) -> Path:
    """Call ``write(tmp_path)`` on a temporary path with the same suffix, then rename it over ``path``.

    For writers that want a file name (VTK, image libraries) rather than an open file. A special
    file (device, FIFO) is written through: the writer gets a temporary file whose bytes are then
    copied into it.
    """
    path = Path(path)
    target = _target(path)
    tmp = None
    special = target is not None and target.exists() and not target.is_file()
    try:
        final = path if target is None else target
        folder = Path(tempfile.gettempdir()) if special else final.parent  # never a temporary file in /dev
        folder.mkdir(parents=True, exist_ok=True)
        if not special:
            remove_stale(final)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{final.stem}.{os.getpid()}.", suffix=path.suffix or ".tmp")
        os.close(fd)
        write(Path(tmp))
        if special:  # a device or FIFO: copy the bytes through it
            with open(tmp, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600 files; give the usual permissions
            os.replace(tmp, final)
            tmp = None
    except OSError as err:
        raise write_error(path, err) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _target(path: Path) -> Path | None:
    """Where the bytes for ``path`` go when it is not a plain new or regular file: a link's target, a special
    file itself (None for a regular file or a new name); a folder is an error."""
    if path.is_symlink():
        return path.resolve()
    if path.is_dir():
        raise LandscapeError(f"cannot write {path}: it is a folder; give a file name")
    if path.exists() and not path.is_file():
        mode = path.stat().st_mode
        if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISBLK(mode):
            return path  # a device: the temporary file goes to a writable folder, then its bytes through it
    return None


def remove_stale(path: Path) -> None:
    """Remove temporary files of ``path`` left by writers that no longer run (a SIGKILL, a power cut)."""
    if not path.parent.is_dir():
        return
    for old in path.parent.glob(f".{glob.escape(path.stem)}.*"):
        pid = old.name[len(path.stem) + 2:].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            try:
                old.unlink() if old.is_file() else shutil.rmtree(old)
            except OSError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def umask() -> int:
    """The process's file-creation mask."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_error(path, err: OSError) -> LandscapeError:
    """The one-line error for a failed write, with a hint for a full disk."""
    hint = "free some disk space or" if err.errno in (errno.ENOSPC, errno.EDQUOT) else "check the folder, or"
    return LandscapeError(f"cannot write {path}: {err.strerror or err}; {hint} choose another output path")
