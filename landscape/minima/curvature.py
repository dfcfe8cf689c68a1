"""Curvature at many points at once: batched Hessian-vector products, power iteration, Hutchinson.

Every estimate works on K points together: the probe vectors of all points form one [K·S, D]
batch and each Hessian-vector product is one double-backward pass through ``problem.loss``.
"""

from __future__ import annotations

import contextlib

import torch

from .._errors import LandscapeError
from .._random import resolve_generator
from ..problems.problem import Problem


def hvp(problem: Problem, thetas: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """Hessian-vector products H(θ_k) v_k for K points at once.

    Parameters
    ----------
    problem : Problem
    thetas : Tensor, shape (K, D)
    vectors : Tensor, shape (K, D)

    Returns
    -------
    Tensor, shape (K, D)
    """
    if thetas.shape != vectors.shape or thetas.dim() != 2:
        raise LandscapeError(f"hvp needs thetas and vectors of the same shape (K, D), got "
                             f"{tuple(thetas.shape)} and {tuple(vectors.shape)}")
    with torch.enable_grad(), _twice_differentiable(problem):
        x = thetas.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(problem.loss(x).sum(), x, create_graph=True)
        (hv,) = torch.autograd.grad((g * vectors).sum(), x)
    return hv


@contextlib.contextmanager
def _twice_differentiable(problem: Problem):
    """The problem's evaluators that differentiate twice: the wide evaluator of conv nets writes its gradient out
    (a second derivative through it raised on digits_cnn's pooling; its functions now refuse one everywhere) and
    is set aside meanwhile for the generic one (the same function)."""
    wide = getattr(problem, "_wide", None)
    if wide is not None:
        problem._wide = None
    try:
        yield
    finally:
        if wide is not None:
            problem._wide = wide


def top_eigenvalue(problem: Problem, thetas: torch.Tensor, *, iters: int = 100, tol: float = 1e-6,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest-magnitude Hessian eigenvalue at K points by power iteration, all points in one batch.

    Parameters
    ----------
    thetas : Tensor, shape (K, D)
    iters : int
        Maximum iterations; stops earlier when every estimate changes by less than ``tol`` (relative).
    generator : torch.Generator, optional
        Draws the starting vectors. Seeded 0 when None (``landscape._random``).

    Returns
    -------
    eigenvalues : Tensor, shape (K,)
    eigenvectors : Tensor, shape (K, D)
        Unit vectors.

    Notes
    -----
    At a minimum the Hessian is positive semi-definite, so the largest magnitude is the top
    eigenvalue λ_max, the sharpness of the minimum (Keskar et al. 2017).
    """
    generator = resolve_generator(generator)
    v = torch.randn(thetas.shape, generator=generator, dtype=thetas.dtype).to(thetas.device)
    v = v / v.norm(dim=1, keepdim=True)
    lam = torch.zeros(thetas.shape[0], dtype=thetas.dtype, device=thetas.device)
    for _ in range(iters):
        hv = hvp(problem, thetas, v)
        new = (hv * v).sum(1)
        norm = hv.norm(dim=1, keepdim=True)
        v = torch.where(norm > 0, hv / norm.clamp_min(torch.finfo(hv.dtype).tiny), v)
        done = ((new - lam).abs() <= tol * new.abs().clamp_min(1e-12)).all()
        lam = new
        if done:
            break
    return lam, v


def extreme_eigenvalues(problem: Problem, thetas: torch.Tensor, *, steps: int = 20,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The lowest and highest Ritz values of the Hessian at K points: ``steps`` of Lanczos, all points in one batch.

    Each Ritz value is a Rayleigh quotient vᵀHv of a unit vector v of the Krylov space, so the lowest lies at or
    above λ_min and the highest at or below λ_max (up to rounding, also without reorthogonalization): a negative
    lowest value *shows* a direction of negative curvature; a non-negative one is what ``steps`` steps found.

    Returns
    -------
    lowest, highest : Tensor, shape (K,)
    """
    generator = resolve_generator(generator)
    k, d = thetas.shape
    v = torch.randn(thetas.shape, generator=generator, dtype=thetas.dtype).to(thetas.device)
    v = v / v.norm(dim=1, keepdim=True)
    previous, beta = torch.zeros_like(v), torch.zeros(k, dtype=thetas.dtype, device=thetas.device)
    alphas, betas, done = [], [], torch.zeros(k, dtype=torch.bool, device=thetas.device)
    for i in range(min(steps, d)):
        w = hvp(problem, thetas, v) - beta[:, None] * previous
        alpha = (w * v).sum(1)
        if alphas:  # a row past its breakdown repeats its last value, cut off by a zero β: no new Ritz value
            alpha = torch.where(done, alphas[-1], alpha)
        w = w - alpha[:, None] * v
        alphas.append(alpha)
        beta = w.norm(dim=1)
        done = done | (beta <= 1e-10 * alpha.abs().clamp_min(1e-30))  # an invariant subspace: the row's T is complete
        if i == min(steps, d) - 1 or bool(done.all()):
            break
        beta = beta.masked_fill(done, 0.0)
        betas.append(beta)
        previous, v = v, torch.where(done[:, None], v, w / beta.clamp_min(torch.finfo(w.dtype).tiny)[:, None])
    t = torch.diag_embed(torch.stack(alphas, 1).double())
    if betas:
        off = torch.stack(betas, 1).double()
        t = t + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    ritz = torch.linalg.eigvalsh(t.cpu())
    return ritz[:, 0].to(thetas), ritz[:, -1].to(thetas)


def hessian_trace(problem: Problem, thetas: torch.Tensor, *, samples: int = 64,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Hutchinson's estimate of tr H(θ_k) at K points, E[zᵀHz] with Rademacher z (Hutchinson 1989).

    All K × ``samples`` probes are one batched Hessian-vector product.

    Parameters
    ----------
    thetas : Tensor, shape (K, D)
    samples : int
        Rademacher probes per point.
    generator : torch.Generator, optional
        Draws the probes. Seeded 0 when None (``landscape._random``).

    Returns
    -------
    trace : Tensor, shape (K,)
    stderr : Tensor, shape (K,)
        Standard error of the mean over the probes.
    """
    k, d = thetas.shape
    generator = resolve_generator(generator)
    z = torch.randint(0, 2, (k * samples, d), generator=generator).to(thetas) * 2 - 1
    quad = (hvp(problem, thetas.repeat_interleave(samples, 0), z) * z).sum(1).reshape(k, samples)
    stderr = quad.std(1) / samples**0.5 if samples > 1 else torch.full((k,), float("nan"))
    return quad.mean(1), stderr


def minimum_metrics(problem: Problem, thetas: torch.Tensor, *, iters: int = 100, samples: int = 64,
                    generator: torch.Generator | None = None) -> list[dict]:
    """Per-minimum figures: loss, gradient norm, ‖θ‖, Hessian top eigenvalue and trace (JSON-able).

    Parameters
    ----------
    thetas : Tensor, shape (K, D)
    """
    loss, grad = problem.loss_and_grad(thetas)
    lam, _ = top_eigenvalue(problem, thetas, iters=iters, generator=generator)
    trace, err = hessian_trace(problem, thetas, samples=samples, generator=generator)
    return [{"loss": float(loss[i]), "grad_norm": float(grad[i].norm()), "norm": float(thetas[i].norm()),
             "hessian_top": float(lam[i]), "hessian_trace": float(trace[i]), "hessian_trace_stderr": float(err[i])}
            for i in range(thetas.shape[0])]
