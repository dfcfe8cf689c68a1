"""Endpoints from checkpoint files, and what ``landscape info`` says about a path file."""

from __future__ import annotations

from pathlib import Path as FilePath

import torch

from ..problems.checkpoint import load_checkpoint
from .._errors import LandscapeError
from .path import Path
from ..problems.problem import Problem


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
