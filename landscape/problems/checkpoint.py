"""Checkpoints: safe to load, atomic to write.

A landscape file is a ``torch.save``'d dict of tensors, numbers, strings, lists and dicts only,
so that ``torch.load(..., weights_only=True)`` reads it without running any code::

    {
      "format": "landscape",          # marks the file
      "version": 1,                   # of this layout; newer files are refused with a clear message
      "kind": "minimum",              # or "path" (see landscape.Path) and other kinds
      "problem": {"name": ..., "params": {...}},   # rebuilds the Problem (data seed included)
      "theta": Tensor[D],             # the flat parameters
      "loss": float,                  # training loss at theta, as evaluated when saved
      "grad_norm": float,             # ‖∇L(theta)‖, as evaluated when saved (absent in older files)
      "converged": bool,              # whether theta meets the stationarity criterion of
                                      # landscape.minima.stationary (absent in older files)
      "seed": int or None,            # the training seed
      "versions": {"landscape": ..., "torch": ...},
      "trajectory": {                 # optional: the optimiser's path, thinned to a bounded size
          "step": Tensor[T] (int64), "theta": Tensor[T, D], "loss": Tensor[T]},
                                      # at most TRAJECTORY_BYTES of theta: evenly subsampled beyond
                                      # (first and last points kept; meta "trajectory_thinned" says so)
      "buffers": {name: Tensor},      # optional: the module's buffers at theta (BatchNorm running
                                      # statistics of the training split at theta), taken into the
                                      # module on loading, so bn="frozen" is the trained network
      "meta": {...},                  # JSON-able: training options, timings, anything else
    }

A plain ``state_dict`` (or a dict holding one under ``"state_dict"`` / ``"model_state_dict"``)
also loads when the user names the problem it belongs to.
"""

from __future__ import annotations

import math
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any

import torch

from .._errors import LandscapeError
from .._version import versions
from ..io import atomic_write
from .problem import Problem
from .embedded import problem_from_spec
from .stationarity import is_stationary

FORMAT = "landscape"
VERSION = 1

#: Bytes of trajectory points a checkpoint keeps at most (16 MiB: every record of the digits MLP, D = 17,610;
#: 4 points of a 1M-parameter network, whose 41 records made a 172 MB file).
TRAJECTORY_BYTES = 16 << 20

@dataclass
class Checkpoint:
    """A minimum (or any point) of a problem, as loaded from a file.

    Attributes
    ----------
    path : pathlib.Path
    problem : Problem
    theta : Tensor, shape (D,)
    loss : float
        The training loss recorded in the file (re-evaluate with ``problem.loss(theta)``).
    seed : int or None
    grad_norm : float or None
        ‖∇L(theta)‖ recorded in the file (None for files written before it was recorded).
    converged : bool or None
        Whether ``theta`` met the stationarity criterion when saved (None for older files).
    trajectory : dict or None
        ``{"step": [T], "theta": [T, D], "loss": [T]}``.
    meta : dict
    """

    path: FilePath
    problem: Problem
    theta: torch.Tensor
    loss: float
    seed: int | None = None
    trajectory: dict | None = None
    meta: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    grad_norm: float | None = None
    converged: bool | None = None
    buffers: dict = field(default_factory=dict)


