"""Low-loss paths between two points: a registry of methods, one signature, one certified entry point.

Every method is ``method(ends, *, generator=None, **options) -> Path``: :func:`connect` checks the
endpoints and evaluates their losses once, resolves the level, hands them to one method as an
:class:`Endpoints`, and certifies what it returns.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import torch

from .._errors import LandscapeError
from .._progress import Progress
from ..problems.memory import budgeted, plan_memory
from ..problems.problem import Problem
from ..symmetries.align import ALIGNERS
from ..symmetries.align import align as align_points
from .._random import resolve_generator
from .._registry import Registry
from ._common import Counted, Endpoints, check_endpoints, endpoint_losses, resolve_level
from .certify import CERTIFICATES, DEFAULT_RESOLUTION, certify, settle, verdict
from .curves import bezier, polychain
from .linear import linear, straight_path
from .neb import neb
from .path import Path
from .proof import against, time_budget
from .shorten import shorten as shorten_path
from .string import string

#: Path methods by name; keys equal function names. ``connect(..., method=name)`` runs one.
METHODS = Registry("path method", (linear, string, bezier, polychain, neb),
                   shared=("ends", "generator"))

#: The method :func:`connect` runs when none is named.
DEFAULT_METHOD = "string"


def method_options(method: str) -> dict:
    """The options a method takes, with their defaults (what ``--opt key=value`` may set)."""
    return METHODS.options(method)


def connect(problem: Problem, start: torch.Tensor, end: torch.Tensor, *, method: str = DEFAULT_METHOD,
            level: float | None = None, generator: torch.Generator | None = None,
            resolution: int = DEFAULT_RESOLUTION, align: str = "none", straight: Path | None = None,
            certificate: str = "auto", shorten: bool = False, search_samples: int | None = None,
            progress: bool = False, memory: int | str | None = None, proof_seconds: float | None = None,
            **options) -> Path:
    """A path from ``start`` to ``end``, certified at level u: ``connected`` only if it stays ≤ u.

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
    straight : Path, optional
        The straight segment from ``start`` to ``end``, already certified at ``resolution`` (a row of
        :func:`landscape.paths.straight_paths`, as the valley search measures them): it serves as the
        baseline and gives the endpoint losses, and its evaluations are not made, nor counted, again.
    certificate : {"auto", "bound", "grid"}
        What backs a ``connected`` (see :func:`landscape.certify`): ``"auto"`` proves it where the
        problem can bound its loss over segments and checks it densely elsewhere.
    shorten : bool
        Shorten the method's path while it stays below u (:mod:`landscape.paths.shorten`: shortcuts
        between beads, beads pulled toward their neighbours' midpoint), then certify the shorter one;
        if it does not pass its certificate, the path as found is certified instead.
        ``info["shorten"]`` has the lengths before and after.
    search_samples : int, optional
        The method searches on a fixed random subset of this many training samples
        (:meth:`Problem.subset`: cheaper steps), while the endpoints' losses, the level, the baseline
        and the certificate use all the data. ``info["search_samples"]`` records it.
    progress : bool
        Show on stderr, while it runs, the stage (straight segment, search, shortening, certificate)
        and the loss evaluations so far; the line goes when the call returns.
    memory : int or str, optional
        A memory budget in bytes (or ``"2GiB"``); default half of the free memory of the endpoints'
        device. It sets K, the points evaluated at once (beads of a batch, curve points of a step, the
        straight segment's and the certificate's points): budget // bytes a point needs
        (:func:`landscape.problems.memory.plan_memory`); a budget below one point is an error.
        ``info["memory"]`` has the budget, the bytes a point and K.
    proof_seconds : float, optional
        The time the proof of the method's path may spend (see :func:`landscape.paths.proof.prove_below`):
        by default as long as the search took (at least :data:`~landscape.paths.proof.MIN_PROOF_SECONDS`),
        after which a proof whose worst bound is not closing on u fast enough stops ``"undecided"`` (the
        reason in ``info["proof"]``) and the dense check stands; ``math.inf``: no time limit.
    **options
        The method's own options (see :func:`method_options`); an unknown one is an error.

    Returns
    -------
    Path
        Certified by :func:`landscape.certify`: ``status`` is ``"connected"`` if the loss is proven ≤ u
        on the whole path (``certificate="bound"``) or found ≤ u on the dense grid (``"grid"``, with its
        ``spacing``), else ``"not_found"`` (the best path found is kept).
        ``info`` adds the straight segment's figures (``linear_max_loss``, ``linear_barrier``,
        ``linear_status``) and the problem's BatchNorm policy (``bn``); ``evaluations`` counts every
        loss evaluated here (endpoints, method, baseline and certification; not those of a
        ``straight`` passed in); ``seconds`` the whole call.

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
    plan = plan_memory(problem, memory, dtype=start.dtype, device=start.device)
    shown = Progress(progress, f"connect ({method})")
    try:
        shown.stage("the model's evaluation checked against its own forward (float64)")
        problem.check_capture(torch.stack([start, end]))
        with budgeted(problem, plan):
            path = _connect(problem, start, end, method, level, generator, resolution, align, straight, certificate,
                            shorten, search_samples, options, shown, proof_seconds)
    finally:
        shown.close()
    capture = getattr(problem, "capture", None)
    return replace(path, info={**path.info, "memory": plan.summary(), **({"capture": capture} if capture else {})},
                   seconds=time.perf_counter() - began)


