"""Parametric curves with trainable bends: Bezier curves and polygonal chains.

Garipov, Izmailov, Podoprikhin, Vetrov & Wilson, "Loss Surfaces, Mode Connectivity, and Fast
Ensembling of DNNs", NeurIPS 2018. A curve φ(t) = Σ_j w_j(t) c_j has the endpoints as its first
and last control points c_0 = a, c_{n+1} = b and trainable bends c_1 … c_n. Garipov et al. train
the bends on the loss averaged along the curve, E_{t~U[0,1]} L(φ(t)); a path is connected at u when
its *maximum* is ≤ u, so by default the bends minimise an objective that sees only the top of the
curve (:data:`OBJECTIVES`: a soft maximum, or a hinge at α·u). Each step evaluates the loss and its
gradient at many t in one batched call; with the objective's weight ω_i = ∂F/∂L_i of each sample,
the bends' gradient follows by the chain rule, ∂F/∂c_j = Σ_i ω_i w_j(t_i) ∇L(φ(t_i)), one matrix product.
"""

from __future__ import annotations

import math

import torch

from .._errors import LandscapeError
from .._random import resolve_generator
from .._registry import Registry
from ..minima.optim import RowOptimizer
from ._common import Endpoints, check_count, check_positive, noise, scaled_lr
from .certify import DEFAULT_RESOLUTION
from .path import Path


def bernstein(t: torch.Tensor, degree: int) -> torch.Tensor:
    """Bernstein basis of a Bezier curve, w_j(t) = C(n, j) t^j (1 − t)^(n − j), shape (T, degree + 1)."""
    j = torch.arange(degree + 1, dtype=t.dtype, device=t.device)
    binom = torch.tensor([math.comb(degree, int(k)) for k in range(degree + 1)], dtype=t.dtype, device=t.device)
    return binom * t[:, None] ** j * (1 - t[:, None]) ** (degree - j)


def hats(t: torch.Tensor, degree: int) -> torch.Tensor:
    """Piecewise-linear basis of a polygonal chain with knots at j/degree, shape (T, degree + 1)."""
    knots = torch.arange(degree + 1, dtype=t.dtype, device=t.device) / degree
    return (1 - (t[:, None] - knots).abs() * degree).clamp_min(0)


def bezier(ends: Endpoints, *, generator=None, bends: int = 1, steps: int = 10000,
           samples: int = 2, objective: str = "softmax", alpha: float = 0.9, temperature: float = 0.1,
           step_size: float = 0.05, lr: float | None = None, check_every: int = 100,
           n_points: int = 17, jitter: float = 1e-3, resolution: int = DEFAULT_RESOLUTION) -> Path:
    """A Bezier curve of degree ``bends + 1`` between the endpoints, its bends trained (Garipov et al. 2018).

    Parameters
    ----------
    ends : Endpoints
        The endpoints, their losses and the level u, as :func:`landscape.connect` checked them;
        training stops once the curve is below u.
    generator : torch.Generator, optional
        Draws the t samples (stratified: one uniform t in each of ``samples`` equal bins per step)
        and the bends' initial offsets. Seeded 0 when None (``landscape._random``).
    bends : int
        Trainable control points (Garipov et al. use 1: a quadratic Bezier curve).
    steps, samples : int
        Adam steps, and curve points evaluated per step (one batched ``loss_and_grad``).
        Garipov et al.'s own protocol is ``objective="mean", samples=1`` and many steps.
    objective : str
        What the bends minimise over the step's samples L_1 … L_T (a key of :data:`OBJECTIVES`):

        - ``"softmax"`` (default): the soft maximum τu·log Σ exp(L_i/τu) (weights softmax(L/τu)): the
          highest samples dominate, a smoothed minimax; the weights always sum to 1, so every step pulls.
          Over one sample it is the mean: use ``samples > 1``.
        - ``"hinge"``: (1/T) Σ max(L_i − α·u, 0). Only samples above α·u pull, so the effort goes where
          the curve is above the level, and stops once every sample is below it. With one sample a piece
          (``samples=1``, or 2 on a one-bend chain) a step often has none that pulls and Adam drifts on:
          on the digits main pair it climbed away from the level.
        - ``"mean"``: (1/T) Σ L_i, Garipov et al.'s objective. Its optimum need not be below u: the
          mean trades a high stretch for lower ones elsewhere (on the ring, the quadratic curve of least
          mean loss peaks at 0.1988 while the best peaks at the saddle, 0.19), so it can stall above u.
    alpha : float
        The hinge's target, as a fraction of u (below 1: a margin for the polyline between samples).
    temperature : float
        The soft maximum's temperature, as a fraction of u.
    step_size, lr : float
        Adam's learning rate, as a fraction of the chord (scaled like DSS) or fixed.
    check_every : int
        Every so many steps, and as soon as every sample of a step is below u (with ``samples > 1``;
        at most every ``check_every // 10`` steps), the curve is checked at u: first at the three of its
        knots and their midpoints that were highest at the last such look, then at all of them (one batched
        call each), then, if those are all below u, densely; training stops when
        the dense check is below u, and the curve with the lowest densely checked max loss is returned.
    n_points : int
        Knots of the returned path: the curve at ``n_points`` evenly spaced t, joined by segments
        (what is certified is this polyline, not the smooth curve).
    jitter : float
        Random offset of the initial bends (which start on the straight segment), relative to the chord.
    resolution : int
        Sub-intervals per knot segment in the checks.

    Returns
    -------
    Path
        ``info``: ``bends``, ``steps`` taken, ``checks`` (step, max loss), ``stop``, evaluation counts.
    """
    return _fit_curve("bezier", bernstein, ends, generator=generator, bends=bends,
                      steps=steps, samples=samples, objective=objective, alpha=alpha,
                      temperature=temperature, step_size=step_size, lr=lr, check_every=check_every,
                      n_points=n_points, jitter=jitter, resolution=resolution)


