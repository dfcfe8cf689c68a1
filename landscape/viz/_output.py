"""Atomic writes of rendered files: a temporary name beside the target, then a rename."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from .._errors import LandscapeError


def write_atomic(path, writer) -> Path:
    """Call ``writer(tmp)`` on a temporary file with the same suffix beside ``path``, then rename it over ``path``.

    A failed or interrupted write leaves the previous file (or none), never a torn one.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
        os.close(fd)
    except OSError as err:
        raise _error(path, err) from None
    try:
        writer(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        raise _error(path, err) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_multiblock(path, blocks) -> Path:
    """Write a ``.vtm`` (an index file plus a folder of block files) so that neither is ever half written.

    The blocks go to a temporary folder first; the finished folder replaces the old one, then the
    index is renamed into place.
    """
    path = Path(path)
    folder = path.with_suffix("")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.stem}."))
    except OSError as err:
        raise _error(path, err) from None
    try:
        blocks.save(work / path.name)
        os.chmod(work / path.name, 0o666 & ~_umask())
        if (work / path.stem).exists():
            os.chmod(work / path.stem, 0o777 & ~_umask())
        if folder.exists():
            shutil.rmtree(folder)
        if (work / path.stem).exists():
            os.replace(work / path.stem, folder)
        os.replace(work / path.name, path)
    except OSError as err:
        raise _error(path, err) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _error(path, err):
    hint = "free some disk space or" if err.errno in (errno.ENOSPC, errno.EDQUOT) else "check the folder, or"
    return LandscapeError(f"cannot write {path}: {err.strerror or err}; {hint} choose another output path")