def _connect(problem, start, end, method, level, generator, resolution, align, straight, certificate, shorten,
             search_samples, options, shown, proof_seconds=None) -> Path:
    """:func:`connect` once the endpoints are checked and the memory budget is set."""
    counted = Counted(problem, on_count=shown.count)
    shown.stage("endpoints")
    if straight is None:
        la, lb = endpoint_losses(counted, start, end)
    else:
        la, lb = _measured(straight, start, end, resolution, align)
    level = resolve_level(level, la, lb)
    generator = resolve_generator(generator)
    CERTIFICATES.lookup(certificate)
    spent = 0  # evaluations outside ``counted``: the straight segments and the certification

    aligned = None
    if align != "none":
        ALIGNERS.lookup(align)
        before = straight_path(problem, start, end, level=level, losses=(la, lb), resolution=resolution,
                               certificate="grid")
        result = align_points(problem, start, end, method=align, generator=generator)
        start, end = check_endpoints(problem, start, result.theta.to(start))
        lb = float(counted.loss(end[None])[0])  # the aligned end: b's function, b's loss up to rounding
        aligned = {**result.summary(permutations=False), "linear_max_loss_before": before.max_loss,
                   "linear_barrier_before": before.barrier, "linear_status_before": before.status,
                   "evaluations_before": before.evaluations}
        spent += before.evaluations
    shown.stage(f"straight segment ({certificate} certificate)")
    if straight is None:
        baseline = straight_path(problem, start, end, level=level, losses=(la, lb), resolution=resolution,
                                 certificate=certificate)
        spent += baseline.evaluations
        shown.count(baseline.evaluations)
    else:
        measured = replace(straight, level=level, status=verdict(straight.max_loss, level), info={}, evaluations=0)
        baseline = settle(problem, measured, certificate=certificate)
        spent += baseline.evaluations
    if method == "linear" and not options:
        path = baseline
    elif max(la, lb) > level:  # no path can stay below u: do not run the method for a foregone answer
        path = replace(baseline, info={"skipped": f"an endpoint loss is above the level {level:g}"})
    else:
        shown.stage(f"search ({method})")
        searcher = counted if search_samples is None else Counted(problem.subset(search_samples), shown.count)
        searching = time.perf_counter()
        found = METHODS[method](Endpoints(searcher, start, end, la, lb, level), generator=generator, **options)
        searched = time.perf_counter() - searching
        seconds = time_budget(searched) if proof_seconds is None else float(proof_seconds)
        proof = {"seconds": None if math.isinf(seconds) else seconds}
        if searcher is not counted:  # the method's losses were on the subset: the certificate re-evaluates them
            spent += searcher.evaluations
            found = replace(found, losses=counted.loss(found.points))
        if shorten and found.n_points > 2:
            shown.stage("shortening and certificate")
            proof["on_round"] = _proof_shown(shown, "shortening and certificate", found.level)
            path, extra = _shortened(problem, counted, found, max(la, lb), resolution, certificate, proof)
        else:
            shown.stage(f"certificate ({certificate})")
            proof["on_round"] = _proof_shown(shown, f"certificate ({certificate})", level)
            path = certify(problem, found, level, resolution=resolution, certificate=certificate,
                           values=counted.dense_of(found.points, resolution),  # the method's last check, if any
                           zoomed=counted.zoom_of(found.points, resolution), **proof)
            extra = path.evaluations - found.evaluations
        spent += extra
        shown.count(extra)
    info = {**path.info, "linear_max_loss": baseline.max_loss, "linear_barrier": baseline.barrier,
            "linear_status": baseline.status, "bn": getattr(problem, "bn", None), "search_samples": search_samples}
    if aligned is not None:
        info["alignment"] = aligned
    return replace(path, method=method, info=info, evaluations=counted.evaluations + spent)


def _measured(straight: Path, start: torch.Tensor, end: torch.Tensor, resolution: int, align: str
              ) -> tuple[float, float]:
    """The endpoint losses of a straight segment passed to :func:`connect`, once it is checked to be that segment."""
    if not isinstance(straight, Path) or straight.n_points != 2 or straight.dense_max_loss is None:
        raise LandscapeError("straight must be a certified straight segment (a Path of 2 points checked densely)")
    if not (torch.equal(straight.points[0], start) and torch.equal(straight.points[1], end)):
        raise LandscapeError("straight does not join start and end; pass the segment between these endpoints")
    if straight.resolution != resolution:
        raise LandscapeError(f"straight was certified at resolution {straight.resolution}, not {resolution}")
    if align != "none":
        raise LandscapeError("straight cannot be combined with align (the alignment moves the end)")
    return float(straight.losses[0]), float(straight.losses[1])


__all__ = ["DEFAULT_METHOD", "METHODS", "connect", "method_options"]


def _proof_shown(shown: Progress, stage: str, level: float):
    """A proof's ``on_round`` that names its round, pieces settled and open, and worst open bound on ``shown``."""
    def on_round(rounds: int, settled: int, opened: int, worst: float) -> None:
        shown.stage(f"{stage}: proof round {rounds}, {settled:,} settled, {opened:,} open, "
                    f"worst {against(worst, level)}")
    return on_round


def _shortened(problem: Problem, counted: Counted, found: Path, floor: float, resolution: int,
               certificate: str, proof: dict | None = None) -> tuple[Path, int]:
    """Shorten a method's path below its level and certify it; the path as found if the shorter one fails."""
    points, figures = shorten_path(counted, found.points, found.level, floor)
    short = replace(found, points=points, losses=counted.loss(points), t=None, info=dict(found.info))
    proof = proof or {}
    path = certify(problem, short, found.level, resolution=resolution, certificate=certificate, **proof)
    spent = path.evaluations - found.evaluations
    figures["kept"] = path.status == "connected"
    if not figures["kept"]:  # the shorter path did not pass: the one found stands (it is certified on its own)
        path = certify(problem, found, found.level, resolution=resolution, certificate=certificate, **proof)
        spent += path.evaluations - found.evaluations
    return replace(path, info={**path.info, "shorten": figures}), spent
