"""Path files (write, read, describe) and the endpoints of a path from checkpoint files."""

from __future__ import annotations

import math
import re
import time
from dataclasses import replace
from pathlib import Path as FilePath

import torch

from .._errors import LandscapeError
from ..problems.checkpoint import FORMAT, VERSION, atomic_save, load_checkpoint, read_file, versions
from ..problems.problem import Problem, _jsonable
from .path import STATUSES, Path


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
    """What ``landscape info`` shows about a path file: its claim (as re-checked on reading, see
    :func:`load_path`), metrics, method figures and endpoints."""
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


def load_path(file, *, problem: Problem | None = None, recheck: bool = True) -> tuple[Path, Problem, dict]:
    """Load a path file written by :func:`save_path`; its claim is checked again, not believed.

    A file is data anyone can edit: relabelling a path ``connected`` costs one line. So every field is
    checked (types, ranges, finite values: a malformed one is refused naming it), and, with ``recheck``,
    the claim is re-established on the rebuilt problem (:func:`recheck_claim`): the knots' losses are
    evaluated again and the dense check runs again at the file's resolution. The returned path states
    what this check found; what the file said is kept in ``info["file_claim"]``.

    Parameters
    ----------
    file : str or Path
    problem : Problem, optional
        For files made with a user problem (``--problem package.module:factory``).
    recheck : bool
        False: the path as the file states it, with ``info["rechecked"] = False`` (what describes it then
        says "claimed by the file, not re-checked").

    Returns
    -------
    path : Path
    problem : Problem
    meta : dict

    Raises
    ------
    LandscapeError
        An unreadable, foreign or malformed file (naming the field and the fix).
    """
    return path_from_record(file, read_file(file), problem, recheck=recheck)


def path_from_record(file, obj, problem: Problem | None = None, *, recheck: bool = True
                     ) -> tuple[Path, Problem, dict]:
    """:func:`load_path` on a record already read from ``file`` (named in the errors)."""
    from ..problems.embedded import problem_from_spec

    if not (isinstance(obj, dict) and obj.get("format") == FORMAT):
        raise LandscapeError(f"{file}: not a landscape path file")
    if obj.get("kind") != "path":
        raise LandscapeError(f"{file}: a landscape {obj.get('kind')!r} file, not a path")
    if isinstance(obj.get("version"), bool) or not isinstance(obj.get("version"), int) or obj["version"] > VERSION:
        raise LandscapeError(f"{file}: format version {obj.get('version')!r} is newer than this landscape reads; "
                             "upgrade landscape")
    try:
        built = problem_from_spec(obj.get("problem"), user=problem)
    except LandscapeError as err:
        raise LandscapeError(f"{file}: {err}") from None
    points, losses, t = _tensors(file, obj, built.dim)
    kwargs = check_claim_fields(file, obj)
    info = obj.get("info") if isinstance(obj.get("info"), dict) else {}
    info = {k: v for k, v in info.items() if k not in ("file_claim", "recheck", "rechecked")}
    path = Path(points, losses, t, info=info, **kwargs)
    path = recheck_claim(built, path) if recheck else replace(path, info={**path.info, "rechecked": False})
    return path, built, obj.get("meta") if isinstance(obj.get("meta"), dict) else {}


_FLOATS = (torch.float32, torch.float64)


