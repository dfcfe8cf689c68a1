"""The certificate of a path at a level: a proof where the problem allows one, else a dense check.

Every path :func:`landscape.connect` returns passes through :func:`certify`, which says which of two
certificates stands behind a ``connected``:

- ``"bound"``: a proof. The problem bounds its loss over whole pieces of every segment
  (:meth:`Problem.segment_bounds`, bound propagation for networks of known layers) and branch and bound
  (:mod:`.proof`) settles every piece below u: the loss is ≤ u at *every* point of the path
  (computed in float64 with a relative rounding guard of 1e-9).
- ``"grid"``: a dense check. The loss at ``resolution`` points a segment, refined around the highest
  maxima, stays ≤ u; a feature narrower than the grid's ``spacing`` (the largest parameter-space
  distance between checked points) can still hide. Problems without bounds get this one (their
  reason in ``info["proof"]``, status ``"unsupported"``), and so does a path whose proof ran out
  of budget (said in ``info["proof"]``).

A ``not_found`` path holds a point above u (or not finite) that was evaluated: that claim is certain.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from .._errors import LandscapeError
from .._registry import Registry
from ..problems.problem import Problem
from .path import Path
from .proof import prove_below

#: How :func:`certify` may back a ``connected``: ``"auto"`` proves where the problem can bound its loss
#: and checks densely elsewhere; ``"bound"`` insists on the proof; ``"grid"`` checks densely only.
CERTIFICATES = Registry("certificate", ("auto", "bound", "grid"))

#: Default sub-intervals per segment in the dense check. Grids of resolution R and 2R are nested,
#: so doubling the resolution only adds points.
DEFAULT_RESOLUTION = 32

#: Bytes of interpolated points one block of :func:`dense_losses` may hold (the loss itself is chunked
#: further by the problem). Keeps the dense check of a long path over a large network in bounded memory.
DENSE_BLOCK_BYTES = 64 << 20


def dense_losses(problem: Problem, points: torch.Tensor, resolution: int = DEFAULT_RESOLUTION) -> torch.Tensor:
    """Loss at every point of every segment cut into ``resolution`` sub-intervals, knots included.

    The points are those of :func:`interpolate` (same order, each knot once); they are generated
    a block of segments at a time (at most :data:`DENSE_BLOCK_BYTES`, and about ``problem.max_points``
    points when a memory budget set it), each block one batched ``problem.loss`` call, so memory stays
    bounded however long the path and large the network.

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
    block = _segments_per_block(problem, points, resolution)
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


def segment_losses(problem: Problem, a: torch.Tensor, b: torch.Tensor, resolution: int = DEFAULT_RESOLUTION
                   ) -> torch.Tensor:
    """Loss at ``resolution`` + 1 evenly spaced points of each segment ``a[i] → b[i]``, both ends included:
    segments that need not be consecutive (a chain's changed segments), blocked as :func:`dense_losses`.

    Returns
    -------
    Tensor, shape (M, resolution + 1)
    """
    m, d = a.shape
    block = _segments_per_block(problem, a, resolution + 1)
    s = torch.arange(resolution + 1, dtype=a.dtype, device=a.device) / resolution
    out = []
    for i in range(0, m, block):
        u, v = a[i:i + block], b[i:i + block]
        out.append(problem.loss((u[:, None, :] + s[None, :, None] * (v - u)[:, None, :]).reshape(-1, d)))
    return torch.cat(out).view(m, resolution + 1)


