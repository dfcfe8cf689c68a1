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
Both claims hold in float64: a float32 loss within rounding of u (:func:`rounding_margin`) decides nothing
by itself; the points where it falls are evaluated again in float64 (:func:`recheck`), and
``info["decided_in"]`` names the precision that decided the status.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from .._errors import LandscapeError
from .._registry import Registry
from ..problems.problem import Problem
from .path import Path
from ._rounding import precision, rounding_margin
from .dense import (DEFAULT_RESOLUTION, DENSE_BLOCK_BYTES, segments_per_block, dense_losses,  # noqa: F401
                    segment_losses, segment_view)
from .proof import prove_below

#: How :func:`certify` may back a ``connected``: ``"auto"`` proves where the problem can bound its loss
#: and checks densely elsewhere; ``"bound"`` insists on the proof; ``"grid"`` checks densely only.
CERTIFICATES = Registry("certificate", ("auto", "bound", "grid"))

#: Zoom passes of :func:`certify` around the highest local maxima of the dense grid, the candidates
#: followed, and the sub-points per side in each pass. Each pass shrinks the uncertainty on the
#: position of a smooth maximum by ``ZOOM_POINTS``, its error on the height by ``ZOOM_POINTS``² (then a vertex).
ZOOM_PASSES, ZOOM_CANDIDATES, ZOOM_POINTS = 2, 4, 8