def polychain(ends: Endpoints, *, generator=None, bends: int = 1, steps: int = 10000,
              samples: int = 2, objective: str = "softmax", alpha: float = 0.9, temperature: float = 0.1,
              step_size: float = 0.05, lr: float | None = None, check_every: int = 100,
              n_points: int = 17, jitter: float = 1e-3, resolution: int = DEFAULT_RESOLUTION) -> Path:
    """A polygonal chain a → c_1 → … → c_n → b with trainable bends c_j (Garipov et al. 2018).

    The chain's knots sit at t = j/(n + 1); the bends are trained on the same objectives as
    :func:`bezier` (a soft maximum by default; ``"mean"``: the loss averaged along the chain, as
    Garipov et al.), see there for the options. The returned path holds the
    chain sampled at ``n_points`` t (the bends included when ``n_points − 1`` is a multiple of
    ``bends + 1``, as with the defaults).
    """
    return _fit_curve("polychain", hats, ends, generator=generator, bends=bends,
                      steps=steps, samples=samples, objective=objective, alpha=alpha,
                      temperature=temperature, step_size=step_size, lr=lr, check_every=check_every,
                      n_points=n_points, jitter=jitter, resolution=resolution)


def mean(loss: torch.Tensor, level: float, *, alpha: float, temperature: float) -> torch.Tensor:
    """Garipov et al.'s objective, the loss averaged along the curve: every sample weighs 1/T."""
    return torch.full_like(loss, 1 / loss.shape[0])


def hinge(loss: torch.Tensor, level: float, *, alpha: float, temperature: float) -> torch.Tensor:
    """Mean of max(L − α·u, 0): only the samples above α·u pull, each with weight 1/T."""
    return (loss > alpha * level).to(loss) / loss.shape[0]


def softmax(loss: torch.Tensor, level: float, *, alpha: float, temperature: float) -> torch.Tensor:
    """Soft maximum τu·log Σ exp(L/τu): weights softmax(L/τu), the highest samples dominating."""
    return torch.softmax(loss / (temperature * level), dim=0)


#: What the bends minimise, by name: ``objective(losses [T], level, alpha=, temperature=) -> weights [T]``,
#: the objective's derivative with respect to each sample's loss (the bends' gradient is Σ_i weight_i ∇_c L_i).
OBJECTIVES = Registry("curve objective", (hinge, softmax, mean))


