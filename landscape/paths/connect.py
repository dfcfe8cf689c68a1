"""Low-loss paths between two points: a registry of methods, one signature, one certified entry point.

Every method is ``method(problem, start, end, *, level=None, generator=None, **options) -> Path``;
:func:`connect` checks the inputs, resolves the level, runs one, and certifies what it returns.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from ..symmetries.align import ALIGNERS
from ..symmetries.align import align as align_points
from .._errors import LandscapeError
from .._random import resolve_generator
from .._registry import Registry
from .path import DEFAULT_RESOLUTION, Path, certify
from ..problems.problem import Problem
from ._common import check_endpoints, endpoint_losses, resolve_level
from .curves import bezier, polychain
from .linear import linear
from .neb import neb
from .string import string

#: Path methods by name; keys equal function names. ``connect(..., method=name)`` runs one.
METHODS = Registry("path method", (linear, string, bezier, polychain, neb),
                   shared=("problem", "start", "end", "level", "generator"))

#: The method :func:`connect` runs when none is named.
DEFAULT_METHOD = "string"


def method_options(method: str) -> dict:
    """The options a method takes, with their defaults (what ``--opt key=value`` may set)."""
    return METHODS.options(method)


def connect(problem: Problem, start: torch.Tensor, end: torch.Tensor, *, method: str = DEFAULT_METHOD,
            level: float | None = None, generator: torch.Generator | None = None,
            resolution: int = DEFAULT_RESOLUTION, align: str = "none", **options) -> Path:
    """A path from ``start`` to ``end``, certified at level u: ``connected`` only if it provably stays ≤ u.

    Parameters
    ----------
    problem : Problem
    start, end : Tensor, shape (D,)
        The endpoints (usually two minima); their device and dtype decide where the work runs.
    method : str
        A key of :data:`METHODS`: ``"linear"``, ``"string"`` (Dynamic String Sampling, Freeman &
        Bruna 2017), ``"bezier"``, ``"polychain"`` (Garipov et al. 2018), ``"neb"`` (AutoNEB,
        Draxler et al. 2018).
    level : float, optional
        The level u. Default: :func:`landscape.paths.default_level`, 10% above the worse endpoint loss.
    generator : torch.Generator, optional
        Randomness of the alignment (its order of layers) and of the method (bead offsets, curve
        samples), drawn in that order from this one generator. Seeded 0 when None (``landscape._random``).
    resolution : int
        Sub-intervals per segment of the dense certification (and of the methods' own checks).
        At 32 (the default), halving or doubling it changes no status on the test landscapes.
    align : str
        A key of ``landscape.ALIGNERS``: ``"none"`` (the default) connects the endpoints as given;
        ``"weight"`` or ``"activation"`` first moves ``end`` onto ``start`` by the hidden-unit
        permutation (and rescaling) that keeps its function (:func:`landscape.align`), so the path
        then ends at the aligned copy of ``end``. ``info["alignment"]`` reports the straight
        segment's max loss and barrier before alignment beside the alignment's summary.
    **options
        The method's own options (see :func:`method_options`); an unknown one is an error.

    Returns
    -------
    Path
        Certified by :func:`landscape.certify`: ``status`` is ``"connected"`` if the loss evaluated
        densely along every segment is ≤ u, else ``"not_found"`` (the best path found is kept).
        ``info`` adds the straight segment's figures (``linear_max_loss``, ``linear_barrier``,
        ``linear_status``) and the problem's BatchNorm policy (``bn``); ``evaluations`` counts every
        loss evaluated (method, baseline and certification); ``seconds`` the whole call.

    Examples
    --------
    >>> import landscape
    >>> ring = landscape.make_problem("ring")
    >>> path = landscape.connect(ring, ring.minima[0], ring.minima[1], level=0.25)
    >>> path.status, round(path.normalized_length, 1)
    ('connected', 1.4)
    """
    began = time.perf_counter()
    accepted = METHODS.check_options(method, options)
    if not (isinstance(resolution, int) and not isinstance(resolution, bool) and resolution >= 1):
        raise LandscapeError(f"resolution must be a positive integer, got {resolution!r}")
    if "resolution" in accepted:
        options["resolution"] = resolution
    if not isinstance(problem, Problem):
        raise LandscapeError(f"problem must be a landscape.Problem, got {type(problem).__name__}")
    start, end = check_endpoints(problem, start, end)
    la, lb = endpoint_losses(problem, start, end)
    level = resolve_level(level, la, lb)
    generator = resolve_generator(generator)

    aligned = None
    if align != "none":
        ALIGNERS.lookup(align)
        before = certify(problem, linear(problem, start, end, level=level), level, resolution=resolution)
        result = align_points(problem, start, end, method=align, generator=generator)
        end = result.theta.to(start)
        aligned = {**result.summary(permutations=False), "linear_max_loss_before": before.max_loss,
                   "linear_barrier_before": before.barrier, "linear_status_before": before.status,
                   "evaluations_before": before.evaluations}
    baseline = certify(problem, linear(problem, start, end, level=level), level, resolution=resolution)
    if method == "linear" and not options:
        path = baseline
    elif max(la, lb) > level:  # no path can stay below u: do not run the method for a foregone answer
        path = replace(baseline, info={**baseline.info, "skipped": f"an endpoint loss is above the level {level:g}"})
    else:
        found = METHODS[method](problem, start, end, level=level, generator=generator, **options)
        path = certify(problem, found, level, resolution=resolution)
        path = replace(path, evaluations=path.evaluations + baseline.evaluations)
    info = {**path.info, "linear_max_loss": baseline.max_loss, "linear_barrier": baseline.barrier,
            "linear_status": baseline.status, "bn": getattr(problem, "bn", None)}
    if aligned is not None:
        info["alignment"] = aligned
        path = replace(path, evaluations=path.evaluations + aligned["evaluations_before"])
    return replace(path, method=method, info=info, seconds=time.perf_counter() - began)


__all__ = ["DEFAULT_METHOD", "METHODS", "connect", "method_options"]
