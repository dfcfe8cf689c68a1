"""Dynamic String Sampling: a chain of beads refined wherever it leaves the level set.

Freeman & Bruna, "Topology and Geometry of Half-Rectified Network Optimization", ICLR 2017,
Algorithm 1 (greedy DSS) and its constrained variant. The chain starts as the straight segment;
each round checks every segment densely, puts a bead at the highest point t* of every segment
whose max loss exceeds u (the interpolated model of the paper's Fig. 2), and descends the new
beads until their loss is below α·u. The recursion of the paper is run breadth-first: all
segments of a round are checked in one batched evaluation and all beads of a round descend
together, one batched ``loss_and_grad`` per step.
"""

from __future__ import annotations

import time

import torch

from .._errors import LandscapeError, NonFiniteLoss
from .._random import resolve_generator
from .._registry import Registry
from ..minima.optim import RowOptimizer
from ._common import (Counted, Endpoints, check_count, check_positive, noise,
                      scaled_lr)
from .certify import DEFAULT_RESOLUTION
from .path import Path


#: Where a new bead starts on the segment it splits: at the segment's highest dense point
#: (Freeman & Bruna's t*), or at its midpoint.
INSERTS = Registry("insert", ("argmax", "midpoint"))


def string(ends: Endpoints, *, generator=None, alpha: float = 0.9, steps: int = 200,
           step_size: float = 0.01, lr: float | None = None, penalty: float = 0.0, bisector: bool = False,
           insert: str = "argmax", batch_size: int | None = None, max_rounds: int = 10,
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
        Descent budget of a bead per round (Adam steps). A bead still above u after it descends
        again in the next round; if the highest such bead gets no lower, refinement stops.
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
        Where a new bead starts: at the segment's highest dense point (the paper), or its middle.
    batch_size : int, optional
        Descend on minibatches of this size (one per bead and step; the stop is judged on the full
        training loss), as the paper's stochastic gradient descent. Full batch when None.
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
        beads added, descent steps, seconds), ``stop`` (``"below_level"``, ``"max_rounds"``,
        ``"max_beads"``, or ``"stalled"`` when the highest bead above u got no lower over a round
        of descent) and the evaluation counts. Certify it with :func:`landscape.certify`
        (:func:`landscape.connect` always does).
    """
    counted, level = ends.problem, ends.level
    check_positive(alpha=alpha, step_size=step_size, lr=lr, jitter=jitter)
    check_count(steps=steps, max_rounds=max_rounds, max_beads=max_beads)
    INSERTS.lookup(insert)
    if alpha > 1 or penalty < 0:
        raise LandscapeError(f"string needs 0 < alpha <= 1 and penalty >= 0, got alpha={alpha}, penalty={penalty}")
    gen = resolve_generator(generator)
    chain = torch.stack([ends.start, ends.end])
    rounds, stop, stalled = [], "max_rounds", None
    for r in range(max_rounds + 1):
        began = time.perf_counter()
        seg = check_segments(counted, chain, resolution)
        seg_max = seg.max(1).values
        bad = seg_max > level
        row = {"round": r, "points": int(chain.shape[0]), "above_level": int(bad.sum()),
               "max_loss": float(seg_max.max())}
        rounds.append(row)
        if not bad.any():
            stop = "below_level"
            break
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
        chain, figures = refine(counted, chain, bad, stuck, alpha * level, gen, at=at, steps=steps,
                                step_size=step_size, lr=lr, penalty=penalty * level, bisector=bisector, jitter=jitter,
                                batch_size=batch_size)
        row.update(figures, seconds=time.perf_counter() - began)
    knots = torch.cat([seg[:, 0], seg[-1:, -1]])
    info = {"rounds": rounds, "stop": stop, "alpha": alpha, "penalty": penalty, "steps": steps,
            "beads_added": sum(r.get("beads_added", 0) for r in rounds),
            "descent_steps": sum(r.get("descent_steps", 0) for r in rounds), **counted.figures()}
    return Path(chain, knots.clone(), method="string", level=level, evaluations=counted.evaluations, info=info)


def check_segments(counted: Counted, chain: torch.Tensor, resolution: int, *, batched: bool = True) -> torch.Tensor:
    """Dense losses of every segment of ``chain``, shape (N − 1, resolution + 1): one batched evaluation,
    or (``batched=False``, for the benchmark) one evaluation per segment."""
    if batched:
        return counted.segments(chain, resolution)
    return torch.cat([counted.segments(chain[i:i + 2], resolution) for i in range(chain.shape[0] - 1)])


def refine(counted: Counted, chain: torch.Tensor, bad: torch.Tensor, stuck: torch.Tensor, target: float,
           generator: torch.Generator, *, at: torch.Tensor, steps: int, step_size: float, lr: float | None,
           penalty: float, bisector: bool, jitter: float, batch_size: int | None = None,
           batched: bool = True) -> tuple[torch.Tensor, dict]:
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
    penalty : float
        λ·u, the weight of the constraint ‖θ − m‖²/h² (0 for greedy DSS).
    batched : bool
        All beads in one batched problem (the method), or one bead at a time (the benchmark's baseline).

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
    if bisector:  # the offset too stays in the hyperplane orthogonal to the chord
        normal = (b - a) / (b - a).norm(dim=1, keepdim=True)
        offset = offset - (offset * normal).sum(1, keepdim=True) * normal
    new_rows = knot_rows[split] + 1
    f = at[split].clamp(1e-3, 1 - 1e-3)[:, None]
    out[new_rows] = (1 - f) * a + f * b
    rows = torch.cat([new_rows, knot_rows[1:-1][stuck]]).sort().values
    centre = out[rows].clone()  # the constraint holds each bead near where it started
    out[new_rows] += offset
    if batched:
        moved, figures = descend(counted, out, rows, centre, target, steps=steps, step_size=step_size, lr=lr,
                                 penalty=penalty, bisector=bisector, batch_size=batch_size, generator=generator)
    else:
        parts = [descend(counted, out, rows[i:i + 1], centre[i:i + 1], target, steps=steps, step_size=step_size,
                         lr=lr, penalty=penalty, bisector=bisector, batch_size=batch_size, generator=generator)
                 for i in range(rows.numel())]
        moved = torch.cat([p[0] for p in parts])
        figures = {"descent_steps": sum(p[1]["descent_steps"] for p in parts),
                   "reached": sum(p[1]["reached"] for p in parts)}
    out[rows] = moved
    return out, {"beads_added": int(split.numel()), "beads_descended": int(rows.numel()), **figures}


def descend(counted: Counted, chain: torch.Tensor, rows: torch.Tensor, centre: torch.Tensor, target: float, *,
            steps: int, step_size: float, lr: float | None, penalty: float, bisector: bool = False,
            batch_size: int | None = None, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """Descend the beads ``chain[rows]`` together until each one's loss is ≤ ``target`` or ``steps`` run out.

    One batched ``loss_and_grad`` per step over the beads still above the target; each bead has its
    own Adam state and learning rate (scaled to its segment), and its own constraint centre
    (``centre``, shape (len(rows), D): where it was inserted) at a scale set by its two neighbours.

    Returns
    -------
    beads : Tensor, shape (len(rows), D)
    figures : dict
        ``descent_steps`` (batched steps taken) and ``reached`` (beads at or below the target).
    """
    generator = resolve_generator(generator)
    left, right = chain[rows - 1], chain[rows + 1]
    half2 = ((right - left).norm(dim=1, keepdim=True) / 2).pow(2).clamp_min(torch.finfo(chain.dtype).tiny)
    x = chain[rows].clone()
    normal = None
    if bisector:  # move within the hyperplane through the bead, orthogonal to its chord
        normal = (right - left) / (right - left).norm(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    rates = (torch.full((x.shape[0],), float(lr), dtype=x.dtype, device=x.device) if lr is not None
             else scaled_lr((right - left).norm(dim=1), x.shape[1], step_size))
    adam = RowOptimizer(x, rates)
    active = torch.arange(x.shape[0], device=x.device)
    taken = 0
    n_samples = counted.problem.n_samples("train")
    stochastic = batch_size is not None and 0 < batch_size < n_samples
    for _ in range(steps + 1):
        if stochastic:  # the stop is judged on the full loss, the step on one minibatch per bead
            loss = counted.loss(x[active])
            idx = torch.randint(n_samples, (active.numel(), batch_size), generator=generator)
            _, grad = counted.loss_and_grad(x[active], batch=idx)
        else:
            loss, grad = counted.loss_and_grad(x[active])
        if not torch.isfinite(loss).all():
            raise NonFiniteLoss("the loss became NaN or infinite while a bead descended; lower the step size "
                                 "(option step_size) or set a learning rate (option lr)")
        going = loss > target
        active = active[going]
        if active.numel() == 0 or taken == steps:
            break
        grad = grad[going]
        if penalty:
            grad = grad + 2 * penalty * (x[active] - centre[active]) / half2[active]
        adam.step(x, grad, active, None if normal is None else normal[active])
        taken += 1
    return x, {"descent_steps": taken, "reached": int(x.shape[0] - active.numel())}
