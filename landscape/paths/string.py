"""Dynamic String Sampling: a chain of beads refined wherever it leaves the level set.

Freeman & Bruna, "Topology and Geometry of Half-Rectified Network Optimization", ICLR 2017,
Algorithm 1 (greedy DSS) and its constrained variant. The chain starts as the straight segment;
each round checks every segment densely, puts a bead at the highest point t* of every segment
whose max loss exceeds u (the interpolated model of the paper's Fig. 2), and descends the new
beads until their loss is below α·u. The recursion of the paper is run breadth-first: the
segments a round changed are checked in one batched evaluation (the others keep their losses) and
all beads of a round descend together, one batched ``loss_and_grad`` per step. Before it stops, the
string zooms into its grid as :func:`landscape.certify` does, so that a peak between grid points
is refined here rather than found by the certificate.

A bead descends by level steps by default (:mod:`.beads`): Polyak's step (*Introduction to
Optimization*, 1987, §5.3), θ ← θ − (L(θ) − ℓ)/‖∇L‖² ∇L, the shortest move to where the linearised loss
meets an aim ℓ below the bead's target, taken against the bead's last few linearisations at once (the level
method of Lemaréchal, Nemirovskii & Nesterov, 1995), which stops the zigzag across a narrow valley. Each
step goes no further than the loss asks, so a bead stops close to where it was inserted, at the rim of the
set, where Adam's sign-like steps carry it deep and far; on the main job's pair that makes the string both
cheaper and shorter (docs/benchmarks.md, "Paths"). Adam (``descent="adam"``) is the stochastic descent of
the paper, and the one for minibatches.
"""

from __future__ import annotations

import time

import torch

from .._errors import LandscapeError
from .._random import resolve_generator
from .._registry import Registry
from ._common import Counted, Endpoints, check_count, check_positive, noise
from .beads import CUTS, DESCENTS, descend
from .certify import DEFAULT_RESOLUTION
from .path import Path


#: Where a new bead starts on the segment it splits: at the segment's highest dense point
#: (Freeman & Bruna's t*), or at its midpoint.
INSERTS = Registry("insert", ("argmax", "midpoint"))


