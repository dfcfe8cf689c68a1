"""Atomic writes of rendered files: a temporary name beside the target, then a rename.

A ``.vtm`` is two things, an index file and a folder of block files, and no rename replaces both at
once. So the new blocks go into the folder under new names (``x/x_0.TAG.vts``) beside the old ones,
the new index is written beside the old, read back whole, and renamed over it: that rename is the one
step that switches from the old render to the new. Only then are the old blocks removed. Whenever the
writer stops (an error, a full disk, a SIGKILL), the index and the folder read as the old render or as
the new one; what a killed writer left (new blocks not yet indexed, or old blocks not yet removed) is
recorded, and the next write removes it (:func:`landscape.io.remove_stale`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import secrets
import shutil
import stat
import warnings
from pathlib import Path

from .._errors import LandscapeError
from ..io import CLEANUPS, forget, remove_stale, temporary, umask, write_error


def write_multiblock(path, blocks) -> Path:
    """Write a ``.vtm`` (an index file plus a folder of block files) so that it always reads whole.

    A folder of the index's name that is not the block folder of an earlier ``.vtm`` is never touched:
    the write is refused instead.

    Raises
    ------
    LandscapeError
        When the folder beside ``path`` holds other files, or the write fails (the old render is kept).
    """
    path = Path(path)
    folder = path.with_suffix("")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale()  # a killed writer's blocks first: they are not files of the user's
    except OSError as err:
        raise write_error(path, err) from None
    if folder.exists() and not _is_block_folder(path, folder):
        raise LandscapeError(f"-o {path}: the folder {folder}/ beside it holds other files, and a .vtm writes its "
                             f"blocks there; choose another name")
    work = index = None
    try:
        work = temporary(path.parent, path.stem, "", kind="folder")
        with quiet_vtk():
            blocks.save(work / path.name)
        written = sorted(p.name for p in (work / path.stem).iterdir()) if (work / path.stem).is_dir() else []
        tag = secrets.token_hex(4)
        renamed = {name: _tagged(name, tag) for name in written}
        text = _retarget((work / path.name).read_bytes(), tag)
        details = {"index": os.path.abspath(path), "folder": os.path.abspath(folder), "new": sorted(renamed.values()),
                   "old": sorted(p.name for p in folder.iterdir()) if folder.is_dir() else [],
                   "made": not folder.exists(), "digest": hashlib.sha256(text).hexdigest()}
        # recorded before the folder changes: a kill from here on is finished or undone by the next write
        index = temporary(path.parent, path.stem, path.suffix, kind="blocks", details=details)
        if details["made"]:
            folder.mkdir(mode=0o777 & ~umask())
        for name, new in renamed.items():
            _sync(work / path.stem / name, 0o666)
            os.replace(work / path.stem / name, folder / new)
        _sync_folder(folder)
        with open(index, "wb") as fh:
            fh.write(text)
        _sync(index, 0o666)
        _check_blocks(blocks, index)
        os.replace(index, path)  # the one step from the old render to the new
        _sync_folder(path.parent)
        undo_blocks(index, details)  # the old blocks
    except BaseException as err:  # Ctrl-C too: the new blocks must not stay beside the old
        if index is not None:
            with contextlib.suppress(OSError):
                undo_blocks(index, details)
        if isinstance(err, OSError):
            raise write_error(path, err) from None
        raise
    finally:
        if index is not None:
            forget(index)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
            forget(work)
    return path


def undo_blocks(index: Path, details: dict) -> None:
    """Finish or undo a ``.vtm`` write stopped at any step: remove the blocks its index does not name.

    When the index in place is the one the write made (its digest), the old blocks go; otherwise the
    write's new blocks go, with its unrenamed index and the folder it made if that is empty. Only regular
    files named in ``details`` are ever removed.
    """
    path, folder = Path(details["index"]), Path(details["folder"])
    try:
        current = path.read_bytes()
    except OSError:
        current = b""
    named = _named(current)
    done = hashlib.sha256(current).hexdigest() == details["digest"]
    for name in set(details["old" if done else "new"]) - named:
        _remove_regular(folder / name)
    if not done:
        _remove_regular(index)
        if details["made"]:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty


CLEANUPS["blocks"] = undo_blocks


def _tagged(name: str, tag: str) -> str:
    stem, dot, ext = name.rpartition(".")
    return f"{stem}.{tag}.{ext}" if dot else f"{name}.{tag}"


def _retarget(index: bytes, tag: str) -> bytes:
    """The index text with every block file renamed as :func:`_tagged` renames it on disk."""
    def rename(m):
        return b'file="' + os.fsencode(_tagged(os.fsdecode(m[1]), tag)) + b'"'
    return re.sub(rb'file="([^"]+)"', rename, index)


def _named(index: bytes) -> set[str]:
    """The names of the block files an index refers to."""
    return {Path(os.fsdecode(f)).name for f in re.findall(rb'file="([^"]+)"', index)}


def _remove_regular(file: Path) -> None:
    with contextlib.suppress(OSError):
        if stat.S_ISREG(os.lstat(file).st_mode):
            os.unlink(file)


def _sync(file: Path, mode: int) -> None:
    os.chmod(file, mode & ~umask())
    with open(file, "rb+") as fh:
        os.fsync(fh.fileno())


def _sync_folder(folder: Path) -> None:
    """Make renames in ``folder`` durable (where the platform allows opening a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _is_block_folder(index: Path, folder: Path) -> bool:
    """Whether ``folder`` holds only the VTK block files that the ``.vtm`` file ``index`` names."""
    if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
        return True  # empty: nothing to lose
    if not folder.is_dir() or folder.is_symlink() or not index.is_file():
        return False
    try:
        named = _named(index.read_bytes())
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
    """Silence VTK's and pyvista's reports while a file is written or read back to check it: on a full
    disk VTK prints dozens of lines and goes on, and the caller reports the failure once, in one line."""
    import pyvista
    from vtkmodules.vtkCommonCore import vtkObject

    previous, shown = logging.root.manager.disable, vtkObject.GetGlobalWarningDisplay()
    logging.disable(logging.CRITICAL)
    vtkObject.GlobalWarningDisplayOff()
    try:
        with warnings.catch_warnings(), pyvista.vtk_verbosity("off"):
            warnings.simplefilter("ignore")
            yield
    finally:
        vtkObject.SetGlobalWarningDisplay(shown)
        logging.disable(previous)