def certify(problem: Problem, path: Path, level: float | None = None, *, resolution: int = DEFAULT_RESOLUTION,
            zoom: int = ZOOM_PASSES, certificate: str = "auto", budget: int | None = None,
            values: torch.Tensor | None = None, zoomed: tuple[float, float] | None = None,
            seconds: float | None = None, on_round=None) -> Path:
    """State a path's claim at a level: dense evaluation of every segment, then a proof where possible.

    The grid of ``resolution`` sub-intervals per segment is evaluated first (batched); then, ``zoom``
    times, the few highest local maxima of the grid are bracketed by their neighbours and re-sampled
    ``ZOOM_POINTS`` times finer, then each peak's parabola vertex is evaluated: a smooth peak between two grid
    points is found to order (1/(resolution·8^zoom))⁴ of its height. If it is ≤ u, the path is proven ≤ u by
    branch and bound on bounds of the loss over whole pieces (:mod:`.proof`) where the problem has them.

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
    seconds : float, optional
        The proof's time budget (see :func:`landscape.paths.proof.prove_below`); None: pieces alone limit it.
    on_round : callable, optional
        Told the proof's progress after every round (``on_round(rounds, settled, open, worst)``).
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
        ``losses`` re-evaluated at the knots, ``info["proof"]`` when a proof was tried,
        ``info["decided_in"]`` (the precision that decided the status; see :func:`recheck`), and
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
    samples = None
    finite = torch.isfinite(values)
    if not finite.all():  # a point where the loss is not finite is not below any level
        where = int(torch.nonzero(~finite)[0])
        peak, argmax_t = float("inf"), float(path.dense_t(resolution)[where])
        info["non_finite_at"] = argmax_t
    else:
        if zoomed is not None and spent == 0 and zoom == ZOOM_PASSES:
            (peak, where), extra = zoomed, 0
        else:
            samples = []  # the zoom's points, for the float64 recheck near u
            peak, where, extra = (float(v[0]) for v in refine_maximum(problem.loss, path.points[None], values[None],
                                                                      resolution, passes=zoom, seen=samples))
        spent += int(extra)
        argmax_t = _t_at(path, where)
    checked = replace(path, losses=values[::resolution].clone(), level=level, status=verdict(peak, level),
                      dense_max_loss=peak, dense_argmax=argmax_t, resolution=resolution,
                      evaluations=path.evaluations + spent, info=info)
    return settle(problem, checked, certificate=certificate, budget=budget, values=values, samples=samples,
                  seconds=seconds, on_round=on_round)


def settle(problem: Problem, path: Path, *, certificate: str = "auto", budget: int | None = None,
           values: torch.Tensor | None = None, samples: list | None = None, seconds: float | None = None,
           on_round=None) -> Path:
    """Back the claim of a densely checked path: prove it where the problem can, else keep the dense check.

    A dense maximum within rounding of the level is first decided in float64 (:func:`recheck`).

    Parameters
    ----------
    problem : Problem
    path : Path
        With ``dense_max_loss``, ``resolution``, ``level`` and ``status`` from the dense check.
    certificate : {"auto", "bound", "grid"}
    budget, seconds, on_round : optional
        See :func:`certify`.
    values, samples : optional
        The dense check's grid and zoom, for :func:`recheck` (evaluated again there, only when needed, if not
        given).

    Returns
    -------
    Path
        A copy with ``certificate``, ``bound``, ``spacing`` and ``info["decided_in"]`` set (see :func:`certify`).
    """
    CERTIFICATES.lookup(certificate)
    spacing = float((path.points[1:] - path.points[:-1]).norm(dim=1).max()) / path.resolution
    if path.level is None:
        return replace(path, certificate=None, bound=None, spacing=spacing)
    path = recheck(problem, path, values=values, samples=samples)
    status, peak, argmax_t = path.status, path.dense_max_loss, path.dense_argmax
    info = {k: v for k, v in path.info.items() if k != "proof"}  # a proof of another level says nothing here
    used, bound, spent = "grid", None, 0
    if status == "connected" and certificate != "grid":
        proof = prove_below(problem, path.points, path.level, budget=budget, seconds=seconds, on_round=on_round)
        spent = proof.evaluations
        if proof.status == "unsupported" and certificate == "bound":
            raise LandscapeError(f"problem {problem.name!r} cannot bound its loss over segments ({proof.reason}); "
                                 "use certificate 'grid' or 'auto'")
        if proof.status != "unsupported":
            info["proof"] = proof.summary()
        else:  # the dense check stands, and the result says why
            info["proof"] = {"status": "unsupported", "reason": proof.reason}
        if proof.status == "proven":  # the bounds are computed in float64
            used, bound, info["decided_in"] = "bound", proof.bound, "float64"
        elif proof.status == "refuted":
            used, status, info["decided_in"] = "bound", "not_found", proof.witness["decided_in"]
            found = proof.witness["loss"]
            peak = max(peak, found) if math.isfinite(found) else float("inf")
            argmax_t = _position(path, proof.witness)
    return replace(path, status=status, dense_max_loss=peak, dense_argmax=argmax_t, certificate=used, bound=bound,
                   spacing=spacing, evaluations=path.evaluations + spent, info=info)


def _position(path: Path, witness: dict) -> float:
    """The position t along the path of a proof's witness (a segment and a position in it)."""
    return _t_at(path, witness["segment"] + witness["t"])


def _t_at(path: Path, where: float) -> float:
    """The position t along the path of a point ``where`` knot units from its start (segment + fraction)."""
    seg = min(int(where), path.n_points - 2)
    return float(path.t[seg] + (where - seg) * (path.t[seg + 1] - path.t[seg]))