def _fit_curve(name, basis, ends, *, generator, bends, steps, samples, objective, alpha, temperature,
               step_size, lr, check_every, n_points, jitter, resolution) -> Path:
    counted, start, end, level = ends.problem, ends.start, ends.end, ends.level
    check_count(bends=bends, steps=steps, samples=samples, check_every=check_every, n_points=n_points)
    check_positive(step_size=step_size, lr=lr, jitter=jitter, alpha=alpha, temperature=temperature)
    weigh = OBJECTIVES.lookup(objective, where=f"{name} option objective")
    if bends < 1 or samples < 1 or n_points < 2 or check_every < 1:
        raise LandscapeError(f"{name} needs bends >= 1, samples >= 1, check_every >= 1 and n_points >= 2")
    gen = resolve_generator(generator)
    degree, dim = bends + 1, start.shape[0]
    chord = (end - start).norm()
    frac = torch.arange(1, degree, dtype=start.dtype, device=start.device)[:, None] / degree
    control = (1 - frac) * start + frac * end  # on the straight segment: the curve starts as the segment
    control = control + noise(control.shape, gen, control) * (jitter * chord / math.sqrt(dim))
    rate = torch.full((bends,), float(lr), dtype=start.dtype, device=start.device) if lr is not None else \
        scaled_lr(chord.expand(bends), dim, step_size)
    adam = RowOptimizer(control, rate)
    knots_t = torch.linspace(0, 1, n_points, dtype=start.dtype, device=start.device)
    knot_basis = basis(knots_t, degree)

    def knots(c):
        return knot_basis @ torch.cat([start[None], c, end[None]])

    best, checks, stop, taken, last, below, hot = None, [], "steps", 0, 0, False, None
    for step in range(steps + 1):
        due = step - last >= check_every or (below and step - last >= max(1, check_every // 10))
        if step == 0 or step == steps or due:
            last = step
            pts = knots(control)
            quick = None
            if 0 < step < steps:
                # a quick look first (~1/20 of the dense check): the knots and the segments' midpoints, the
                # three that were highest at the last look before the others (the top of the curve moves
                # little between looks: usually one small call says the curve is still above u); above u at a
                # point of the path, the dense check could only agree
                look = torch.cat([pts, (pts[1:] + pts[:-1]) / 2])
                quick = float(counted.loss(look[hot]).max()) if hot is not None else -math.inf
                if quick <= level:
                    values = counted.loss(look)
                    hot, quick = values.topk(3).indices, float(values.max())
            if quick is not None and not quick <= level:
                checks.append({"step": step, "max_loss": quick, "quick": True})
            else:
                seg = counted.segments(pts, resolution)
                peak = float(seg.max())
                checks.append({"step": step, "max_loss": peak})
                if best is None or peak < best[1]:
                    best = (pts, peak, torch.cat([seg[:, 0], seg[-1:, -1]]))
                if peak <= level:
                    stop = "below_level"
                    break
                if step == steps:
                    break
        u = (torch.arange(samples, dtype=torch.float64) + torch.rand(samples, generator=gen, dtype=torch.float64))
        t = (u / samples).to(start)
        w = basis(t, degree)  # [T, n + 2]
        points = w @ torch.cat([start[None], control, end[None]])
        loss, grad = counted.loss_and_grad(points)
        if not torch.isfinite(loss).all():
            raise LandscapeError(f"the loss became NaN or infinite while training the {name} curve; "
                                 "lower the step size (option step_size)")
        # every sample below u: check soon (the quick look costs a few steps); one sample says nothing of the curve
        below = samples > 1 and bool(loss.max() <= level)
        weights = weigh(loss, level, alpha=alpha, temperature=temperature)
        adam.step(control, w[:, 1:-1].T @ (weights[:, None] * grad))
        taken += 1
    pts, _, losses = best
    info = {"bends": bends, "steps": taken, "samples": samples, "objective": objective, "checks": checks, "stop": stop, **counted.figures()}
    return Path(pts, losses.clone(), method=name, level=level, evaluations=counted.evaluations, info=info)