def string(ends: Endpoints, *, generator=None, alpha: float = 0.9, steps: int = 1000, patience: int = 50,
           descent: str = "polyak", cuts: int = CUTS,
           aim: float = 0.5, max_step: float = 0.25, step_size: float = 0.01, lr: float | None = None,
           penalty: float = 0.0, bisector: bool = False,
           insert: str = "argmax", bend: float = 0.0, batch_size: int | None = None, max_rounds: int = 10,
           max_beads: int = 256, jitter: float = 1e-3, resolution: int = DEFAULT_RESOLUTION) -> Path:
    """Dynamic String Sampling (greedy, or constrained with ``penalty > 0``).

    Parameters
    ----------
    ends : Endpoints
        The endpoints, their losses and the level u, as :func:`landscape.connect` checked them.
    generator : torch.Generator, optional
        Draws the small random offset of each new bead (a bead started exactly at a critical
        point, such as the hill top between two symmetric minima, would not move). Seeded 0 when
        None (``landscape._random``).
    alpha : float
        A bead descends until its loss is ≤ α·u (0 < α ≤ 1). Lower values sink beads deeper into the
        set (fewer, costlier beads, longer strings); near 1 they stop near its boundary, and the
        string, an upper bound on the geodesic, is shorter.
    steps : int
        Descent budget of a bead per round. A bead still above u after it (at the lowest point its
        descent reached) descends again in the next round; if the highest such bead gets no lower,
        refinement stops.
    patience : int
        A bead whose loss has not set a new low by 1% in this many steps stops for the round: it
        is stuck (in a basin above its target, or creeping), and the segments around it are
        split instead, or it descends again next round.
    descent : {"polyak", "adam"}
        How beads descend: level steps (the default; full batch) or Adam (``step_size``, ``lr``).
    cuts : int
        A level step goes to the nearest point where the bead's last ``cuts`` linearisations of the loss
        all meet the aim (:class:`~landscape.paths.beads.Cuts`; the level method of Lemaréchal, Nemirovskii &
        Nesterov); 1 is Polyak's step. Each descending bead keeps ``cuts`` gradients.
    aim : float
        Polyak's step aims at ``aim``·α·u (for u > 0; for u ≤ 0, (1 − aim)·|α·u| under α·u), the
        optimal value it assumes: 0 aims at a loss of 0, 1 at the target itself (short steps that
        creep up on it).
    max_step : float
        A Polyak step moves a bead at most this fraction of the distance between its neighbours
        (near a critical point ‖∇L‖ → 0 and the step would blow up).
    step_size : float
        Adam's step as a fraction of the length of the segment the bead refines (see ``lr``).
    lr : float, optional
        A fixed Adam learning rate instead of ``step_size``'s scaled one.
    penalty : float
        Constrained DSS: adds λ·u·‖θ − m‖²/h² to the descent, m the point where the bead was inserted
        and h half the distance between its neighbours, keeping the bead near the chord it splits
        (a bead h away pays λ·u). 0 is greedy DSS.
    bisector : bool
        Move each bead only within the hyperplane through its start orthogonal to its chord, so
        it cannot slide along the valley towards a neighbour.
    insert : {"argmax", "midpoint"}
        Where along its segment a new bead starts: at the segment's highest dense point (the paper), or
        its middle.
    bend : float
        Where across it: on the chord (0, the paper), on the curve through the chain around the segment
        (1: the quadratic through the segment's ends and the knot beyond each, averaged where there are
        two), or that fraction of the way from one to the other. The knots of earlier rounds predict
        where a bending valley goes, and a bead started nearer it descends in fewer steps; but the curve
        overshoots the shortest way round, and the string comes out longer (docs/benchmarks.md, "Paths: where a
        new bead starts").
    batch_size : int, optional
        Descend on minibatches of this size (one per bead and step; the stop is judged on the full
        training loss), as the paper's stochastic gradient descent; Polyak steps then use the
        minibatch's loss (the stochastic Polyak step of Loizou et al., AISTATS 2021). Full batch when None.
    max_rounds, max_beads : int
        Refinement stops after this many rounds or once the chain holds this many beads.
    jitter : float
        Size of the random offset of a new bead, relative to its segment's length.
    resolution : int
        Sub-intervals per segment in each round's dense check (use the certification's).

    Returns
    -------
    Path
        The final chain; ``info`` holds ``rounds`` (per round: points, segments above u, max loss,
        beads added, descent steps, seconds, and ``zoomed`` when the grid was below u but the zoom into it
        found a peak above), ``stop`` (``"below_level"``: the grid and its zoom below u, ``"max_rounds"``,
        ``"max_beads"``, or ``"stalled"`` when the highest bead above u got no lower over a round
        of descent) and the evaluation counts. Certify it with :func:`landscape.certify`
        (:func:`landscape.connect` always does).
    """
    counted, level = ends.problem, ends.level
    check_positive(alpha=alpha, step_size=step_size, lr=lr, jitter=jitter, max_step=max_step)
    if isinstance(bend, bool) or not (isinstance(bend, (int, float)) and 0 <= bend <= 1):
        raise LandscapeError(f"option bend must be a number from 0 (the chord) to 1 (the curve), got {bend!r}")
    check_count(steps=steps, patience=patience, max_rounds=max_rounds, max_beads=max_beads, cuts=cuts)
    if patience < 1:
        raise LandscapeError(f"option patience must be a positive integer (steps without progress), got {patience}")
    if cuts < 1:
        raise LandscapeError(f"option cuts must be a positive integer (linearisations a bead's step meets; 1 is "
                             f"Polyak's step), got {cuts}")
    INSERTS.lookup(insert)
    DESCENTS.lookup(descent)
    if alpha > 1 or penalty < 0 or not 0 <= aim <= 1:
        raise LandscapeError(f"string needs 0 < alpha <= 1, penalty >= 0 and 0 <= aim <= 1, got alpha={alpha}, "
                             f"penalty={penalty}, aim={aim}")
    gen = resolve_generator(generator)
    chain = torch.stack([ends.start, ends.end])
    rounds, stop, stalled, known = [], "max_rounds", None, None
    for r in range(max_rounds + 1):
        began = time.perf_counter()
        seg = check_segments(counted, chain, resolution, known=known)
        seg_max = seg.max(1).values
        bad = seg_max > level
        row = {"round": r, "points": int(chain.shape[0]), "above_level": int(bad.sum()),
               "max_loss": float(seg_max.max())}
        rounds.append(row)
        hit = None
        if not bad.any():  # zoom as the certificate will: a peak between the grid's points splits its segment
            peak, where = counted.zoom(chain, resolution)
            if peak <= level:
                stop = "below_level"
                break
            hit = (min(int(where), chain.shape[0] - 2), where)
            bad = bad.clone()
            bad[hit[0]] = True
            row.update(above_level=1, max_loss=peak, zoomed=True)
        room = max_beads - (chain.shape[0] - 2)
        if r == max_rounds or room <= 0:
            stop = "max_rounds" if room > 0 else "max_beads"
            break
        if int(bad.sum()) > room:  # refine the worst segments first
            keep = seg_max.masked_fill(~bad, float("-inf")).topk(room).indices
            bad = torch.zeros_like(bad).index_fill_(0, keep, True)
        beads = torch.cat([seg[:, 0], seg[-1:, -1]])[1:-1]
        stuck = beads > level  # beads of earlier rounds still above u: they descend again
        worst = float(beads[stuck].max()) if stuck.any() else None
        if worst is not None and stalled is not None and worst > stalled - 1e-3 * (abs(stalled) + abs(level)):
            stop = "stalled"  # a bead above u descended a whole round more without getting lower
            break
        stalled = worst
        at = torch.full_like(seg_max, 0.5)
        if insert == "argmax":  # the segment's highest point, unless that is one of its knots (a bead above u)
            peak = seg.argmax(1)
            inside = (peak > 0) & (peak < resolution)
            at = torch.where(inside, peak.to(chain.dtype) / resolution, at)
        if hit is not None:  # the bead goes where the zoom found the peak
            at[hit[0]] = hit[1] - hit[0]
        known = unchanged(seg, bad, stuck)
        chain, figures = refine(counted, chain, bad, stuck, alpha * level, gen, at=at, jitter=jitter, bend=bend,
                                steps=steps, patience=patience, descent=descent, cuts=cuts, aim=aim,
                                max_step=max_step, step_size=step_size, lr=lr, penalty=penalty * level,
                                bisector=bisector, batch_size=batch_size)
        row.update(figures, seconds=time.perf_counter() - began)
    knots = torch.cat([seg[:, 0], seg[-1:, -1]])
    info = {"rounds": rounds, "stop": stop, "alpha": alpha, "penalty": penalty, "steps": steps, "descent": descent,
            "cuts": cuts if descent == "polyak" else None, "patience": patience,
            "beads_added": sum(r.get("beads_added", 0) for r in rounds),
            "descent_steps": sum(r.get("descent_steps", 0) for r in rounds), **counted.figures()}
    return Path(chain, knots.clone(), method="string", level=level, evaluations=counted.evaluations, info=info)