def recheck(problem: Problem, path: Path, *, values: torch.Tensor | None = None, samples: list | None = None,
            zoom: int = ZOOM_PASSES) -> Path:
    """Decide in float64 a densely checked path whose max loss lies within rounding of its level.

    Every checked point (grid and zoom) whose loss lies in (u − m, u + m], m = :func:`rounding_margin`, is
    evaluated again in float64 at its exact place on the path (the knots interpolated in float64), all in
    one batched call (blocked as :func:`dense_losses` on a large network). The status, the max loss and
    its position then follow from those float64 losses and from the others' (below u − m: below u whatever
    their rounding). A path in float64, without a level, not finite, or whose max lies farther than m from
    u is decided as it is.

    Parameters
    ----------
    problem : Problem
    path : Path
        Checked densely (``dense_max_loss``, ``resolution``, ``level`` set).
    values : Tensor, shape ((N − 1)·resolution + 1,), optional
        The grid's losses (:func:`dense_losses`); evaluated again, only when needed, if not given.
    samples : list, optional
        The zoom's points as :func:`refine_maximum` records them (``seen``); the zoom runs again, only
        when needed, if not given.
    zoom : int
        The zoom's passes when it runs again.

    Returns
    -------
    Path
        A copy with ``info["decided_in"]`` set: ``"float64"`` when float64 losses decided the status, else
        the path's dtype. When points were evaluated again, ``status``, ``dense_max_loss`` and
        ``dense_argmax`` are those of the float64 losses, ``evaluations`` counts every loss evaluated here,
        and ``info["rounding"]`` says ``margin``, ``points`` (evaluated in float64), ``max_loss_before``
        (in the path's dtype) and ``largest_change`` (the largest |float64 − float32| seen).
    """
    info = {k: v for k, v in path.info.items() if k not in ("decided_in", "rounding")}  # of an earlier check
    level, peak = path.level, path.dense_max_loss
    if level is None:
        return replace(path, info=info)
    own = precision(path.points.dtype)
    info["decided_in"] = own
    margin = rounding_margin(level, path.points.dtype)
    if not (math.isfinite(peak) and level - margin < peak <= level + margin):  # never for float64 (m = 0)
        return replace(path, info=info)
    r, spent = path.resolution, 0
    if values is None:
        values = dense_losses(problem, path.points, r)
        spent += int(values.shape[0])
    if samples is None:
        samples = []
        spent += int(refine_maximum(problem.loss, path.points[None], values[None], r, passes=zoom, seen=samples)[2][0])
    where = torch.cat([torch.arange(values.shape[0], dtype=torch.float64) / r] + [s[1] for s in samples])
    loss = torch.cat([values.to(torch.float64).cpu().nan_to_num(nan=math.inf)] + [s[2] for s in samples])
    near = (loss > level - margin) & (loss <= level + margin)
    before, change = path.dense_max_loss, 0.0
    if near.any():
        exact = float64_losses(problem, path.points, where[near]).nan_to_num(nan=math.inf)
        change = float((exact - loss[near]).abs().max())
        loss[near] = exact
    k = int(loss.argmax())
    peak = float(loss[k])
    status = verdict(peak, level)
    if near.any() and (status == "connected" or bool(near[k])):  # else a float32 loss beyond the margin decided
        info["decided_in"] = "float64"
    info["rounding"] = {"margin": margin, "points": int(near.sum()), "max_loss_before": before,
                        "largest_change": change}
    return replace(path, status=status, dense_max_loss=peak, dense_argmax=_t_at(path, float(where[k])),
                   evaluations=path.evaluations + spent + int(near.sum()), info=info)


def decided_peak(problem: Problem, path: Path) -> Path:
    """A path's max loss as a claim in float64 (a merge level states it): in float32 it may round below it
    (Himmelblau's pass at 104.0151629 read 104.0151596: a merge tree said 1 valley where there are 2). The
    points within rounding of the max are evaluated again in float64 (:func:`recheck`, at the max as level)
    and ``dense_max_loss`` becomes theirs; ``level`` and ``status`` stay. Else the path is returned as it is.
    """
    if path.dense_max_loss is None or path.points.dtype == torch.float64 or not math.isfinite(path.max_loss):
        return path
    return replace(recheck(problem, replace(path, level=path.max_loss)), level=path.level, status=path.status)


