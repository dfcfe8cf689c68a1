"""What every path method shares: counted evaluations, endpoint checks, step sizes."""

from __future__ import annotations

import math

import torch

from .._errors import LandscapeError
from .path import DEFAULT_RESOLUTION, dense_losses, default_level, segment_view
from ..problems.problem import Problem


class Counted:
    """A problem whose evaluations are counted: one per point for ``loss``, one per point for ``loss_and_grad``.

    Attributes
    ----------
    losses, gradients : int
        Points evaluated by ``loss`` and by ``loss_and_grad``.
    calls : int
        Batched calls made.
    """

    def __init__(self, problem: Problem):
        self.problem = problem
        self.losses = 0
        self.gradients = 0
        self.calls = 0

    @property
    def evaluations(self) -> int:
        return self.losses + self.gradients

    def loss(self, thetas: torch.Tensor) -> torch.Tensor:
        self.losses += int(thetas.shape[0])
        self.calls += 1
        return self.problem.loss(thetas)

    def loss_and_grad(self, thetas: torch.Tensor, batch: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        self.gradients += int(thetas.shape[0])
        self.calls += 1
        return self.problem.loss_and_grad(thetas, batch=batch)

    def segments(self, points: torch.Tensor, resolution: int) -> torch.Tensor:
        """Dense losses of a chain, one row per segment, shape (N − 1, resolution + 1) (batched)."""
        values = dense_losses(self, points, resolution)
        if not torch.isfinite(values).all():
            raise LandscapeError("the loss became NaN or infinite along the path; lower the method's step size "
                                 "(option step_size) or check the endpoints")
        return segment_view(values, resolution)

    def figures(self) -> dict:
        return {"loss_evaluations": self.losses, "gradient_evaluations": self.gradients, "batched_calls": self.calls}


def check_endpoints(problem: Problem, start, end) -> tuple[torch.Tensor, torch.Tensor]:
    """Both endpoints as (D,) floating tensors of one dtype and device, finite and distinct."""
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
    if torch.equal(start, end):
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


def prepare(problem, start, end, level) -> tuple[Counted, torch.Tensor, torch.Tensor, float, float, float]:
    """Counted problem, checked endpoints, their losses and the level: the first lines of every method."""
    start, end = check_endpoints(problem, start, end)
    counted = Counted(problem)
    la, lb = endpoint_losses(counted, start, end)
    return counted, start, end, la, lb, resolve_level(level, la, lb)


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


__all__ = ["Counted", "DEFAULT_RESOLUTION", "check_count", "check_endpoints", "check_positive",
           "endpoint_losses", "noise", "prepare", "resolve_level", "scaled_lr"]
