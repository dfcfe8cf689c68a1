"""A proof that a polygonal path stays at or below a level: branch and bound on its segments.

Every segment of the path is cut into pieces; each piece gets an upper bound of the loss over all of
it from :meth:`Problem.segment_bounds` (bound propagation, all pieces of a round in one batch).
A piece whose bound is ≤ u is settled. Every other piece has its midpoint evaluated: a loss above u
(or not finite) there refutes the path, with where; otherwise the piece is halved and bounded again.
The path is *proven* when every piece is settled, *refuted* at the first such midpoint, and
*undecided* when the budget of pieces runs out, which happens where the path's maximum sits within
rounding distance of u or where the bounds cannot shrink (a non-finite loss).

Midpoints are evaluated in the path's dtype; one whose loss lies within rounding of u
(:func:`~landscape.paths._rounding.rounding_margin`) is evaluated again in float64 before it refutes the
path or lets its piece be halved, so a refutation holds in float64 (the witness says which precision found it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..problems.memory import point_bytes
from ..problems.problem import Problem
from ._rounding import precision, rounding_margin

#: Statuses of a proof attempt.
PROOF_STATUSES = ("proven", "refuted", "undecided", "unsupported")
#: Bytes of piece endpoints (float64) one batch of a round holds: a network of millions of parameters takes
#: its pieces a few at a time.
PIECE_BYTES = 256 << 20
#: Pieces a proof may bound before it gives up, and the pieces each segment starts with.
DEFAULT_BUDGET, DEFAULT_START = 20_000, 2
#: The default budget's cost cap: pieces × the bytes one point's evaluation needs
#: (:func:`landscape.problems.memory.point_bytes`) stays within this, so a proof on a big network costs about
#: what one on a small one does (digits_mlp: 3,429 pieces; digits_cnn: 276; a 1M-parameter CNN on 5,000
#: images: 12, where it is ``undecided`` at once and the dense check stands).
PROOF_WORK = 16 << 30


def default_budget(problem: Problem) -> int:
    """The pieces a proof may bound by default: :data:`DEFAULT_BUDGET`, fewer where one point is costly.

    ``min(DEFAULT_BUDGET, PROOF_WORK // point_bytes)``: the work of a proof scales with the bytes (and so the
    arithmetic) one loss evaluation moves, and a proof that cannot finish within that gives way to the dense
    check, which it would have cost hundreds of times over (a 1M-parameter CNN on 32 images: 3,466 pieces,
    299 s, against 1.3 s for the dense check).
    """
    need, _ = point_bytes(problem)
    return int(min(DEFAULT_BUDGET, PROOF_WORK // max(need, 1)))


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
        Refuted: ``segment`` (index), ``t`` (position in it, 0-1) and ``loss`` of a point above the level, and
        ``decided_in``, the precision of that loss (``"float64"`` where the path's dtype was within rounding).
    rechecked : int
        Midpoints within rounding of the level evaluated again in float64 (counted in ``evaluations`` too).
    reason : str or None
        Unsupported: why the problem has no bounds (:meth:`Problem.bounds_unavailable`).
    budget : int or None
        The most pieces it was allowed.
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
    budget: int | None = None
    rechecked: int = 0

    def summary(self) -> dict:
        """JSON-able figures."""
        return {"status": self.status, "level": self.level, "bound": self.bound, "pieces": self.pieces,
                "evaluations": self.evaluations, "rounds": self.rounds, "seconds": self.seconds,
                "witness": self.witness, "reason": self.reason, "budget": self.budget, "rechecked": self.rechecked}


def prove_below(problem: Problem, points: torch.Tensor, level: float, *, budget: int | None = None,
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
    budget : int, optional
        Most pieces bounded in all; default :func:`default_budget` (20,000, fewer for costly problems).
    start : int
        Pieces each segment is cut into at first.

    Returns
    -------
    Proof
    """
    clock = time.perf_counter()
    budget = default_budget(problem) if budget is None else budget
    points = points.detach()
    p64 = points.to(torch.float64)
    n_seg = points.shape[0] - 1
    seg = torch.arange(n_seg, device=points.device).repeat_interleave(start)
    t0 = torch.arange(start, dtype=torch.float64, device=points.device).repeat(n_seg) / start
    t1 = t0 + 1.0 / start
    out = Proof("proven", float(level), float("-inf"), budget=budget)
    margin = rounding_margin(level, points.dtype)  # 0 for float64 points: nothing to evaluate again
    per = max(1, PIECE_BYTES // (8 * 3 * p64.shape[1]))  # pieces whose ends are held at once (big networks)
    worst = float("inf")  # the largest bound still open
    while seg.numel():
        if out.pieces + seg.numel() > budget:
            out.status, out.bound = "undecided", worst
            break
        parts = [problem.segment_bounds(_at(p64, seg[i:i + per], t0[i:i + per]), _at(p64, seg[i:i + per], t1[i:i + per]))
                 for i in range(0, seg.numel(), per)]
        bounds = None if any(part is None for part in parts) else torch.cat(parts)
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
        losses = torch.cat([problem.loss(_at(p64, seg[i:i + per], mid[i:i + per]).to(points.dtype)).to(torch.float64)
                            for i in range(0, seg.numel(), per)])
        out.evaluations += seg.numel()
        near = (losses > level - margin) & (losses <= level + margin)  # rounding decides nothing there
        if near.any():
            which = torch.nonzero(near).flatten()
            losses[which] = torch.cat([problem.loss(_at(p64, seg[which[i:i + per]], mid[which[i:i + per]]))
                                       for i in range(0, which.numel(), per)]).to(losses)
            out.evaluations += which.numel()
            out.rechecked += which.numel()
        above = ~(losses <= level)  # NaN counts as above: it is not below
        if above.any():
            k = int(torch.nonzero(above)[0])
            out.status, out.bound = "refuted", float("inf")
            out.witness = {"segment": int(seg[k]), "t": float(mid[k]), "loss": float(losses[k]),
                           "decided_in": "float64" if near[k] else precision(points.dtype)}
            break
        seg, t0, t1 = seg.repeat(2), torch.cat([t0, mid]), torch.cat([mid, t1])
    out.seconds = time.perf_counter() - clock
    return out


def _at(points: torch.Tensor, seg: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return points[seg] + t[:, None] * (points[seg + 1] - points[seg])
