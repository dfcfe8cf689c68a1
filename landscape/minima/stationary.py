"""When a point is a minimum, and how to make it one: the stationarity criterion and a batched polish.

One criterion (:mod:`landscape.problems.stationarity`) serves training (:func:`landscape.train`
polishes the seeds that miss it and says which still do), the checkpoints (each records its final
gradient norm and ``converged``) and valley counting (:func:`landscape.find_valleys` refuses, or
polishes, any input point that fails it, and refuses a stationary point with negative curvature: a
saddle or a maximum, found by Lanczos on Hessian-vector products, :func:`require_minima`)::

    ‖∇L(θ)‖ ≤ GRAD_RTOL · max(|L(θ)|, LOSS_FLOOR)        GRAD_RTOL = 1e-3, LOSS_FLOOR = 0.1

Relative to the loss where the loss is large (a minimum of loss L* > 0, e.g. deep linear nets with
weight decay, must have a gradient a thousand times smaller than L*), absolute near zero loss
(‖∇L‖ ≤ 1e-4 at the zero-loss minima of Himmelblau's function or the ring: what float32 points can
hold, their rounding alone leaving gradients of ~1e-5 there). A point on a slope fails it by orders
of magnitude: Himmelblau at L = 0.45 has ‖∇L‖ ≈ 9. Losses whose infimum is at infinity (cross-entropy
on separable data without weight decay) have ‖∇L‖/L of order one however long they train: such points
are honestly reported as not converged.

:func:`polish` descends every row of a batch at once until the criterion holds: gradient descent with
Barzilai–Borwein step sizes (Barzilai & Borwein 1988) safeguarded by Armijo backtracking, each row with
its own step, one batched ``loss_and_grad`` per iteration. It stops a row when it converges, when its
step can no longer change θ at the working precision, or after ``steps`` iterations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._errors import LandscapeError
from ..problems.problem import Problem
from .curvature import extreme_eigenvalues
from ..problems.stationarity import GRAD_RTOL, LOSS_FLOOR, criterion_text, gradient_tolerance, is_stationary

#: Iterations :func:`polish` spends at most on one row by default.
POLISH_STEPS = 2000

#: Lanczos steps of the second-order check of :func:`require_minima`, and how negative an eigenvalue must be,
#: relative to the largest, for a saddle: trained minima measured −3e-6 (deep linear) to −2e-4 (moons MLP, its
#: flat directions at ‖∇L‖ ~ 1e-4), Himmelblau's saddles −0.2 to −2.5, the double well's −0.44.
CURVATURE_STEPS, CURVATURE_RTOL = 20, 1e-3


@dataclass
class Polished:
    """Points descended to stationarity, one row per input.

    Attributes
    ----------
    thetas : Tensor, shape (K, D)
    losses, grad_norms : Tensor, shape (K,)
        At ``thetas``.
    converged : Tensor of bool, shape (K,)
        Whether the criterion holds at ``thetas``.
    steps : Tensor of int, shape (K,)
        Accepted descent steps per row (0: the row already met the criterion).
    start_losses, start_grad_norms : Tensor, shape (K,)
        At the input points.
    """

    thetas: torch.Tensor
    losses: torch.Tensor
    grad_norms: torch.Tensor
    converged: torch.Tensor
    steps: torch.Tensor
    start_losses: torch.Tensor
    start_grad_norms: torch.Tensor


def polish(problem: Problem, thetas: torch.Tensor, *, steps: int = POLISH_STEPS, rtol: float = GRAD_RTOL,
           floor: float = LOSS_FLOOR, shown=None) -> Polished:
    """Descend every row of ``thetas`` until ``‖∇L‖ ≤ rtol·max(|L|, floor)``, all rows in one batch.

    Gradient descent with Barzilai–Borwein steps s·s / s·y, backtracked (halved) until the Armijo
    condition L(θ − ηg) ≤ L(θ) − 10⁻⁴·η‖g‖² holds; rows that meet the criterion are frozen. The loss
    never rises. Device and dtype come from ``thetas``.

    Parameters
    ----------
    problem : Problem
    thetas : Tensor, shape (K, D)
    steps : int
        Loss-and-gradient evaluations at most (each one batched over the rows still moving).
    rtol, floor : float
        The criterion (see the module docstring).
    shown : landscape._progress.Progress, optional
        Shows the iterations, the rows still moving and the worst ratio ‖∇L‖ / tolerance as it goes.

    Returns
    -------
    Polished
    """
    if thetas.dim() != 2 or thetas.shape[1] != problem.dim:
        raise LandscapeError(f"points to polish must have shape (K, {problem.dim}), got {tuple(thetas.shape)}")
    x = thetas.detach().clone()
    loss, grad = problem.loss_and_grad(x)
    start_loss, start_gn = loss.clone(), grad.norm(dim=1)
    if not torch.isfinite(loss).all():
        raise LandscapeError("the loss is not finite at some points to polish; check those points")
    k = x.shape[0]
    taken = torch.zeros(k, dtype=torch.long, device=x.device)
    moving = ~is_stationary(loss, start_gn, rtol=rtol, floor=floor)
    eta = 1e-3 * (1 + x.norm(dim=1)) / start_gn.clamp_min(torch.finfo(x.dtype).tiny)  # first step: 0.1% of |θ|
    tiny = torch.finfo(x.dtype).eps
    for i in range(int(steps)):
        if not moving.any():
            break
        if shown is not None:
            worst = float((grad.norm(dim=1) / gradient_tolerance(loss, rtol=rtol, floor=floor))[moving].max())
            shown.stage(f"polish, {int(moving.sum())} of {k} moving, worst |grad L| {worst:.3g}x its tolerance,",
                        i, int(steps))
        rows = torch.nonzero(moving).flatten()
        g, e = grad[rows], eta[rows]
        trial = x[rows] - e[:, None] * g
        lt, gt = problem.loss_and_grad(trial)
        gn2 = (g * g).sum(1)
        # Armijo's decrease; or, once it is below the loss's rounding, a smaller gradient at no higher loss
        flat = (lt <= loss[rows] + tiny * loss[rows].abs()) & ((gt * gt).sum(1) < gn2)
        accept = torch.isfinite(lt) & ((lt <= loss[rows] - 1e-4 * e * gn2) | flat)
        s, y = trial - x[rows], gt - g
        sy = (s * y).sum(1)
        bb = torch.where(sy > 0, (s * s).sum(1) / sy.clamp_min(torch.finfo(x.dtype).tiny), 2 * e)
        eta[rows] = torch.where(accept, bb.clamp(e / 10, e * 10), e / 2)
        ok = rows[accept]
        x[ok], loss[ok], grad[ok] = trial[accept], lt[accept], gt[accept]
        taken[ok] += 1
        if shown is not None:
            shown.count(len(rows))
        gn = grad[rows].norm(dim=1)
        # a row stops when it converges, or when its step no longer moves θ at this precision
        stuck = eta[rows] * gn <= tiny * (1 + x[rows].norm(dim=1))
        moving[rows] = ~is_stationary(loss[rows], gn, rtol=rtol, floor=floor) & ~stuck
    gn = grad.norm(dim=1)
    return Polished(x, loss, gn, is_stationary(loss, gn, rtol=rtol, floor=floor), taken, start_loss, start_gn)


def require_minima(problem: Problem, thetas: torch.Tensor, names, *, polish_points: bool = False,
                   steps: int = POLISH_STEPS, shown=None) -> tuple[torch.Tensor, list[dict]]:
    """The input points of a valley count, checked to be minima (one batched ``loss_and_grad``, then
    :data:`CURVATURE_STEPS` batched Hessian-vector products).

    A point whose gradient fails the criterion lies on a slope: counted, it would make a spurious
    valley of a hillside and a merge level of no saddle. It is refused, or, with ``polish_points``,
    descended by :func:`polish` (all such points in one batch) and refused only if it still fails.
    A stationary point where Lanczos finds a Hessian eigenvalue below −:data:`CURVATURE_RTOL` · λ_max
    is a saddle or a maximum (a Ritz value is a Rayleigh quotient: negative curvature it finds is there),
    and is refused; a point that passes has no such direction in the Krylov space searched.

    Parameters
    ----------
    problem : Problem
    thetas : Tensor, shape (N, D)
    names : list of str
        Named in the error (checkpoint files).
    polish_points : bool
    steps : int
        Budget of :func:`polish`.
    shown : landscape._progress.Progress, optional
        Where :func:`polish` shows its progress.

    Returns
    -------
    thetas : Tensor, shape (N, D)
        The inputs, polished where they needed it.
    polished : list of dict
        One row per polished point: ``name``, ``loss_before``, ``loss``, ``grad_norm_before``,
        ``grad_norm``, ``steps``, ``distance`` (how far it moved).

    Raises
    ------
    LandscapeError
        Naming the points that are not minima and the fix.
    """
    thetas, rows = _stationary(problem, thetas, names, polish_points, steps, shown)
    curved, lowest, highest = negative_curvature(problem, thetas)
    saddles = torch.nonzero(curved).flatten().tolist()
    if saddles:
        i, bad = saddles[0], [names[j] for j in saddles]
        what = "a saddle or a maximum" if len(bad) == 1 else "saddles or maxima"
        raise LandscapeError(f"{_listed(bad)} not {_minima(bad)}: {what}, stationary with negative curvature (the "
                             f"Hessian at {bad[0]} has an eigenvalue <= {float(lowest[i]):.3g}, its largest "
                             f"{float(highest[i]):.3g}; {CURVATURE_STEPS} Lanczos steps); leave "
                             f"{'it' if len(bad) == 1 else 'them'} out")
    return thetas, rows


def negative_curvature(problem: Problem, thetas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which points have a Hessian eigenvalue below −:data:`CURVATURE_RTOL` · λ_max (saddles, maxima), by
    :data:`CURVATURE_STEPS` batched Lanczos steps; with the lowest and highest Ritz values."""
    lowest, highest = extreme_eigenvalues(problem, thetas, steps=CURVATURE_STEPS)
    return lowest < -(CURVATURE_RTOL * highest.clamp_min(0) + 1e-12), lowest, highest


