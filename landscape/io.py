"""Atomic writes: every file landscape writes appears whole or not at all.

The data go to a temporary file beside the target, are flushed to disk, and the file is renamed
over the target. A crash, an interruption or a full disk leaves the previous file (or none) in
place, never a torn one.

Temporary names are ``.STEM.PID.TOKEN.SUFFIX`` with a random TOKEN, and every one is recorded,
before it is created, in ``$XDG_CACHE_HOME/landscape/temporaries`` (``~/.cache/...``). A temporary
left by a killed run is removed by the next write on the same machine, and only such a one: a file
is removed when a record of a writer that no longer runs names it exactly, and only when it is a
regular file. A user's files, whatever their names, are never touched. Where the record cannot be
written (no writable cache folder) the write goes on and a killed run's temporary stays.

What the target may be: a regular file or a new name (replaced atomically); a symbolic link (the
file it points to is replaced, the link is kept); a device, FIFO or socket such as ``/dev/stdout``
(written through, never replaced by a regular file); a folder is refused.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import socket
import stat
import tempfile
from pathlib import Path
from typing import Callable

from ._errors import LandscapeError

#: The largest text input read (a study file, a table, a merge file): more is refused, not read into memory.
MAX_TEXT_BYTES = 64 * 2**20


def read_text(path, what: str = "file", *, limit: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of ``path``, at most ``limit`` bytes.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist (callers name the input in their own words).
    LandscapeError
        A folder, a file (or device, such as ``/dev/zero``) larger than ``limit``, or text that is not UTF-8.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except IsADirectoryError:
        raise LandscapeError(f"{path}: a folder, not a {what}; name the {what} itself") from None
    if len(data) > limit:
        raise LandscapeError(f"{path}: larger than {limit / 2**20:g} MiB, too large for a {what}; "
                             f"name the {what} itself") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise LandscapeError(f"{path}: this {what} is not UTF-8 ({err.reason} at byte {err.start}); "
                             "save it as UTF-8") from None


def atomic_write(path, write: Callable) -> Path:
    """Call ``write(binary_file)`` on a temporary file beside ``path``, fsync, then rename over ``path``.

    A writer that turns the file's ``OSError`` into another exception (``torch.save``'s zip writer raises
    ``RuntimeError: [enforce fail at inline_container.cc]`` on a full disk) still gives the one-line error.

    Raises
    ------
    LandscapeError
        When the folder cannot be written or the disk is full; the old file is left intact.
    """

    def through_handle(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            recorder = _Recording(fh)
            try:
                write(recorder)
            except Exception:
                if recorder.error is not None:
                    raise recorder.error from None
                raise
            fh.flush()
            os.fsync(fh.fileno())

    return atomic_write_file(path, through_handle)


class _Recording:
    """A binary file whose first failed write is kept, for writers that replace the ``OSError``."""

    def __init__(self, fh):
        self._fh, self.error = fh, None

    def write(self, data):
        try:
            return self._fh.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name):
        return getattr(self._fh, name)


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
        remove_stale()
        tmp = temporary(folder, final.stem, path.suffix or ".tmp")
        write(tmp)
        if special:  # a device or FIFO: copy the bytes through it
            with open(tmp, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~umask())  # new temporaries are 0600; give the usual permissions
            os.replace(tmp, final)
    except OSError as err:
        raise write_error(path, err) from None
    finally:
        if tmp is not None:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            forget(tmp)
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


# ---------------------------------------------------------------- recorded temporaries
#: This process's temporaries: path -> its record.
_MINE: dict[Path, Path] = {}


def temporary(folder, stem: str, suffix: str, *, kind: str = "file", details: dict | None = None) -> Path:
    """A new, empty temporary file (``kind="file"``, mode 0600) or folder (``kind="folder"``) in ``folder``.

    Its name, ``.STEM.PID.TOKEN.SUFFIX`` with a random TOKEN, is recorded before it is created, so that
    :func:`remove_stale` can remove it if this process dies before :func:`forget` is called. ``details``
    go into the record (for a kind registered in :data:`CLEANUPS`).
    """
    folder = Path(folder)
    while True:
        token = secrets.token_hex(6)
        tmp = folder / f".{stem}.{os.getpid()}.{token}{suffix}"
        records = _records()
        if records is not None:
            _MINE[tmp] = records / f"{_host()}.{os.getpid()}.{token}"
            _record(tmp, kind, details or {})
        try:
            if kind == "folder":
                os.mkdir(tmp, 0o700)
            else:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            return tmp
        except FileExistsError:  # pragma: no cover - a 48-bit token met by chance
            forget(tmp)
        except OSError:
            forget(tmp)
            raise


def forget(tmp) -> None:
    """Drop the record of a temporary that is gone (renamed into place or removed)."""
    record = _MINE.pop(Path(tmp), None)
    if record is not None:
        try:
            os.unlink(record)
        except OSError:
            pass


def remove_stale() -> None:
    """Remove the recorded temporaries of writers on this machine that no longer run (a SIGKILL, a power cut).

    Only what a record names is touched: a file if it is still a regular file, a folder of kind ``"folder"``
    with what is in it; other kinds are undone by their entry in :data:`CLEANUPS`.
    """
    folder = _records()
    try:
        names = os.listdir(folder) if folder is not None else []
    except OSError:
        return
    for name in names:
        match = re.fullmatch(r"([A-Za-z0-9_-]+)\.(\d+)\.[0-9a-f]+(\.part)?", name)
        if match is None or match[1] != _host() or int(match[2]) == os.getpid() or _alive(int(match[2])):
            continue
        record = None if match[3] else _read_record(folder / name)
        cleanup = CLEANUPS.get(record["kind"]) if record is not None else None
        if record is not None and cleanup is None:
            continue  # a kind whose module this process has not imported: left for one that has
        try:
            if cleanup is not None:
                cleanup(Path(os.fsdecode(bytes.fromhex(record["path"]))), record["details"])
            os.unlink(folder / name)
        except (OSError, ValueError, KeyError, TypeError):
            pass


def _remove_file(tmp: Path, details: dict) -> None:
    if os.path.lexists(tmp) and stat.S_ISREG(os.lstat(tmp).st_mode):
        os.unlink(tmp)


def _remove_folder(tmp: Path, details: dict) -> None:
    if os.path.lexists(tmp) and stat.S_ISDIR(os.lstat(tmp).st_mode):
        shutil.rmtree(tmp)


#: How :func:`remove_stale` undoes a dead writer's temporary, by the kind given to :func:`temporary`.
CLEANUPS: dict[str, Callable[[Path, dict], None]] = {"file": _remove_file, "folder": _remove_folder}


def _records() -> Path | None:
    """The folder of records (made if missing), or None where it cannot be made."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = Path(base) / "landscape" / "temporaries"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def _record(tmp: Path, kind: str, details: dict) -> None:
    record = _MINE.get(tmp)
    if record is None:
        return
    text = json.dumps({"kind": kind, "path": os.fsencode(os.path.abspath(tmp)).hex(), "details": details})
    part = record.with_name(record.name + ".part")
    try:
        part.write_text(text, encoding="utf-8")
        os.replace(part, record)  # a reader sees the old record or the new, whole
    except OSError:  # no record (a full disk): the temporary is still removed by this process when it is done
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)


def _read_record(record: Path | None) -> dict | None:
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError, AttributeError):
        return None
    ok = isinstance(data, dict) and isinstance(data.get("kind"), str) and isinstance(data.get("details"), dict)
    return data if ok else None


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