def save_checkpoint(path, problem: Problem, theta: torch.Tensor, *, loss: float | None = None,
                    seed: int | None = None, trajectory: dict | None = None, meta: dict | None = None,
                    grad_norm: float | None = None, converged: bool | None = None, buffers: dict | None = None,
                    trajectory_bytes: int = TRAJECTORY_BYTES) -> FilePath:
    """Write a minimum to ``path`` atomically (a temporary file in the same folder, then a rename).

    Parameters
    ----------
    theta : Tensor, shape (D,)
    loss, grad_norm : float, optional
        Evaluated with ``problem.loss_and_grad(theta)`` when either is not given.
    converged : bool, optional
        Whether ``theta`` is a minimum by :func:`landscape.minima.is_stationary`; decided from
        ``loss`` and ``grad_norm`` when not given.
    trajectory : dict, optional
        ``{"step": [T], "theta": [T, D], "loss": [T]}``; thinned by :func:`thin_trajectory` to at most
        ``trajectory_bytes`` of points (``meta["trajectory_thinned"]`` records how many were recorded and kept).
    buffers : dict of str to Tensor, optional
        The module's buffers at θ (:func:`landscape.problems.bn_stats.running_statistics`), stored and taken into
        the module when the file is loaded.
    """
    theta = theta.detach().cpu()
    if theta.shape != (problem.dim,):
        raise LandscapeError(f"theta has shape {tuple(theta.shape)}, expected ({problem.dim},) for {problem.name}")
    _check_finite(path, theta)  # not written: no command could load it
    if loss is None or grad_norm is None:
        value, grad = problem.loss_and_grad(theta[None])
        loss = float(value[0]) if loss is None else loss
        grad_norm = float(grad[0].norm()) if grad_norm is None else grad_norm
    if converged is None:
        converged = bool(is_stationary(torch.tensor([float(loss)]), torch.tensor([float(grad_norm)]))[0])
    record = {"format": FORMAT, "version": VERSION, "kind": "minimum", "problem": problem.spec,
              "theta": theta.clone(), "loss": float(loss), "grad_norm": float(grad_norm),
              "converged": bool(converged), "seed": seed, "versions": versions(), "meta": dict(meta or {})}
    if trajectory is not None:
        kept = thin_trajectory(trajectory, trajectory_bytes)
        record["trajectory"] = {k: v.detach().cpu().clone() for k, v in kept.items()}
        if kept["theta"].shape[0] < trajectory["theta"].shape[0]:
            record["meta"]["trajectory_thinned"] = {"recorded": int(trajectory["theta"].shape[0]),
                                                    "kept": int(kept["theta"].shape[0]), "bytes": int(trajectory_bytes)}
    if buffers:
        record["buffers"] = {k: v.detach().cpu().clone() for k, v in buffers.items()}
    return atomic_save(record, path)