def _stationary(problem, thetas, names, polish_points, steps, shown):
    """:func:`require_minima`'s first-order part: the inputs, polished where they needed it, and the rows."""
    loss, grad = problem.loss_and_grad(thetas)
    gn = grad.norm(dim=1)
    if not torch.isfinite(loss).all():
        bad = [names[i] for i in torch.nonzero(~torch.isfinite(loss)).flatten().tolist()]
        raise LandscapeError(f"the loss is not finite at minima {bad}; check those checkpoints")
    off = torch.nonzero(~is_stationary(loss, gn)).flatten().tolist()
    if not off:
        return thetas, []
    if polish_points:
        start = thetas[off]
        out = polish(problem, start, steps=steps, shown=shown)
        thetas = thetas.clone()
        thetas[off] = out.thetas
        moved = (out.thetas - start).norm(dim=1)
        rows = [{"name": names[i], "loss_before": float(out.start_losses[k]), "loss": float(out.losses[k]),
                 "grad_norm_before": float(out.start_grad_norms[k]), "grad_norm": float(out.grad_norms[k]),
                 "steps": int(out.steps[k]), "distance": float(moved[k])} for k, i in enumerate(off)]
        still = [names[i] for k, i in enumerate(off) if not out.converged[k]]
        if still:
            raise LandscapeError(f"{_listed(still)} still not {_minima(still)} after {steps} polish steps "
                                 f"({criterion_text()} fails); train longer or check the problem has a minimum there")
        return thetas, rows
    i = off[0]
    bad = [names[j] for j in off]
    raise LandscapeError(f"{_listed(bad)} not {_minima(bad)}: loss {float(loss[i]):.6g}, |grad L| "
                         f"{float(gn[i]):.3g} > {float(gradient_tolerance(loss[i:i + 1])[0]):.3g} "
                         f"({criterion_text()}); retrain it with `landscape train` or pass --polish (polish=True)")


def _listed(names) -> str:
    shown = ", ".join(str(n) for n in names[:3])
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return f"{shown}{more} {'is' if len(names) == 1 else 'are'}"


def _minima(names) -> str:
    return "a minimum" if len(names) == 1 else "minima"


__all__ = ["GRAD_RTOL", "LOSS_FLOOR", "POLISH_STEPS", "Polished", "criterion_text", "gradient_tolerance",
           "is_stationary", "negative_curvature", "polish", "require_minima"]
