"""A proof that a polygonal path stays at or below a level: branch and bound on its segments.

Every segment of the path is cut into pieces; each piece gets an upper bound of the loss over all of
it from :meth:`Problem.segment_bounds` (bound propagation, all pieces of a round in one batch).
A piece whose bound is ≤ u is settled. Every other piece has its midpoint evaluated: a loss above u
(or not finite) there refutes the path, with where; otherwise the piece is halved and bounded again.
The path is *proven* when every piece is settled, *refuted* at the first such midpoint, and
*undecided* when the budget of pieces runs out, which happens where the path's maximum sits within
rounding distance of u or where the bounds cannot shrink (a non-finite loss).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..problems.problem import Problem

#: Statuses of a proof attempt.
PROOF_STATUSES = ("proven", "refuted", "undecided", "unsupported")
#: Pieces a proof may bound before it gives up, and the pieces each segment starts with.
DEFAULT_BUDGET, DEFAULT_START = 20_000, 2


@dataclass
class Proof:
    """The outcome of :func:`prove_below`.

    Attributes
    ----------
    status : {"proven", "refuted", "undecided", "unsupported"}
    level : float
    bound : float
        Proven: the largest bound of the settled pieces, an upper bound of the loss on the whole path.
        Otherwise the largest bound still above the level (inf if none could be computed).
    pieces : int
        Pieces bounded, all rounds together.
    evaluations : int
        Midpoint losses evaluated.
    rounds : int
    seconds : float
    witness : dict or None
        Refuted: ``segment`` (index), ``t`` (position in it, 0-1) and ``loss`` of a point above the level.
    reason : str or None
        Unsupported: why the problem has no bounds (:meth:`Problem.bounds_unavailable`).
    """

    status: str
    level: float
    bound: float
    pieces: int = 0
    evaluations: int = 0
    rounds: int = 0
    seconds: float = 0.0
    witness: dict | None = None
    reason: str | None = None

    def summary(self) -> dict:
        """JSON-able figures."""
        return {"status": self.status, "level": self.level, "bound": self.bound, "pieces": self.pieces,
                "evaluations": self.evaluations, "rounds": self.rounds, "seconds": self.seconds,
                "witness": self.witness, "reason": self.reason}


def prove_below(problem: Problem, points: torch.Tensor, level: float, *, budget: int = DEFAULT_BUDGET,
                start: int = DEFAULT_START) -> Proof:
    """Prove or refute that the loss stays ≤ ``level`` on every segment of a polygonal path.

    Parameters
    ----------
    problem : Problem
        Its :meth:`~Problem.segment_bounds` supplies the bounds; without them the status is
        ``"unsupported"`` and nothing else is done.
    points : Tensor, shape (N, D)
        The path's knots, N ≥ 2.
    level : float
    budget : int
        Most pieces bounded in all.
    start : int
        Pieces each segment is cut into at first.

    Returns
    -------
    Proof
    """
    clock = time.perf_counter()
    points = points.detach()
    p64 = points.to(torch.float64)
    n_seg = points.shape[0] - 1
    seg = torch.arange(n_seg, device=points.device).repeat_interleave(start)
    t0 = torch.arange(start, dtype=torch.float64, device=points.device).repeat(n_seg) / start
    t1 = t0 + 1.0 / start
    out = Proof("proven", float(level), float("-inf"))
    worst = float("inf")  # the largest bound still open
    while seg.numel():
        if out.pieces + seg.numel() > budget:
            out.status, out.bound = "undecided", worst
            break
        a, b = _at(p64, seg, t0), _at(p64, seg, t1)
        bounds = problem.segment_bounds(a, b)
        if bounds is None:
            return Proof("unsupported", float(level), float("inf"), seconds=time.perf_counter() - clock,
                         reason=problem.bounds_unavailable() or "no bounds")
        out.pieces += seg.numel()
        out.rounds += 1
        settled = torch.isfinite(bounds) & (bounds <= level)
        if settled.any():
            out.bound = max(out.bound, float(bounds[settled].max()))
        open_ = ~settled
        if not open_.any():
            break
        seg, t0, t1 = seg[open_], t0[open_], t1[open_]
        worst = float(torch.nan_to_num(bounds[open_], nan=float("inf")).max())
        mid = (t0 + t1) / 2
        losses = problem.loss(_at(p64, seg, mid).to(points.dtype)).to(torch.float64)
        out.evaluations += seg.numel()
        above = ~(losses <= level)  # NaN counts as above: it is not below
        if above.any():
            k = int(torch.nonzero(above)[0])
            out.status, out.bound = "refuted", float("inf")
            out.witness = {"segment": int(seg[k]), "t": float(mid[k]), "loss": float(losses[k])}
            break
        seg, t0, t1 = seg.repeat(2), torch.cat([t0, mid]), torch.cat([mid, t1])
    out.seconds = time.perf_counter() - clock
    return out


def _at(points: torch.Tensor, seg: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return points[seg] + t[:, None] * (points[seg + 1] - points[seg])