def float64_losses(problem: Problem, knots: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """The loss in float64 at points of a polyline, given in knot units (segment + fraction).

    The knots are interpolated in float64 (the exact points of the path, as the proof bounds them); the
    points go in one batched call, in blocks of :data:`DENSE_BLOCK_BYTES` on a large network.

    Parameters
    ----------
    problem : Problem
    knots : Tensor, shape (N, D)
    where : Tensor, shape (K,)
        Positions in [0, N − 1].

    Returns
    -------
    Tensor (float64, CPU), shape (K,)
    """
    k64 = knots.detach().to(torch.float64)
    where = where.to(device=k64.device, dtype=torch.float64)
    seg = where.floor().long().clamp(0, k64.shape[0] - 2)
    frac = (where - seg)[:, None]
    block = segments_per_block(problem, k64, 1)
    out = [problem.loss(k64[s] + f * (k64[s + 1] - k64[s])) for s, f in zip(seg.split(block), frac.split(block))]
    return torch.cat(out).to(torch.float64).cpu() if out else torch.empty(0, dtype=torch.float64)


def refine_maximum(loss, points: torch.Tensor, values: torch.Tensor, resolution: int, *,
                   passes: int = ZOOM_PASSES, candidates: int = ZOOM_CANDIDATES,
                   subdivisions: int = ZOOM_POINTS, seen: list | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The max loss along P polylines at once, from their dense grids refined around the top local maxima.

    Each pass re-samples ``2·subdivisions`` points around each of the ``candidates`` highest local
    maxima of every row (one batched ``loss`` call for all rows), ``subdivisions`` times finer than
    the pass before; then each peak's two neighbours at the last spacing and the vertex of their parabola.

    Parameters
    ----------
    loss : callable
        ``loss(thetas [K, D]) -> [K]`` (``problem.loss``).
    points : Tensor, shape (P, N, D)
        The knots of P polylines of N knots each.
    values : Tensor, shape (P, (N − 1)·resolution + 1)
        Their dense losses (the points of :func:`landscape.paths.path.interpolate`, row by row).
    resolution : int
    seen : list, optional
        When given, each pass appends ``(rows, where, losses)`` (CPU tensors of one length: the row, the position
        in knot units and the loss, NaN as inf, of every point it evaluated), for :func:`recheck`.

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
    pos, width = index.to(torch.float64) / resolution, 1.0 / resolution  # [P, k], the grid's spacing
    steps = torch.cat([torch.arange(-subdivisions, 0), torch.arange(1, subdivisions + 1)]).to(torch.float64)

    def evaluate(at):  # the losses at positions at [P, k, j] (knot units) of the valid candidates, NaN as inf
        nonlocal spent
        seg, rows = at.floor().long().clamp(max=n - 2), torch.arange(p)[:, None, None].expand_as(at)[valid].reshape(-1)
        frac = (at - seg)[valid].reshape(-1, 1).to(device=points.device, dtype=points.dtype)
        seg, on = seg[valid].reshape(-1).to(points.device), rows.to(points.device)
        got = torch.full(at.shape, float("-inf"), dtype=torch.float64)
        got[valid] = loss((1 - frac) * points[on, seg] + frac * points[on, seg + 1]).to(torch.float64).cpu().view(
            -1, at.shape[2])
        spent += valid.sum(1) * at.shape[2]
        got = torch.nan_to_num(got, nan=float("inf"), posinf=float("inf"), neginf=float("-inf"))  # NaN: not below
        if seen is not None:
            seen.append((rows, at[valid].reshape(-1), got[valid].reshape(-1)))
        return got

    for k in range(passes + 2):
        if k < passes:
            at = (pos[:, :, None] + steps * (width / subdivisions)).clamp(0, n - 1)  # [P, k, 2m]
            width /= subdivisions
        elif k == passes:  # each peak's neighbours at the last pass's spacing, then their parabola's vertex:
            base, centre = pos, current.clamp(min=-1e300)  # a smooth peak to O(h⁴) of its height, not O(h²)
            at = (pos[:, :, None] + torch.tensor([-width, width], dtype=torch.float64)).clamp(0, n - 1)
        else:
            side = got.clamp(min=-1e300, max=1e300)
            curve = side[..., 0] + side[..., 1] - 2 * centre  # concave: a vertex; else the point itself again
            shift = torch.where(curve < 0, 0.5 * width * (side[..., 0] - side[..., 1]) / curve.clamp(max=-1e-300), 0.0)
            shift = shift.nan_to_num(0.0).clamp(-width, width)
            at = (base + shift)[:, :, None].clamp(0, n - 1)
        got = evaluate(at)
        top, arg = got.max(2)
        pos = torch.where(top > current, at.gather(2, arg[..., None])[..., 0], pos)
        current = torch.maximum(top, current)
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