def check_segments(counted: Counted, chain: torch.Tensor, resolution: int, *, batched: bool = True,
                   known: tuple | None = None) -> torch.Tensor:
    """Dense losses of every segment of ``chain``, shape (N − 1, resolution + 1): one batched evaluation of
    the segments not ``known`` (:meth:`Counted.segments`), or (``batched=False``, for the benchmark) one
    evaluation per segment."""
    if batched:
        return counted.segments(chain, resolution, known=known)
    return torch.cat([counted.segments(chain[i:i + 2], resolution) for i in range(chain.shape[0] - 1)])


def unchanged(seg: torch.Tensor, bad: torch.Tensor, stuck: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The segments a round leaves alone, as (their rows in the refined chain, their dense losses): those not
    split whose two knots do not descend again (``bad``, ``stuck`` as :func:`refine` takes them)."""
    moved = torch.zeros(seg.shape[0] + 1, dtype=torch.bool, device=seg.device)
    moved[1:-1] = stuck
    keep = ~bad & ~moved[:-1] & ~moved[1:]
    shift = torch.cat([bad.new_zeros(1, dtype=torch.long), torch.cumsum(bad.long(), 0)[:-1]])
    rows = torch.arange(seg.shape[0], device=seg.device) + shift  # segment i starts at knot i, shifted by the splits
    return rows[keep], seg[keep].clone()


def refine(counted: Counted, chain: torch.Tensor, bad: torch.Tensor, stuck: torch.Tensor, target: float,
           generator: torch.Generator, *, at: torch.Tensor, jitter: float, bend: float = 0.0,
           batched: bool = True, **how) -> tuple[torch.Tensor, dict]:
    """One DSS round: a bead on every ``bad`` segment, then all new (and ``stuck``) beads descend.

    Parameters
    ----------
    chain : Tensor, shape (N, D)
    bad : Tensor of bool, shape (N − 1,)
        Segments to split.
    stuck : Tensor of bool, shape (N − 2,)
        Beads already in the chain that are to descend again.
    at : Tensor, shape (N − 1,)
        Where on each segment its bead starts, as a fraction in (0, 1).
    target : float
        Loss at which a bead stops (α·u).
    jitter : float
        Size of a new bead's random offset, relative to its segment's length.
    bend : float
        A new bead starts this fraction of the way from its segment's chord to the curve through the knots
        around it (:func:`curve_points`).
    batched : bool
        All beads in one batched problem (the method), or one bead at a time (the benchmark's baseline).
    **how
        :func:`descend`'s options (``steps``, ``descent``, ``penalty`` as λ·u, ...).

    Returns
    -------
    chain : Tensor, shape (N + bad.sum(), D)
    figures : dict
        ``beads_added``, ``beads_descended``, ``descent_steps`` (batched steps), ``reached`` (beads at or
        below the target).
    """
    n, d = chain.shape
    shift = torch.zeros(n, dtype=torch.long, device=chain.device)
    shift[1:] = torch.cumsum(bad.long(), 0)
    knot_rows = torch.arange(n, device=chain.device) + shift
    split = torch.nonzero(bad).flatten()
    out = chain.new_empty(n + split.numel(), d)
    out[knot_rows] = chain
    a, b = chain[split], chain[split + 1]
    offset = noise((split.numel(), d), generator, chain) * ((b - a).norm(dim=1, keepdim=True) * jitter / d**0.5)
    if how.get("bisector"):  # the offset too stays in the hyperplane orthogonal to the chord
        normal = (b - a) / (b - a).norm(dim=1, keepdim=True)
        offset = offset - (offset * normal).sum(1, keepdim=True) * normal
    new_rows = knot_rows[split] + 1
    f = at[split].clamp(1e-3, 1 - 1e-3)[:, None]
    out[new_rows] = (1 - f) * a + f * b
    if bend:
        out[new_rows] += bend * (curve_points(chain, split, f[:, 0]) - out[new_rows])
    rows = torch.cat([new_rows, knot_rows[1:-1][stuck]]).sort().values
    centre = out[rows].clone()  # the constraint holds each bead near where it started
    out[new_rows] += offset
    if batched:
        moved, figures = descend(counted, out, rows, centre, target, generator=generator, **how)
    else:
        parts = [descend(counted, out, rows[i:i + 1], centre[i:i + 1], target, generator=generator, **how)
                 for i in range(rows.numel())]
        moved = torch.cat([p[0] for p in parts])
        figures = {"descent_steps": sum(p[1]["descent_steps"] for p in parts),
                   "reached": sum(p[1]["reached"] for p in parts)}
    out[rows] = moved
    return out, {"beads_added": int(split.numel()), "beads_descended": int(rows.numel()), **figures}


def curve_points(chain: torch.Tensor, split: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Points at fraction ``f`` of the segments ``chain[split] → chain[split + 1]`` on the curve through the chain.

    Each segment (P₁, P₂) has up to two quadratics through three consecutive knots: (P₀, P₁, P₂) when it
    has a knot P₀ before it, (P₁, P₂, P₃) when it has one after it, each parametrised by the length of
    its chords (Lagrange's form); the point is their mean (the Catmull–Rom construction, Overhauser's
    form), or the one that exists, or the chord's point when the chain has only the segment's ends.
    """
    n = chain.shape[0]
    tiny = torch.finfo(chain.dtype).tiny
    f = f.to(chain.dtype)[:, None]
    p1, p2 = chain[split], chain[split + 1]
    d2 = (p2 - p1).norm(dim=1, keepdim=True)
    chord = (1 - f) * p1 + f * p2
    total, count = torch.zeros_like(chord), torch.zeros_like(f)
    left, right = split >= 1, split + 2 <= n - 1
    if left.any():  # through P₀, P₁, P₂ at chord lengths 0, d₁, d₁ + d₂, evaluated at d₁ + f·d₂
        p0 = chain[(split - 1).clamp_min(0)]
        d1 = (p1 - p0).norm(dim=1, keepdim=True)
        total += torch.where(left[:, None], _quadratic(p0, p1, p2, d1, d2, d1 + f * d2, tiny), 0)
        count += left[:, None].to(f.dtype)
    if right.any():  # through P₁, P₂, P₃ at 0, d₂, d₂ + d₃, evaluated at f·d₂
        p3 = chain[(split + 2).clamp_max(n - 1)]
        d3 = (p3 - p2).norm(dim=1, keepdim=True)
        total += torch.where(right[:, None], _quadratic(p1, p2, p3, d2, d3, f * d2, tiny), 0)
        count += right[:, None].to(f.dtype)
    curve = torch.where(count > 0, total / count.clamp_min(1), chord)
    return torch.where(torch.isfinite(curve).all(1, keepdim=True), curve, chord)


def _quadratic(q0, q1, q2, a, b, t, tiny):
    """The quadratic through q0, q1, q2 at parameters 0, a, a + b, evaluated at t (all per row)."""
    a, b = a.clamp_min(tiny), b.clamp_min(tiny)
    w0 = (t - a) * (t - a - b) / (a * (a + b))
    w1 = t * (t - a - b) / (-a * b)
    w2 = t * (t - a) / ((a + b) * b)
    return w0 * q0 + w1 * q1 + w2 * q2