def thin_trajectory(trajectory: dict, budget: int = TRAJECTORY_BYTES) -> dict:
    """The trajectory itself when its points take at most ``budget`` bytes; else evenly spaced records, the first
    and the last (the minimum) kept, as many as fit (3 at least, what a PCA plane needs)."""
    theta = trajectory["theta"]
    t = theta.shape[0]
    fit = max(3, int(budget) // max(1, theta[0].numel() * theta.element_size()))
    if t <= fit:
        return trajectory
    rows = torch.linspace(0, t - 1, fit).round().long().unique()
    return {k: v[rows] for k, v in trajectory.items()}


def atomic_save(obj: Any, path) -> FilePath:
    """``torch.save`` atomically (see :func:`landscape.io.atomic_write`): the old file or the new, never a torn one."""
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def read_file(path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with every failure turned into one clear line."""
    path = FilePath(path)
    if not path.is_file():
        raise LandscapeError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols are not the user's business
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global[^.\n]*|Trying to call reduce[^.\n]*", str(err))
        if not found:  # not a pickle torch can read safely at all: garbage, or a foreign pickle
            detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(err))
            msg = detail.group(1).strip() if detail else " ".join(str(err).split())[:120]
            raise LandscapeError(f"{path}: corrupt, truncated or not a torch file ({msg}); re-create it") from None
        what = found.group(0).strip()
        raise LandscapeError(
            f"{path}: refused: it holds Python objects that safe loading does not allow ({what}); "
            "re-save it as a landscape checkpoint or a plain state_dict of tensors"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError, IndexError) as err:
        msg = " ".join(str(err).split())[:160]
        raise LandscapeError(f"{path}: corrupt, truncated or not a torch file ({msg}); re-create it") from None


def load_checkpoint(path, *, problem: Problem | None = None) -> Checkpoint:
    """Load and validate a landscape checkpoint, or a plain ``state_dict`` of a named problem.

    Parameters
    ----------
    path : str or Path
    problem : Problem, optional
        Needed for a plain ``state_dict`` and for files made with a user problem; for a landscape
        checkpoint of a registered problem it must match the file's problem.

    Raises
    ------
    LandscapeError
        A missing, corrupt, truncated, foreign or unsafe file; an unknown problem; a D that does not
        match; non-finite parameters. Nothing in the file is ever executed.
    """
    path = FilePath(path)
    obj = read_file(path)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if obj.get("kind", "minimum") != "minimum":
            raise LandscapeError(f"{path}: a landscape {obj.get('kind')!r} file, not a checkpoint of a minimum")
        return _from_record(path, obj, problem)
    state = _state_dict(obj)
    if state is None:
        keys = list(obj)[:6] if isinstance(obj, dict) else type(obj).__name__
        raise LandscapeError(f"{path}: not a landscape checkpoint or state_dict (found {keys})")
    if problem is None:
        raise LandscapeError(f"{path}: a plain state_dict; name the problem it belongs to with --problem NAME")
    missing = [n for n in problem.layout.names if n not in state]
    if missing:
        raise LandscapeError(f"{path}: state_dict lacks {missing[:4]} of problem {problem.name!r}; "
                             "check --problem and its parameters")
    theta = problem.layout.flatten({n: state[n].float() for n in problem.layout.names})
    _check_finite(path, theta)
    adopted = adopt_buffers(path, problem, state)
    return Checkpoint(path, problem, theta, float(problem.loss(theta)),
                      meta={"source": "state_dict", **({"buffers": adopted} if adopted else {})})


def adopt_buffers(path, problem: Problem, state: dict) -> list[str]:
    """Take a state_dict's floating buffers (BatchNorm running statistics, a user's constants) into the problem's
    module: they are part of the function the file holds. The first file's are taken; a later file whose values
    differ is a one-line error, except BatchNorm statistics, which only ``bn="frozen"`` reads: then the problem
    refuses that policy (one loss needs one set of statistics; ``recompute`` takes them from the data).

    Returns the names of the buffers taken or matched."""
    module = getattr(problem, "module_", None)
    if module is None:
        return []
    own = dict(module.named_buffers())
    found = {n: v for n, v in state.items() if n in own and isinstance(v, torch.Tensor) and own[n].is_floating_point()}
    for name, value in found.items():
        if value.shape != own[name].shape or not value.is_floating_point():
            raise LandscapeError(f"{path}: buffer {name} is {tuple(value.shape)} {value.dtype}, the module's "
                                 f"{tuple(own[name].shape)} {own[name].dtype}; check --problem and its parameters")
    if not found:
        return []
    first = getattr(problem, "_buffer_source", None)
    if first is None:
        with torch.no_grad():
            for name, value in found.items():
                own[name].copy_(value)
        problem._buffer_source = path
        problem._checked.clear()  # the function changed: its points are checked again
        return sorted(found)
    differ = [n for n, v in found.items() if not torch.equal(v.to(own[n].dtype), own[n])]
    if not differ:
        return sorted(found)
    norms = set(getattr(problem, "_bn_layers", []))
    if any(n.rpartition(".")[0] not in norms for n in differ):
        raise LandscapeError(f"{first} and {path} hold different values of the buffer {differ[0]}: the loss is one "
                             "module's function; give files of one model")
    problem._buffer_conflict = (f"{first} and {path} hold different BatchNorm running statistics ({differ[0]}"
                                f"{', ...' if len(differ) > 1 else ''})")
    if problem.bn == "frozen":
        raise LandscapeError(f"{problem._buffer_conflict}: frozen statistics define the loss of one of them only; "
                             "use --bn recompute (statistics recomputed at every point from the data)")
    return sorted(found)


def _from_record(path, obj, problem) -> Checkpoint:
    version = obj.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise LandscapeError(f"{path}: format version {version!r} is newer than this landscape reads ({VERSION}); "
                             "upgrade landscape")
    spec = obj.get("problem")
    try:
        built = problem_from_spec(spec, user=problem)
    except LandscapeError as err:
        raise LandscapeError(f"{path}: {err}") from None
    if problem is not None and problem.spec != built.spec:
        raise LandscapeError(f"{path}: made for {built!r}, not for the requested {problem!r}")
    theta = obj.get("theta")
    if not isinstance(theta, torch.Tensor) or theta.dim() != 1:
        raise LandscapeError(f"{path}: 'theta' is missing or not a vector")
    if theta.shape[0] != built.dim:
        raise LandscapeError(f"{path}: theta has D = {theta.shape[0]} but problem {built.name} has D = {built.dim}")
    _check_finite(path, theta)
    loss = obj.get("loss")
    if not isinstance(loss, (int, float)) or not math.isfinite(loss):
        raise LandscapeError(f"{path}: recorded loss {loss!r} is not a finite number")
    grad_norm, converged = obj.get("grad_norm"), obj.get("converged")
    if grad_norm is not None and (isinstance(grad_norm, bool) or not isinstance(grad_norm, (int, float))
                                  or not math.isfinite(grad_norm) or grad_norm < 0):
        raise LandscapeError(f"{path}: recorded grad_norm {grad_norm!r} is not a finite number >= 0; re-create it")
    if converged is not None and not isinstance(converged, bool):
        raise LandscapeError(f"{path}: recorded converged {converged!r} is not true or false; re-create it")
    traj = obj.get("trajectory")
    if traj is not None:
        _check_trajectory(path, traj, built.dim)
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    buffers = obj.get("buffers") or {}
    if not (isinstance(buffers, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) and
                                              (not v.is_floating_point() or bool(torch.isfinite(v).all()))
                                              for k, v in buffers.items())):
        raise LandscapeError(f"{path}: malformed buffers (needs names to finite tensors); re-create the file")
    if buffers:
        adopt_buffers(path, built, buffers)
    return Checkpoint(path, built, theta, float(loss), obj.get("seed"), traj, meta, obj.get("versions") or {},
                      None if grad_norm is None else float(grad_norm), converged, buffers)


def _check_trajectory(path, traj, dim: int) -> None:
    """A trajectory is step [T] (increasing integers), theta [T, D] and loss [T], all finite: as strict as theta."""
    wanted = f"needs step [T], theta [T, {dim}] and loss [T], finite"
    if not (isinstance(traj, dict) and {"step", "theta", "loss"} <= set(traj)
            and all(isinstance(traj[k], torch.Tensor) for k in ("step", "theta", "loss"))):
        raise LandscapeError(f"{path}: malformed trajectory ({wanted}); re-create the file")
    step, theta, loss = traj["step"], traj["theta"], traj["loss"]
    if not (theta.dim() == 2 and theta.shape[1] == dim and theta.shape[0] >= 1
            and step.shape == loss.shape == (theta.shape[0],) and theta.is_floating_point()
            and loss.is_floating_point() and not step.is_floating_point() and not step.is_complex()):
        raise LandscapeError(f"{path}: malformed trajectory ({wanted}); re-create the file")
    if not (torch.isfinite(theta).all() and torch.isfinite(loss).all()):
        raise LandscapeError(f"{path}: the trajectory holds NaN or infinite values; re-create the file")
    if step.numel() > 1 and not bool((step[1:] > step[:-1]).all()):
        raise LandscapeError(f"{path}: the trajectory's steps do not increase; re-create the file")


def _state_dict(obj):
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return obj
    return None


def _check_finite(path, theta):
    if not torch.isfinite(theta).all():
        bad = int((~torch.isfinite(theta)).sum())
        raise LandscapeError(f"{path}: {bad} parameter(s) are NaN or infinite; the run that made it diverged")


def describe_checkpoint(ckpt: Checkpoint) -> dict:
    """What ``landscape info`` shows: the problem, D, losses re-evaluated on every split, norms, and whether the
    point is a minimum, re-evaluated (a file's ``converged`` is a claim anyone can edit; it is shown beside).

    Returns
    -------
    dict
        ``losses`` by split, ``grad_norm`` and ``converged`` evaluated here (the training loss's gradient,
        :func:`~landscape.problems.stationarity.is_stationary`), ``recorded_loss``, ``recorded_grad_norm`` and
        ``recorded_converged`` as the file says (None for files written before they were recorded, and for a plain
        ``state_dict``, whose ``source`` is ``"state_dict"`` rather than ``"checkpoint"``), norms, ...
    """
    problem, theta = ckpt.problem, ckpt.theta
    losses = {split: float(problem.loss(theta, split=split)) for split in problem.splits} or {
        "loss": float(problem.loss(theta))}
    norms = {name: float(t.norm()) for name, t in problem.layout.unflatten(theta).items()}
    loss, grad = problem.loss_and_grad(theta[None])
    grad_norm = grad[0].norm().reshape(1)
    plain = ckpt.meta.get("source") == "state_dict"  # its loss was computed on loading, not recorded
    out = {
        "file": str(ckpt.path), "kind": "minimum", "problem": problem.spec, "dim": problem.dim,
        "source": "state_dict" if plain else "checkpoint",
        "recorded_loss": None if plain else ckpt.loss, "losses": losses, "norm": float(theta.norm()), "norms": norms,
        "grad_norm": float(grad_norm[0]), "converged": bool(is_stationary(loss.reshape(1), grad_norm)[0]),
        "recorded_grad_norm": ckpt.grad_norm, "recorded_converged": ckpt.converged,
        "seed": ckpt.seed, "versions": ckpt.versions, "meta": ckpt.meta,
    }
    if ckpt.trajectory is not None:
        out["trajectory_points"] = int(ckpt.trajectory["theta"].shape[0])
        out["trajectory_steps"] = int(ckpt.trajectory["step"][-1])
    return out
