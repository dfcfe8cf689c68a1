"""Atomic writes: every file landscape writes appears whole or not at all.

The data go to a temporary file beside the target, are flushed to disk, and the file is renamed
over the target. A crash, an interruption or a full disk leaves the previous file (or none) in
place, never a torn one.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Callable

from ._errors import LandscapeError


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

    For writers that want a file name (VTK, image libraries) rather than an open file.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix or ".tmp")
        os.close(fd)
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        raise write_error(path, err) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def umask() -> int:
    """The process's file-creation mask."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_error(path, err: OSError) -> LandscapeError:
    """The one-line error for a failed write, with a hint for a full disk."""
    hint = "free some disk space or" if err.errno in (errno.ENOSPC, errno.EDQUOT) else "check the folder, or"
    return LandscapeError(f"cannot write {path}: {err.strerror or err}; {hint} choose another output path")