def _tensors(file, obj, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The points [N, D], losses [N] and t [N] of a record: floating point, finite, t rising from 0 to 1."""
    points, losses, t = obj.get("points"), obj.get("losses"), obj.get("t")
    if not (isinstance(points, torch.Tensor) and points.dim() == 2 and points.shape[0] >= 2 and points.shape[1] == dim
            and isinstance(losses, torch.Tensor) and losses.shape == (points.shape[0],)
            and isinstance(t, torch.Tensor) and t.shape == losses.shape):
        raise LandscapeError(f"{file}: malformed path (needs points [N >= 2, {dim}], losses [N], t [N]); "
                             "re-create the file")
    for name, value in (("points", points), ("losses", losses), ("t", t)):
        if value.dtype not in _FLOATS:
            raise LandscapeError(f"{file}: the path's {name} are {str(value.dtype).removeprefix('torch.')}, not "
                                 "float32 or float64; re-create the file (or convert them with .double())")
    if not (torch.isfinite(points).all() and torch.isfinite(losses).all() and torch.isfinite(t).all()):
        raise LandscapeError(f"{file}: the path holds NaN or infinite values (points, losses or t); re-create it")
    tol = 1e-6
    if not (abs(float(t[0])) <= tol and abs(float(t[-1]) - 1) <= tol and bool((t[1:] >= t[:-1]).all())):
        raise LandscapeError(f"{file}: the path's t must rise from 0 to 1 (got {float(t[0]):g} .. {float(t[-1]):g}, "
                             "one value a knot); re-create the file")
    return points, losses.to(points.dtype), t.to(points.dtype)


#: The fields read as floats (a whole number in the file is taken as its float).
_REALS = {"level", "dense_max_loss", "dense_argmax", "bound", "spacing", "seconds"}

#: The finest dense check a path file may ask to be re-run at (``--resolution`` of the command line).
MAX_RESOLUTION = 4096

_NAME = re.compile(r"[A-Za-z_][\w.:-]{0,63}")


#: The claim's fields of a path record, each with the test a value must pass and what it must be, in words.
_FIELDS = {
    "method": (lambda v: isinstance(v, str) and _NAME.fullmatch(v) is not None, "a method name"),
    "level": (lambda v: _real(v) and math.isfinite(v), "a finite number"),
    "status": (lambda v: isinstance(v, str) and v in STATUSES, f"one of {sorted(STATUSES)}"),
    "dense_max_loss": (lambda v: _real(v) and not math.isnan(v) and v != -math.inf, "a number, or inf"),
    "dense_argmax": (lambda v: _real(v) and 0 <= v <= 1, "a position in [0, 1]"),
    "resolution": (lambda v: _whole(v) and 1 <= v <= MAX_RESOLUTION, f"a whole number in [1, {MAX_RESOLUTION}]"),
    "certificate": (lambda v: isinstance(v, str) and v in ("bound", "grid"), "'bound' or 'grid'"),
    "bound": (lambda v: _real(v) and math.isfinite(v), "a finite number"),
    "spacing": (lambda v: _real(v) and math.isfinite(v) and v >= 0, "a finite number >= 0"),
    "evaluations": (lambda v: _whole(v) and v >= 0, "a whole number >= 0"),
    "seconds": (lambda v: _real(v) and math.isfinite(v) and v >= 0, "a finite number >= 0"),
}

def _real(v) -> bool:
    """A number that is a float (an int too large for one is not)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        float(v)
    except OverflowError:
        return False
    return True


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_claim_fields(file, obj: dict) -> dict:
    """The claim's fields of a path record (:data:`_SCALARS`), each checked; absent ones left out.

    Raises
    ------
    LandscapeError
        ``"FILE: field 'level' is 'abc', not a finite number; re-create the file"``; or a status that needs a
        level without one.
    """
    out = {}
    for key, (ok, wanted) in _FIELDS.items():
        value = obj.get(key)
        if value is None:
            continue
        if not ok(value):
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise LandscapeError(f"{file}: field {key!r} is {shown}, not {wanted}; re-create the file")
        out[key] = float(value) if key in _REALS else value
    if out.get("status", "unchecked") != "unchecked" and "level" not in out:
        raise LandscapeError(f"{file}: status {out['status']!r} without a level; re-create the file")
    return out


def recheck_claim(problem: Problem, path: Path) -> Path:
    """A path read from a file, its claim established again: knots' losses, dense check, a refutation's witness.

    The dense check of :func:`landscape.certify` runs again at the path's resolution (the default when the
    file gives none), with its zoom and its float64 decision near the level, and decides the status. A
    proof (``certificate = "bound"``, ``connected``) is not run again (it can take minutes): the result's
    certificate is the re-run dense check's, ``"grid"``, and the file's proof is kept in ``info["file_claim"]``,
    shown as claimed by the file, not re-checked. A refutation's witness (a point found above the level
    inside a segment) is one evaluation: it is evaluated again, in float64, and stands only if it is above
    the level.

    Parameters
    ----------
    problem : Problem
        The problem the file names, rebuilt.
    path : Path
        As read from the file.

    Returns
    -------
    Path
        The re-checked copy: ``losses`` (the knots', evaluated again), ``status``, ``dense_max_loss``,
        ``dense_argmax``, ``certificate``, ``bound``, ``spacing`` as found here; ``method``, ``evaluations``,
        ``seconds`` and the method's ``info`` as the file says; ``info["file_claim"]`` (the file's status,
        certificate, bound, dense max loss, resolution and proof), ``info["recheck"]`` (``agrees``: the file's
        status confirmed; ``evaluations``, ``seconds``, ``knot_loss_change``: the largest difference between
        the file's knot losses and the problem's) and ``info["rechecked"] = True``.
    """
    from .certify import DEFAULT_RESOLUTION, certify, float64_losses

    clock = time.perf_counter()
    proof = path.info.get("proof") if isinstance(path.info.get("proof"), dict) else None
    claim = {"status": path.status, "certificate": path.certificate, "bound": path.bound,
             "dense_max_loss": path.dense_max_loss, "resolution": path.resolution, "proof": proof}
    info = {k: v for k, v in path.info.items() if k not in ("proof", "decided_in", "rounding")}
    checked = certify(problem, replace(path, info=info, evaluations=0), path.level,
                      resolution=path.resolution or DEFAULT_RESOLUTION, certificate="grid")
    spent = checked.evaluations
    witness = (proof or {}).get("witness")
    if (checked.status == "connected" and path.certificate == "bound" and path.status == "not_found"
            and _witness_ok(witness, path.n_points)):
        where = torch.tensor([witness["segment"] + witness["t"]], dtype=torch.float64)
        loss = float(float64_losses(problem, path.points, where)[0])
        spent += 1
        if not loss <= checked.level:  # NaN included: not below any level
            position = float(path.t[witness["segment"]] + witness["t"] * (path.t[witness["segment"] + 1]
                                                                          - path.t[witness["segment"]]))
            checked = replace(checked, status="not_found", certificate="bound", dense_argmax=position,
                              dense_max_loss=loss if math.isfinite(loss) else math.inf)
            checked.info["proof"] = {**proof, "witness": {**witness, "loss": loss, "decided_in": "float64"}}
    if proof is not None and proof.get("status") in ("unsupported", "undecided") and checked.status == "connected":
        checked.info["proof"] = proof  # why the file's dense check had no proof behind it: still so
    change = float((checked.losses.double() - path.losses.double()).abs().max())
    checked.info.update(file_claim=claim, rechecked=True,
                        recheck={"agrees": None if path.status == "unchecked" else checked.status == path.status,
                                 "evaluations": spent,
                                 "seconds": time.perf_counter() - clock, "knot_loss_change": change})
    return replace(checked, evaluations=path.evaluations, seconds=path.seconds)


def _witness_ok(witness, n_points: int) -> bool:
    """A refutation's witness as the proof records it: a segment of the path and a position in it."""
    return (isinstance(witness, dict) and _whole(witness.get("segment")) and 0 <= witness["segment"] < n_points - 1
            and _real(witness.get("t")) and 0 <= witness["t"] <= 1)
