"""Atomic writes of rendered files: a temporary name beside the target, then a rename."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .._io import umask, write_error


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
        raise write_error(path, err) from None
    try:
        blocks.save(work / path.name)
        os.chmod(work / path.name, 0o666 & ~umask())
        if (work / path.stem).exists():
            os.chmod(work / path.stem, 0o777 & ~umask())
        if folder.exists():
            shutil.rmtree(folder)
        if (work / path.stem).exists():
            os.replace(work / path.stem, folder)
        os.replace(work / path.name, path)
    except OSError as err:
        raise write_error(path, err) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path
