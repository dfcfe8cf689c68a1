"""What every path method shares: the checked endpoints, counted evaluations, step sizes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._errors import LandscapeError, NonFiniteLoss
from ..problems.problem import Problem
from .certify import dense_losses, default_level, refine_maximum, segment_losses, segment_view


class Counted:
    """A problem whose evaluations are counted: one per point for ``loss``, one per point for ``loss_and_grad``.

    Attributes
    ----------
    losses, gradients : int
        Points evaluated by ``loss`` and by ``loss_and_grad``.
    calls : int
        Batched calls made.
    """

    def __init__(self, problem: Problem, on_count=None):
        self.problem = problem
        self.losses = 0
        self.gradients = 0
        self.calls = 0
        self.on_count = on_count  # called with the points of every batched call (a progress display)

    @property
    def max_points(self) -> int | None:
        """The problem's cap on points a call (a memory budget's K), or None."""
        return self.problem.max_points

    @property
    def evaluations(self) -> int:
        return self.losses + self.gradients

    def loss(self, thetas: torch.Tensor) -> torch.Tensor:
        self.losses += int(thetas.shape[0])
        self.calls += 1
        if self.on_count is not None:
            self.on_count(int(thetas.shape[0]))
        return self.problem.loss(thetas)

    def loss_and_grad(self, thetas: torch.Tensor, batch: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        self.gradients += int(thetas.shape[0])
        self.calls += 1
        if self.on_count is not None:
            self.on_count(int(thetas.shape[0]))
        return self.problem.loss_and_grad(thetas, batch=batch)

    def segments(self, points: torch.Tensor, resolution: int, known: tuple | None = None) -> torch.Tensor:
        """Dense losses of a chain, one row per segment, shape (N − 1, resolution + 1) (batched).

        ``known`` = (rows, values): segments whose dense losses an earlier check of the same two knots
        gave (a string's segments that a round left alone); only the others are evaluated.
        """
        if known is None:
            values = dense_losses(self, points, resolution)
        else:
            rows, old = known
            grid = points.new_empty(points.shape[0] - 1, resolution + 1)
            need = torch.ones(grid.shape[0], dtype=torch.bool, device=points.device)
            need[rows] = False
            fresh = torch.nonzero(need).flatten()
            if fresh.numel():
                grid[fresh] = segment_losses(self, points[fresh], points[fresh + 1], resolution).to(grid.dtype)
            grid[rows] = old.to(grid.dtype)
            values = torch.cat([grid[:, :-1].reshape(-1), grid[-1, -1:]])
        if not torch.isfinite(values).all():
            raise NonFiniteLoss("the loss became NaN or infinite along the path; lower the method's step size "
                                 "(option step_size) or check the endpoints")
        self._last_dense = (points.detach().clone(), resolution, values)
        self._last_zoom = None
        return segment_view(values, resolution)

    def zoom(self, points: torch.Tensor, resolution: int) -> tuple[float, float]:
        """The highest loss along the chain ``points`` and its position (knot units): the grid of the last
        :meth:`segments` call (made now if that was another chain) zoomed as :func:`landscape.certify` zooms
        it (``refine_maximum``); remembered for the certificate."""
        grid = self.dense_of(points, resolution)
        if grid is None:  # not the last checked chain: check it first
            self.segments(points, resolution)
            grid = self._last_dense[2]
        peak, where, _ = (float(v[0]) for v in refine_maximum(self.loss, points[None], grid[None], resolution))
        self._last_zoom = (peak, where)
        return peak, where

    def zoom_of(self, points: torch.Tensor, resolution: int) -> tuple[float, float] | None:
        """What :meth:`zoom` found, if its grid is the one :meth:`dense_of` gives for these knots, else None."""
        zoom = getattr(self, "_last_zoom", None)
        return zoom if zoom is not None and self.dense_of(points, resolution) is not None else None

    def dense_of(self, points: torch.Tensor, resolution: int) -> torch.Tensor | None:
        """The dense losses of the last :meth:`segments` call if it checked exactly these knots at this
        resolution (a method's final check, which the certificate need not evaluate again), else None."""
        last = getattr(self, "_last_dense", None)
        if last is None or last[1] != resolution or last[0].shape != points.shape or not torch.equal(last[0], points):
            return None
        return last[2]

    def figures(self) -> dict:
        return {"loss_evaluations": self.losses, "gradient_evaluations": self.gradients, "batched_calls": self.calls}


def check_endpoints(problem: Problem, start, end, *, distinct: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Both endpoints as (D,) floating tensors of one dtype and device, finite (and distinct, unless told)."""
    for name, x in (("start", start), ("end", end)):
        if not isinstance(x, torch.Tensor):
            raise LandscapeError(f"{name} must be a torch.Tensor of shape ({problem.dim},), got {type(x).__name__}")
        if x.shape != (problem.dim,):
            raise LandscapeError(f"{name} has shape {tuple(x.shape)}, but problem {problem.name!r} needs "
                                 f"({problem.dim},)")
        if not x.is_floating_point():
            raise LandscapeError(f"{name} must be floating point, got {x.dtype}")
        if not torch.isfinite(x).all():
            raise LandscapeError(f"{name} holds NaN or infinite parameters")
    if start.dtype != end.dtype or start.device != end.device:
        raise LandscapeError(f"start ({start.dtype}, {start.device}) and end ({end.dtype}, {end.device}) must share "
                             "dtype and device; convert one with .to(...)")
    if distinct and torch.equal(start, end):
        raise LandscapeError("start and end are the same point: there is nothing to connect")
    return start.detach(), end.detach()


def endpoint_losses(problem, start, end) -> tuple[float, float]:
    """L(start), L(end) in one batched call, refusing non-finite values."""
    la, lb = (float(v) for v in problem.loss(torch.stack([start, end])))
    for name, v in (("start", la), ("end", lb)):
        if not math.isfinite(v):
            raise LandscapeError(f"the loss at the {name} point is {v}; connect finite minima")
    return la, lb


def resolve_level(level, la: float, lb: float) -> float:
    """The level asked, or :func:`landscape.paths.default_level` of the endpoint losses."""
    if level is None:
        return default_level(la, lb)
    try:
        level = float(level)
    except (TypeError, ValueError):
        raise LandscapeError(f"level must be a number, got {level!r}") from None
    if not math.isfinite(level):
        raise LandscapeError(f"level must be finite, got {level}")
    return level


@dataclass(frozen=True)
class Endpoints:
    """What :func:`landscape.connect` hands a path method: computed once, at its boundary.

    Every method is ``method(ends, *, generator=None, **options) -> Path``, run by ``connect``
    through ``METHODS``; it neither checks the endpoints nor evaluates their losses again.

    Attributes
    ----------
    problem : Counted
        The problem, counting every evaluation made for the path (the endpoints' losses included
        when ``connect`` evaluated them).
    start, end : Tensor, shape (D,)
        Checked by :func:`check_endpoints`: floating, finite, distinct, one dtype and device, detached.
    loss_start, loss_end : float
        L(start) and L(end), finite.
    level : float
        The level u, resolved (:func:`landscape.default_level` of the endpoint losses when none was asked).
    """

    problem: Counted
    start: torch.Tensor
    end: torch.Tensor
    loss_start: float
    loss_end: float
    level: float


def noise(shape, generator, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise drawn on the CPU from ``generator``, moved to ``like``'s device and dtype."""
    return torch.randn(*shape, generator=generator, dtype=torch.float64).to(device=like.device, dtype=like.dtype)


def scaled_lr(lengths: torch.Tensor, dim: int, step_size: float) -> torch.Tensor:
    """Adam learning rates that move a point about ``step_size × length`` per step.

    An Adam step moves each coordinate by about its learning rate, so √D coordinates move a
    point by about lr·√D: lr = step_size · length / √D makes the step a fixed fraction of the
    segment (or chord) being refined, whatever the scale of the parameters.
    """
    return step_size * lengths / math.sqrt(dim)


def check_positive(**values):
    for name, v in values.items():
        if v is None:
            continue
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0):
            raise LandscapeError(f"option {name} must be a positive number, got {v!r}")


def check_count(**values):
    for name, v in values.items():
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
            raise LandscapeError(f"option {name} must be a non-negative integer, got {v!r}")


def polyak_step(value: torch.Tensor, grad: torch.Tensor, aim: float, cap: torch.Tensor,
                normal: torch.Tensor | None = None) -> torch.Tensor:
    """Polyak's step for each row: (value − aim)/‖g‖² g, the shortest move to where the linearised
    function equals ``aim``; g without its component along ``normal`` when given; no longer than ``cap``.

    value : (B,); grad : (B, D); cap : (B, 1); normal : (B, D) unit rows.
    """
    if normal is not None:
        grad = grad - (grad * normal).sum(1, keepdim=True) * normal
    norm2 = grad.pow(2).sum(1, keepdim=True).clamp_min(torch.finfo(grad.dtype).tiny)
    step = (value - aim).clamp_min(0)[:, None] / norm2 * grad
    length = step.norm(dim=1, keepdim=True)
    return step * (cap / length.clamp_min(torch.finfo(grad.dtype).tiny)).clamp(max=1)


__all__ = ["Counted", "Endpoints", "check_count", "check_endpoints", "check_positive", "endpoint_losses", "noise",
           "polyak_step", "resolve_level", "scaled_lr"]
