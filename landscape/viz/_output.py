"""Atomic writes of rendered files: a temporary name beside the target, then a rename."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

from .._errors import LandscapeError
from ..io import remove_stale, umask, write_error


def write_multiblock(path, blocks) -> Path:
    """Write a ``.vtm`` (an index file plus a folder of block files) so that neither is ever half written.

    The blocks go to a temporary folder first; the finished folder replaces the old one, then the
    index is renamed into place. A folder of the index's name that is not the block folder of an
    earlier ``.vtm`` is never touched: the write is refused instead.
    """
    path = Path(path)
    folder = path.with_suffix("")
    if folder.exists() and not _is_block_folder(path, folder):
        raise LandscapeError(f"-o {path}: the folder {folder}/ beside it holds other files, and a .vtm writes its "
                             f"blocks there; choose another name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(path)
        work = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.stem}.{os.getpid()}."))
    except OSError as err:
        raise write_error(path, err) from None
    try:
        blocks.save(work / path.name)
        _check_blocks(blocks, work / path.name)
        os.chmod(work / path.name, 0o666 & ~umask())
        if (work / path.stem).exists():
            os.chmod(work / path.stem, 0o777 & ~umask())
        if folder.exists():
            os.replace(folder, work / "old")  # removed with the work folder once the new one is in place
        if (work / path.stem).exists():
            os.replace(work / path.stem, folder)
        os.replace(work / path.name, path)
    except OSError as err:
        raise write_error(path, err) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path


def _is_block_folder(index: Path, folder: Path) -> bool:
    """Whether ``folder`` holds only the VTK block files that the ``.vtm`` file ``index`` names."""
    if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
        return True  # empty: nothing to lose
    if not folder.is_dir() or folder.is_symlink() or not index.is_file():
        return False
    try:
        named = {Path(f).name for f in re.findall(r'file="([^"]+)"', index.read_text(errors="replace"))}
        present = {p.name for p in folder.iterdir()}
    except OSError:
        return False
    return present <= named and all((folder / n).is_file() for n in present)


def _check_blocks(blocks, index: Path) -> None:
    """Read a written ``.vtm`` back: VTK's writers report a full disk on stderr and go on, so a set of files
    that does not read back whole is an error before anything replaces the old one."""
    import pyvista

    def points(data) -> int:
        return sum(points(b) for b in data if b is not None) if isinstance(data, pyvista.MultiBlock) else data.n_points

    try:
        with quiet_vtk():
            whole = points(pyvista.read(str(index))) == points(blocks)
    except Exception:  # noqa: BLE001 - any failure to read back is an incomplete file
        whole = False
    if not whole:
        raise OSError(errno.EIO, "the VTK writer left incomplete files (is the disk full?)")


@contextlib.contextmanager
def quiet_vtk():
    """Silence VTK's and pyvista's reports while a file is read back to check it: a broken file is
    expected there, and its error is reported once, in one line, by the caller."""
    import pyvista

    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), pyvista.vtk_verbosity("off"):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)
