"""The straight segment: the baseline every report shows, its certified max loss and its barrier.

One evaluation serves every straight segment in the package: :func:`straight_paths` checks many
segments at once (the valley search's batches, ``connect``'s baseline, :func:`barrier`) with the
grid and zoom of :func:`landscape.certify`, so a straight segment is certified exactly as any path.
"""

from __future__ import annotations

from functools import partial

import torch

from .._errors import LandscapeError
from ..problems.problem import Problem
from ._common import Endpoints, check_count, check_endpoints
from .certify import DEFAULT_RESOLUTION, ZOOM_PASSES, refine_maximum, settle, verdict
from .path import Path

#: Points of one batched call of :func:`straight_paths` (bounds memory: ``MAX_POINTS × D`` values).
MAX_POINTS = 1 << 16


def _knots(start: torch.Tensor, end: torch.Tensor, n_points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_points`` evenly spaced points from ``start`` to ``end`` (N, D), and their positions t (N,)."""
    t = torch.linspace(0, 1, n_points, dtype=start.dtype, device=start.device)
    return (1 - t[:, None]) * start + t[:, None] * end, t


def linear_path(problem: Problem, start: torch.Tensor, end: torch.Tensor, *, n_points: int = 2) -> Path:
    """The straight segment from ``start`` to ``end`` with ``n_points`` evenly spaced knots, uncertified.

    Returns
    -------
    Path
        ``points`` (n_points, D) and their ``losses``; :func:`landscape.certify` checks it densely
        (for the certified segment at once, see :func:`straight_paths` and :func:`barrier`).
    """
    points, t = _knots(start, end, n_points)
    return Path(points, problem.loss(points), t, method="linear", evaluations=n_points)


def linear(ends: Endpoints, *, generator=None, n_points: int = 2) -> Path:
    """The straight segment between the endpoints, with ``n_points`` evenly spaced knots.

    Its dense max loss is the linear-interpolation barrier of Goodfellow et al. (2015), the
    number every other method is compared with.

    Parameters
    ----------
    ends : Endpoints
        What :func:`landscape.connect` checked and evaluated once (endpoints, their losses, the level).
    generator : torch.Generator, optional
        Unused (the segment is deterministic); accepted for the common signature.
    n_points : int
        Knots, endpoints included (≥ 2).

    Returns
    -------
    Path
        Uncertified (``status="unchecked"``); :func:`landscape.connect` certifies it.
    """
    check_count(n_points=n_points)
    if n_points < 2:
        raise LandscapeError(f"option n_points of linear must be >= 2 (the endpoints), got {n_points}")
    points, t = _knots(ends.start, ends.end, n_points)
    inner = ends.problem.loss(points[1:-1]) if n_points > 2 else points.new_empty(0)
    losses = torch.cat([points.new_tensor([ends.loss_start]), inner, points.new_tensor([ends.loss_end])])
    return Path(points, losses, t, method="linear", level=ends.level, evaluations=ends.problem.evaluations,
                info=ends.problem.figures())


def straight_paths(problem: Problem, starts: torch.Tensor, ends: torch.Tensor, *, level: float | None = None,
                   losses: torch.Tensor | None = None, resolution: int = DEFAULT_RESOLUTION, zoom: int = ZOOM_PASSES,
                   split: str = "train", certificate: str = "auto", budget: int | None = None) -> list[Path]:
    """The straight segments ``starts[k] → ends[k]``, certified together in batched evaluations.

    Each segment is cut into ``resolution`` sub-intervals and refined ``zoom`` times around its
    highest local maxima, as :func:`landscape.certify` does for any path, but the P segments share
    each batched ``problem.loss`` call (at most :data:`MAX_POINTS` points a call, or ``problem.max_points``).

    Parameters
    ----------
    problem : Problem
    starts, ends : Tensor, shape (P, D)
    level : float, optional
        Each path's status is stated at this level (``"unchecked"`` when None).
    losses : Tensor, shape (P, 2), optional
        L(starts[k]), L(ends[k]) when already known (then not evaluated again).
    resolution : int
    zoom : int
    split : str
        The data split of the loss.
    certificate : {"auto", "bound", "grid"}
        How a segment below ``level`` is backed (see :func:`landscape.certify`; training split only).
    budget : int, optional
        Pieces a proof may bound (see :func:`landscape.certify`).

    Returns
    -------
    list of Path
        P two-knot paths (method ``"linear"``) with ``dense_max_loss``, ``dense_argmax``, ``status``,
        ``certificate`` and ``evaluations`` (the losses evaluated for that segment) set; a segment where
        the loss is not finite has ``dense_max_loss = inf`` and is ``not_found`` at any level.
    """
    if starts.dim() != 2 or starts.shape != ends.shape:
        raise LandscapeError(f"straight segments need starts and ends of one shape (P, D), got "
                             f"{tuple(starts.shape)} and {tuple(ends.shape)}")
    if not (isinstance(resolution, int) and resolution >= 1):
        raise LandscapeError(f"resolution must be a positive integer, got {resolution!r}")
    if losses is not None and tuple(losses.shape) != (starts.shape[0], 2):
        raise LandscapeError(f"losses must have shape ({starts.shape[0]}, 2), one pair per segment, got "
                             f"{tuple(losses.shape)}")
    loss = problem.loss if split == "train" else partial(problem.loss, split=split)
    p = starts.shape[0]
    cap = min(MAX_POINTS, getattr(problem, "max_points", None) or MAX_POINTS)
    step = max(1, cap // (resolution + 1))
    out = []
    for i in range(0, p, step):
        a, b = starts[i:i + step], ends[i:i + step]
        known = None if losses is None else losses[i:i + step].to(torch.float64).cpu()
        out += _check_segments(loss, a, b, known, resolution, zoom, level)
    if split != "train":
        return out
    return [settle(problem, path, certificate=certificate, budget=budget) for path in out]


def _check_segments(loss, a, b, known, resolution, zoom, level) -> list[Path]:
    s = torch.arange(resolution + 1, dtype=a.dtype, device=a.device) / resolution
    if known is not None:
        s = s[1:-1]  # the endpoints' losses are known
    grid = a[:, None, :] + s[None, :, None] * (b - a)[:, None, :]  # [P, S, D]
    values = (loss(grid.reshape(-1, a.shape[1])).reshape(a.shape[0], -1).to(torch.float64).cpu() if s.numel()
              else torch.empty(a.shape[0], 0, dtype=torch.float64))
    if known is not None:
        values = torch.cat([known[:, :1], values, known[:, 1:]], 1)
    knots = torch.stack([a, b], 1)
    finite = torch.isfinite(values).all(1)
    peak = torch.full((a.shape[0],), float("inf"), dtype=torch.float64)
    where = (~torch.isfinite(values)).to(torch.float64).argmax(1).to(torch.float64) / resolution  # first bad point
    extra = torch.zeros(a.shape[0], dtype=torch.long)
    if finite.any():  # a segment where the loss is not finite is not below any level: nothing to refine
        peak[finite], where[finite], extra[finite] = refine_maximum(loss, knots[finite], values[finite],
                                                                    resolution, passes=zoom)
    grid_cost = grid.shape[1]
    t = torch.tensor([0.0, 1.0], dtype=a.dtype, device=a.device)
    return [Path(knots[k], values[k, [0, -1]].to(a), t.clone(), method="linear", level=level,
                 status=verdict(float(peak[k]), level), dense_max_loss=float(peak[k]), dense_argmax=float(where[k]),
                 resolution=resolution, evaluations=grid_cost + int(extra[k]))
            for k in range(a.shape[0])]


def straight_path(problem: Problem, start: torch.Tensor, end: torch.Tensor, *, level: float | None = None,
                  losses: tuple[float, float] | None = None, resolution: int = DEFAULT_RESOLUTION,
                  certificate: str = "auto") -> Path:
    """The straight segment from ``start`` to ``end``, certified (one row of :func:`straight_paths`).

    Parameters
    ----------
    start, end : Tensor, shape (D,)
    losses : (float, float), optional
        L(start), L(end) when already known.
    """
    known = None if losses is None else torch.tensor([list(losses)], dtype=torch.float64)
    return straight_paths(problem, start[None], end[None], level=level, losses=known, resolution=resolution,
                          certificate=certificate)[0]


def straight_max_losses(problem: Problem, thetas: torch.Tensor, pairs, *,
                        resolution: int = DEFAULT_RESOLUTION) -> torch.Tensor:
    """Certified max loss of the straight segments between many pairs of points (:func:`straight_paths`).

    Parameters
    ----------
    thetas : Tensor, shape (N, D)
    pairs : sequence of (int, int)

    Returns
    -------
    Tensor (float64), shape (len(pairs),)
    """
    pairs = list(pairs)
    i, j = ([p[0] for p in pairs], [p[1] for p in pairs])
    paths = straight_paths(problem, thetas[i], thetas[j], resolution=resolution)
    return torch.tensor([p.max_loss for p in paths], dtype=torch.float64)


def barrier(problem: Problem, a: torch.Tensor, b: torch.Tensor, *, resolution: int = DEFAULT_RESOLUTION,
            split: str = "train") -> float:
    """The loss barrier of the straight segment from ``a`` to ``b``: its max loss above the worse endpoint.

    .. math:: B(a, b) = \\max_{t \\in [0, 1]} L((1 - t) a + t b) - \\max(L(a), L(b)) \\ge 0

    the linear-interpolation barrier of Goodfellow, Vinyals & Saxe (ICLR 2015), used to compare
    minima before and after alignment (Entezari et al., ICLR 2022; Ainsworth et al., ICLR 2023).
    The max is certified as any path's (:func:`landscape.certify`): a grid of ``resolution``
    sub-intervals refined around its highest local maxima.

    Parameters
    ----------
    problem : Problem
    a, b : Tensor, shape (D,)
        The two endpoints (one dtype and device, finite; equal points have barrier 0).
    resolution : int
        Sub-intervals of the grid.
    split : str
        The data split of the loss (``"test"``: the barrier of the test loss).

    Returns
    -------
    float
        B(a, b); 0 when the segment never rises above its worse endpoint.

    Examples
    --------
    >>> well = landscape.make_problem("double_well")
    >>> round(landscape.barrier(well, *well.minima), 3)  # the saddle's height above the higher minimum
    0.717
    """
    a, b = check_endpoints(problem, a, b, distinct=False)
    return straight_paths(problem, a[None], b[None], resolution=resolution, split=split)[0].barrier


__all__ = ["MAX_POINTS", "barrier", "linear", "linear_path", "straight_max_losses", "straight_path", "straight_paths"]
