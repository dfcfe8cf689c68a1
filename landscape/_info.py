"""What ``landscape info`` says about a file: one describer per kind of landscape file."""

from __future__ import annotations

from pathlib import Path as FilePath

from .problems.checkpoint import FORMAT, _from_record, describe_checkpoint, load_checkpoint, read_file
from ._errors import LandscapeError
from .paths.files import describe_path, path_from_record
from .problems.problem import Problem


def _minimum(file, record, problem):
    return describe_checkpoint(_from_record(FilePath(file), record, problem))


def _path(file, record, problem):
    path, built, meta = path_from_record(file, record, problem)
    return describe_path(file, path, built, meta)


#: Describers by the ``kind`` of a landscape file; each returns a JSON-able dict with ``kind``.
DESCRIBERS = {"minimum": _minimum, "path": _path}


def describe_file(file, *, problem: Problem | None = None) -> dict:
    """Describe any landscape file (a minimum, a path, ...) or a plain state_dict of a named problem.

    The file is read once (safely, see :func:`landscape.problems.read_file`) and handed to the describer of its kind.
    """
    record = read_file(file)
    if isinstance(record, dict) and record.get("format") == FORMAT:
        kind = record.get("kind", "minimum")
        if kind not in DESCRIBERS:
            raise LandscapeError(f"{file}: a landscape {kind!r} file; this version describes {sorted(DESCRIBERS)}")
        return DESCRIBERS[kind](file, record, problem)
    return describe_checkpoint(load_checkpoint(file, problem=problem))
