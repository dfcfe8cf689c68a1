"""The dense certification of a path at a level: the loss along every segment, zoomed in on its maxima.

A path is ``connected`` at level u only if the loss, evaluated densely along every segment (knots
included) and refined around its highest points, never exceeds u; :func:`certify` states that
claim, and every path :func:`landscape.connect` returns passes through it.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from .._errors import LandscapeError
from ..problems.problem import Problem
from .path import Path

#: Default sub-intervals per segment in the dense check. Grids of resolution R and 2R are nested,
#: so doubling the resolution only adds points.
DEFAULT_RESOLUTION = 32

#: Bytes of interpolated points one block of :func:`dense_losses` may hold (the loss itself is chunked
#: further by the problem). Keeps the dense check of a long path over a large network in bounded memory.
DENSE_BLOCK_BYTES = 64 << 20


def dense_losses(problem: Problem, points: torch.Tensor, resolution: int = DEFAULT_RESOLUTION) -> torch.Tensor:
    """Loss at every point of every segment cut into ``resolution`` sub-intervals, knots included.

    The points are those of :func:`interpolate` (same order, each knot once); they are generated
    a block of segments at a time (at most :data:`DENSE_BLOCK_BYTES`), each block one batched
    ``problem.loss`` call, so memory stays bounded however long the path and large the network.

    Parameters
    ----------
    problem : Problem
    points : Tensor, shape (N, D)
    resolution : int

    Returns
    -------
    Tensor, shape ((N − 1)·resolution + 1,)
        Use :func:`segment_view` for the (N − 1, resolution + 1) view, one row per segment.
    """
    if resolution < 1:
        raise LandscapeError(f"resolution must be >= 1, got {resolution}")
    n, d = points.shape
    per_segment = resolution * d * points.element_size()
    block = max(1, DENSE_BLOCK_BYTES // max(per_segment, 1))
    s = torch.arange(resolution, dtype=points.dtype, device=points.device) / resolution
    out = []
    for i in range(0, n - 1, block):
        j = min(i + block, n - 1)
        a, b = points[i:j], points[i + 1:j + 1]
        dense = (a[:, None, :] + s[None, :, None] * (b - a)[:, None, :]).reshape(-1, d)
        if j == n - 1:  # the last knot closes the last block: a short path is one batched call
            dense = torch.cat([dense, points[-1:]])
        out.append(problem.loss(dense))
    return torch.cat(out)


def segment_view(values: torch.Tensor, resolution: int) -> torch.Tensor:
    """The dense losses of :func:`dense_losses` as one row per segment, both knots included.

    Returns
    -------
    Tensor, shape (N − 1, resolution + 1)
        Row i holds the losses from knot i to knot i + 1 (a view; knots shared by two rows).
    """
    return values.unfold(0, resolution + 1, resolution)


#: Zoom passes of :func:`certify` around the highest local maxima of the dense grid, the candidates
#: followed, and the sub-points per side in each pass. Each pass shrinks the uncertainty on the
#: position of a smooth maximum by ``ZOOM_POINTS``, its error on the height by ``ZOOM_POINTS``².
ZOOM_PASSES, ZOOM_CANDIDATES, ZOOM_POINTS = 2, 4, 8


def certify(problem: Problem, path: Path, level: float | None = None, *,
            resolution: int = DEFAULT_RESOLUTION, zoom: int = ZOOM_PASSES) -> Path:
    """Evaluate the loss densely along every segment (batched), zoom in on its maxima, and state the claim.

    The grid of ``resolution`` sub-intervals per segment is evaluated first; then, ``zoom`` times,
    the few highest local maxima of the grid are bracketed by their neighbours and re-sampled
    ``ZOOM_POINTS`` times finer (one batched call a pass), so that a smooth peak between two grid
    points is found to within (1/(resolution·8^zoom))² of its height instead of (1/resolution)².
    A narrower spike than the grid can still hide; raise ``resolution`` for rough losses.

    Parameters
    ----------
    problem : Problem
    path : Path
    level : float, optional
        The level u. ``status`` becomes ``"connected"`` if the max loss found is ≤ u, else
        ``"not_found"``; ``"unchecked"`` when no level is given (and the path has none).
    resolution : int
        Sub-intervals per segment: (N − 1)·resolution + 1 evaluations, batched (see :func:`dense_losses`).
    zoom : int
        Refinement passes around the maxima (0: the grid alone).

    Returns
    -------
    Path
        A copy with ``dense_max_loss``, ``dense_argmax`` (its position t), ``resolution``, ``status``
        and ``level`` set, ``losses`` re-evaluated at the knots, and ``evaluations`` increased by every
        evaluation made here.
    """
    values = dense_losses(problem, path.points, resolution)
    t = path.dense_t(resolution)
    if not torch.isfinite(values).all():
        where = float(t[~torch.isfinite(values)][0])
        raise LandscapeError(f"the loss is not finite along the path (at t = {where:.3f}); "
                             "check the endpoints and the problem's data")
    peak, where, extra = (float(v[0]) for v in refine_maximum(problem.loss, path.points[None], values[None],
                                                              resolution, passes=zoom))
    seg = min(int(where), path.n_points - 2)
    frac = where - seg
    argmax_t = float(path.t[seg] + frac * (path.t[seg + 1] - path.t[seg]))
    level = path.level if level is None else float(level)
    return replace(path, losses=values[::resolution].clone(), level=level, status=verdict(peak, level),
                   dense_max_loss=peak, dense_argmax=argmax_t, resolution=resolution,
                   evaluations=path.evaluations + int(values.shape[0]) + int(extra), info=dict(path.info))


def refine_maximum(loss, points: torch.Tensor, values: torch.Tensor, resolution: int, *,
                   passes: int = ZOOM_PASSES, candidates: int = ZOOM_CANDIDATES,
                   subdivisions: int = ZOOM_POINTS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The max loss along P polylines at once, from their dense grids refined around the top local maxima.

    Each pass re-samples ``2·subdivisions`` points around each of the ``candidates`` highest local
    maxima of every row (one batched ``loss`` call for all rows), ``subdivisions`` times finer than
    the pass before.

    Parameters
    ----------
    loss : callable
        ``loss(thetas [K, D]) -> [K]`` (``problem.loss``).
    points : Tensor, shape (P, N, D)
        The knots of P polylines of N knots each.
    values : Tensor, shape (P, (N − 1)·resolution + 1)
        Their dense losses (the points of :func:`landscape.paths.path.interpolate`, row by row).
    resolution : int

    Returns
    -------
    peak : Tensor (float64, CPU), shape (P,)
        The highest loss found on each row (≥ its grid's max).
    where : Tensor (float64, CPU), shape (P,)
        Its position in knot units (segment index + fraction), in [0, N − 1].
    evaluations : Tensor (int64, CPU), shape (P,)
        Losses evaluated by the refinement, per row.
    """
    p, n, _ = points.shape
    values = values.to(torch.float64).cpu()
    peak, best = values.max(1)
    where = best.to(torch.float64) / resolution
    spent = torch.zeros(p, dtype=torch.long)
    if passes <= 0 or values.shape[1] < 3:
        return peak, where, spent
    low = values.new_full((p, 1), float("-inf"))
    left, right = torch.cat([low, values[:, :-1]], 1), torch.cat([values[:, 1:], low], 1)
    local = (values >= left) & (values >= right) & (values > float("-inf"))
    current, index = values.masked_fill(~local, float("-inf")).topk(min(candidates, values.shape[1]), dim=1)
    valid = torch.isfinite(current)  # rows with fewer local maxima than candidates
    pos = index.to(torch.float64) / resolution  # [P, k]
    width = 1.0 / resolution
    steps = torch.cat([torch.arange(-subdivisions, 0), torch.arange(1, subdivisions + 1)]).to(torch.float64)
    rows = torch.arange(p)[:, None, None].expand(-1, pos.shape[1], steps.numel())[valid].reshape(-1)
    rows = rows.to(points.device)
    for _ in range(passes):
        at = (pos[:, :, None] + steps * (width / subdivisions)).clamp(0, n - 1)  # [P, k, 2m]
        seg = at.floor().long().clamp(max=n - 2)
        frac = (at - seg)[valid].reshape(-1, 1).to(device=points.device, dtype=points.dtype)
        seg = seg[valid].reshape(-1).to(points.device)
        sample = (1 - frac) * points[rows, seg] + frac * points[rows, seg + 1]
        got = torch.full(at.shape, float("-inf"), dtype=torch.float64)
        got[valid] = loss(sample).to(torch.float64).cpu().reshape(-1, steps.numel())
        spent += valid.sum(1) * steps.numel()
        if not torch.isfinite(got[valid]).all():
            raise LandscapeError("the loss is not finite along the path; check the endpoints and the problem's data")
        top, arg = got.max(2)
        pos = torch.where(top > current, at.gather(2, arg[..., None])[..., 0], pos)
        current = torch.maximum(top, current)
        width /= subdivisions
    top, arg = current.max(1)
    higher = top > peak
    peak = torch.where(higher, top, peak)
    where = torch.where(higher, pos.gather(1, arg[:, None])[:, 0], where)
    return peak, where, spent


def verdict(peak: float, level: float | None) -> str:
    """The status of a path whose max loss is ``peak`` at ``level`` (one of :data:`STATUSES`)."""
    if level is None:
        return "unchecked"
    return "connected" if peak <= level else "not_found"


def default_level(loss_a: float, loss_b: float, *, margin: float = 0.1) -> float:
    """The level asked when none is given: ``max(L(a), L(b)) · (1 + margin)``.

    As Dynamic String Sampling's m = 1.1 (Freeman & Bruna, ICLR 2017): a path is sought that
    stays within 10% of the worse endpoint. For a non-positive endpoint loss the margin is
    added instead of multiplied, so the level is always above both endpoints.
    """
    top = max(float(loss_a), float(loss_b))
    if not math.isfinite(top):
        raise LandscapeError(f"endpoint losses must be finite, got {loss_a} and {loss_b}")
    return top * (1 + margin) if top > 0 else top + margin