def _segments_per_block(problem, points: torch.Tensor, per_segment: int) -> int:
    """Segments of ``per_segment`` points each that one block holds: at most :data:`DENSE_BLOCK_BYTES` of
    points, and about ``problem.max_points`` points when a memory budget set it (its K)."""
    block = max(1, DENSE_BLOCK_BYTES // max(per_segment * points.shape[1] * points.element_size(), 1))
    cap = getattr(problem, "max_points", None)
    return block if cap is None else max(1, min(block, cap // per_segment))


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


def certify(problem: Problem, path: Path, level: float | None = None, *, resolution: int = DEFAULT_RESOLUTION,
            zoom: int = ZOOM_PASSES, certificate: str = "auto", budget: int | None = None,
            values: torch.Tensor | None = None, zoomed: tuple[float, float] | None = None) -> Path:
    """State a path's claim at a level: dense evaluation of every segment, then a proof where possible.

    The grid of ``resolution`` sub-intervals per segment is evaluated first (batched); then, ``zoom``
    times, the few highest local maxima of the grid are bracketed by their neighbours and re-sampled
    ``ZOOM_POINTS`` times finer, so that a smooth peak between two grid points is found to within
    (1/(resolution·8^zoom))² of its height. If that maximum is ≤ u, the path is proven ≤ u by branch
    and bound on bounds of the loss over whole pieces (:mod:`.proof`) where the problem has them.

    Parameters
    ----------
    problem : Problem
    path : Path
    level : float, optional
        The level u (the path's own when None). ``status`` becomes ``"connected"`` if the loss is ≤ u
        on the whole path (certificate ``"bound"``) or on the dense grid (``"grid"``), else
        ``"not_found"``; ``"unchecked"`` when there is no level.
    resolution : int
        Sub-intervals per segment: (N − 1)·resolution + 1 evaluations, batched (see :func:`dense_losses`).
    zoom : int
        Refinement passes around the maxima (0: the grid alone).
    certificate : {"auto", "bound", "grid"}
        See :data:`CERTIFICATES`. ``"bound"`` on a problem without bounds is an error.
    budget : int, optional
        Pieces the proof may bound before it gives up and the dense check stands; default
        :func:`landscape.paths.proof.default_budget` (20,000, fewer where one point is costly).
    values : Tensor, shape ((N − 1)·resolution + 1,), optional
        The grid's losses when the caller has just evaluated them on this very path and problem (a
        method's last check, :meth:`Counted.dense_of`): they are used, not evaluated (nor counted) again.
    zoomed : (float, float), optional
        With ``values``: the peak and its position (knot units) that zooming into them at ``zoom`` passes
        found (:meth:`Counted.zoom_of`, a string's last check); used instead of zooming again.

    Returns
    -------
    Path
        A copy with ``dense_max_loss``, ``dense_argmax`` (its position t), ``resolution``, ``status``,
        ``level``, ``certificate``, ``bound`` (the proven upper bound) or ``spacing`` (the grid's) set,
        ``losses`` re-evaluated at the knots, ``info["proof"]`` when a proof was tried, and
        ``evaluations`` increased by every loss evaluated here.
    """
    CERTIFICATES.lookup(certificate)
    spent = 0
    if values is None:
        values = dense_losses(problem, path.points, resolution)
        spent = int(values.shape[0])
    elif values.shape != ((path.n_points - 1) * resolution + 1,):
        raise LandscapeError(f"values has shape {tuple(values.shape)}, not the {(path.n_points - 1) * resolution + 1} "
                             f"dense losses of a {path.n_points}-point path at resolution {resolution}")
    level = path.level if level is None else float(level)
    info = dict(path.info)
    finite = torch.isfinite(values)
    if not finite.all():  # a point where the loss is not finite is not below any level
        where = int(torch.nonzero(~finite)[0])
        peak, argmax_t = float("inf"), float(path.dense_t(resolution)[where])
        info["non_finite_at"] = argmax_t
    else:
        if zoomed is not None and spent == 0 and zoom == ZOOM_PASSES:
            (peak, where), extra = zoomed, 0
        else:
            peak, where, extra = (float(v[0]) for v in refine_maximum(problem.loss, path.points[None], values[None],
                                                                      resolution, passes=zoom))
        spent += int(extra)
        seg = min(int(where), path.n_points - 2)
        argmax_t = float(path.t[seg] + (where - seg) * (path.t[seg + 1] - path.t[seg]))
    checked = replace(path, losses=values[::resolution].clone(), level=level, status=verdict(peak, level),
                      dense_max_loss=peak, dense_argmax=argmax_t, resolution=resolution,
                      evaluations=path.evaluations + spent, info=info)
    return settle(problem, checked, certificate=certificate, budget=budget)


def settle(problem: Problem, path: Path, *, certificate: str = "auto", budget: int | None = None) -> Path:
    """Back the claim of a densely checked path: prove it where the problem can, else keep the dense check.

    Parameters
    ----------
    problem : Problem
    path : Path
        With ``dense_max_loss``, ``resolution``, ``level`` and ``status`` from the dense check.
    certificate : {"auto", "bound", "grid"}
    budget : int, optional
        See :func:`certify`.

    Returns
    -------
    Path
        A copy with ``certificate``, ``bound`` and ``spacing`` set (see :func:`certify`).
    """
    CERTIFICATES.lookup(certificate)
    spacing = float((path.points[1:] - path.points[:-1]).norm(dim=1).max()) / path.resolution
    if path.level is None:
        return replace(path, certificate=None, bound=None, spacing=spacing)
    status, peak, argmax_t = path.status, path.dense_max_loss, path.dense_argmax
    info = {k: v for k, v in path.info.items() if k != "proof"}  # a proof of another level says nothing here
    used, bound, spent = "grid", None, 0
    if status == "connected" and certificate != "grid":
        proof = prove_below(problem, path.points, path.level, budget=budget)
        spent = proof.evaluations
        if proof.status == "unsupported" and certificate == "bound":
            raise LandscapeError(f"problem {problem.name!r} cannot bound its loss over segments ({proof.reason}); "
                                 "use certificate 'grid' or 'auto'")
        if proof.status != "unsupported":
            info["proof"] = proof.summary()
        else:  # the dense check stands, and the result says why
            info["proof"] = {"status": "unsupported", "reason": proof.reason}
        if proof.status == "proven":
            used, bound = "bound", proof.bound
        elif proof.status == "refuted":
            used, status = "bound", "not_found"
            found = proof.witness["loss"]
            peak = max(peak, found) if math.isfinite(found) else float("inf")
            argmax_t = _position(path, proof.witness)
    return replace(path, status=status, dense_max_loss=peak, dense_argmax=argmax_t, certificate=used, bound=bound,
                   spacing=spacing, evaluations=path.evaluations + spent, info=info)


def _position(path: Path, witness: dict) -> float:
    """The position t along the path of a proof's witness (a segment and a position in it)."""
    seg = witness["segment"]
    return float(path.t[seg] + witness["t"] * (path.t[seg + 1] - path.t[seg]))


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
        got = torch.nan_to_num(got, nan=float("inf"), posinf=float("inf"), neginf=float("-inf"))  # NaN: not below
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
