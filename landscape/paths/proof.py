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

import math
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
        Unsupported: why the problem has no bounds (:meth:`Problem.bounds_unavailable`). Undecided: which
        budget ran out, the worst open bound against the level, and the cost so far.
    budget : int or None
        The most pieces it was allowed.
    settled : int
        Pieces whose bound is ≤ the level, all rounds together.
    open : int
        Pieces still open when it stopped (0 unless undecided).
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
    settled: int = 0
    open: int = 0

    def summary(self) -> dict:
        """JSON-able figures (``bound`` None where there is none: a refuted path's is inf, and JSON has no inf)."""
        bound = self.bound if math.isfinite(self.bound) else None
        return {"status": self.status, "level": self.level, "bound": bound, "pieces": self.pieces,
                "evaluations": self.evaluations, "rounds": self.rounds, "seconds": self.seconds,
                "witness": self.witness, "reason": self.reason, "budget": self.budget, "rechecked": self.rechecked,
                "settled": self.settled, "open": self.open}


def prove_below(problem: Problem, points: torch.Tensor, level: float, *, budget: int | None = None,
                start: int = DEFAULT_START, seconds: float | None = None, on_round=None,
                clock=time.perf_counter) -> Proof:
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
    seconds : float, optional
        A time budget (:func:`landscape.connect` gives the seconds its search took, see
        :func:`time_budget`): once the proof has spent it, it stops ``"undecided"`` unless the worst open
        bound is closing on the level fast enough to finish within as long again (:func:`_hopeless`); it
        never runs past twice ``seconds``. None: pieces alone limit it.
    on_round : callable, optional
        ``on_round(rounds, settled, open, worst)`` after every round: the pieces settled so far, those
        still open and the largest open bound (inf when none is finite).
    clock : callable
        Seconds now (``time.perf_counter``); a test may pass its own.

    Returns
    -------
    Proof
    """
    began = clock()
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
    history = []  # (seconds so far, worst open bound, pieces open) after each round
    while seg.numel():
        why = None
        if out.pieces + seg.numel() > budget:
            why = f"the budget of {budget:,} pieces would be exceeded"
        elif seconds is not None and history and _hopeless(history, level, seconds):
            why = "bounds not converging"
        if why is not None:
            spent = clock() - began
            search = f" (the search took {seconds:.3g} s)" if seconds is not None else ""
            out.status, out.bound, out.open = "undecided", worst, int(seg.numel())
            out.reason = (f"{why}: worst {against(worst, level)} after {out.pieces:,} pieces, "
                          f"{spent:.3g} s{search}")
            break
        parts = [problem.segment_bounds(_at(p64, seg[i:i + per], t0[i:i + per]), _at(p64, seg[i:i + per], t1[i:i + per]))
                 for i in range(0, seg.numel(), per)]
        bounds = None if any(part is None for part in parts) else torch.cat(parts)
        if bounds is None:
            return Proof("unsupported", float(level), float("inf"), seconds=clock() - began,
                         reason=problem.bounds_unavailable() or "no bounds")
        out.pieces += seg.numel()
        out.rounds += 1
        settled = torch.isfinite(bounds) & (bounds <= level)
        out.settled += int(settled.sum())
        if settled.any():
            out.bound = max(out.bound, float(bounds[settled].max()))
        open_ = ~settled
        if not open_.any():
            if on_round is not None:
                on_round(out.rounds, out.settled, 0, level)
            break
        seg, t0, t1 = seg[open_], t0[open_], t1[open_]
        worst = float(torch.nan_to_num(bounds[open_], nan=float("inf")).max())
        history.append((clock() - began, worst, int(seg.numel())))
        if on_round is not None:
            on_round(out.rounds, out.settled, int(seg.numel()), worst)
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
    out.seconds = clock() - began
    return out


#: The least time budget :func:`time_budget` gives a proof, however quick the search was (seconds).
MIN_PROOF_SECONDS = 2.0


def time_budget(search_seconds: float | None) -> float | None:
    """The seconds a proof may spend by default after a search that took ``search_seconds``: as long as the
    search, at least :data:`MIN_PROOF_SECONDS` (None: no time budget)."""
    return None if search_seconds is None else max(float(search_seconds), MIN_PROOF_SECONDS)


def _hopeless(history: list, level: float, seconds: float) -> bool:
    """Whether a proof that has run ``history`` (seconds, worst open bound, pieces open after each round) should
    stop: past ``seconds``, unless the worst bound's gap to the level, closing as it did over the last round
    while the open pieces grow as they did, would reach 0 within ``seconds`` more; past twice ``seconds``
    always."""
    spent, worst, opened = history[-1]
    if spent < seconds:
        return False
    if spent >= 2 * seconds or len(history) < 2 or not math.isfinite(worst):
        return True
    before, was, opened_before = history[-2]
    closed = was - worst  # gap closed by the last round
    if not (closed > 0 and math.isfinite(was)):
        return True
    rounds = math.ceil((worst - level) / closed)
    grow, step = max(opened / max(opened_before, 1), 1.0), max(spent - before, 1e-9)
    need = sum(step * grow ** k for k in range(1, min(rounds, 60) + 1))
    return spent + need > 2 * seconds


def against(worst: float, level: float) -> str:
    """The worst open bound beside the level: ``"3.1x u"`` for a positive level, else both values."""
    if level > 0 and math.isfinite(worst):
        return f"bound {worst / level:.3g}x u"
    return f"bound {worst:.6g} (u {level:.6g})"


def _at(points: torch.Tensor, seg: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return points[seg] + t[:, None] * (points[seg + 1] - points[seg])
