"""Path files (write, read, describe) and the endpoints of a path from checkpoint files."""

from __future__ import annotations

from pathlib import Path as FilePath

import torch

from .._errors import LandscapeError
from ..problems.checkpoint import FORMAT, VERSION, atomic_save, load_checkpoint, read_file, versions
from ..problems.problem import Problem, _jsonable
from .path import Path


def load_endpoints(start_file, end_file, *, problem: Problem | None = None
                   ) -> tuple[Problem, torch.Tensor, torch.Tensor]:
    """The problem and the two minima to connect, from two checkpoint files.

    Parameters
    ----------
    start_file, end_file : str or Path
        Landscape checkpoints (or plain state_dicts when ``problem`` is given).
    problem : Problem, optional
        The problem, for plain state_dicts and user problems (``--problem package.module:factory``).

    Returns
    -------
    problem : Problem
    start, end : Tensor, shape (D,)

    Raises
    ------
    LandscapeError
        Either file unreadable, or the two files made for different problems (naming both files).
    """
    a = load_checkpoint(start_file, problem=problem)
    b = load_checkpoint(end_file, problem=problem)
    if a.problem.spec != b.problem.spec or a.theta.shape != b.theta.shape:
        raise LandscapeError(f"{start_file} and {end_file} hold minima of different problems ({a.problem!r} vs "
                             f"{b.problem!r}); connect two minima of one problem")
    if torch.equal(a.theta, b.theta):
        raise LandscapeError(f"{start_file} and {end_file} hold the same point; there is nothing to connect")
    return a.problem, a.theta, b.theta


def describe_path(file, path: Path, problem: Problem, meta: dict) -> dict:
    """What ``landscape info`` shows about a path file: its claim, metrics, method figures and endpoints."""
    out = {"file": str(FilePath(file)), "kind": "path", "problem": problem.spec, "dim": problem.dim,
           **path.summary(), "meta": meta}
    return out


_SCALARS = ("method", "level", "status", "dense_max_loss", "dense_argmax", "resolution", "certificate", "bound",
            "spacing", "evaluations", "seconds")


def save_path(file, problem: Problem, path: Path, *, meta: dict | None = None):
    """Write a path atomically as a landscape file of kind ``"path"`` (safe to load, see the checkpoint docs).

    The record holds ``problem`` (spec), ``points`` [N, D], ``losses`` [N], ``t`` [N], the path's
    claim (``method``, ``level``, ``status``, dense check figures, ``evaluations``, ``seconds``),
    ``info``, ``summary`` and ``meta`` (e.g. the endpoint files), all JSON-able besides the tensors.
    """
    record = {"format": FORMAT, "version": VERSION, "kind": "path", "problem": problem.spec,
              "points": path.points.detach().cpu().clone(), "losses": path.losses.detach().cpu().clone(),
              "t": path.t.detach().cpu().clone(), "info": _jsonable(path.info, where="path info"),
              "summary": _jsonable(path.summary(), where="path summary"),
              "meta": _jsonable(dict(meta or {}), where="path meta"), "versions": versions()}
    record.update({k: getattr(path, k) for k in _SCALARS})
    return atomic_save(record, file)


def load_path(file, *, problem: Problem | None = None) -> tuple[Path, Problem, dict]:
    """Load a path file written by :func:`save_path`.

    Returns
    -------
    path : Path
    problem : Problem
    meta : dict
    """
    return path_from_record(file, read_file(file), problem)


def path_from_record(file, obj, problem: Problem | None = None) -> tuple[Path, Problem, dict]:
    """:func:`load_path` on a record already read from ``file`` (named in the errors)."""
    from ..problems.embedded import problem_from_spec

    if not (isinstance(obj, dict) and obj.get("format") == FORMAT):
        raise LandscapeError(f"{file}: not a landscape path file")
    if obj.get("kind") != "path":
        raise LandscapeError(f"{file}: a landscape {obj.get('kind')!r} file, not a path")
    if not isinstance(obj.get("version"), int) or obj["version"] > VERSION:
        raise LandscapeError(f"{file}: format version {obj.get('version')!r} is newer than this landscape reads; "
                             "upgrade landscape")
    try:
        built = problem_from_spec(obj.get("problem"), user=problem)
    except LandscapeError as err:
        raise LandscapeError(f"{file}: {err}") from None
    points, losses, t = obj.get("points"), obj.get("losses"), obj.get("t")
    if not (isinstance(points, torch.Tensor) and points.dim() == 2 and points.shape[1] == built.dim
            and isinstance(losses, torch.Tensor) and losses.shape == (points.shape[0],)
            and isinstance(t, torch.Tensor) and t.shape == losses.shape):
        raise LandscapeError(f"{file}: malformed path (needs points [N, {built.dim}], losses [N], t [N])")
    if not (torch.isfinite(points).all() and torch.isfinite(losses).all()):
        raise LandscapeError(f"{file}: the path holds NaN or infinite values")
    kwargs = {k: obj.get(k) for k in _SCALARS if obj.get(k) is not None}
    info = obj.get("info") if isinstance(obj.get("info"), dict) else {}
    try:
        path = Path(points, losses, t, info=info, **kwargs)
    except TypeError as err:
        raise LandscapeError(f"{file}: malformed path record ({err})") from None
    return path, built, obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
