"""`Path`: a polygonal path in parameter space, its losses and its geometry.

A path *certifies* that two points are connected at level u only if the loss, evaluated densely
along every segment, never exceeds u (:func:`landscape.certify`, in ``certify.py``). The knots
alone prove nothing: a segment between two low knots can cross a hill.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from .._errors import LandscapeError
from .._registry import Registry

#: The states of a path's claim. ``connected``: its dense max loss is ≤ the level.
#: ``not_found``: no path below the level was found (the best one is kept). ``unchecked``: no level asked.
STATUSES = Registry("path status", ("connected", "not_found", "unchecked"))


@dataclass
class Path:
    """A chain of points θ_0 … θ_{N−1} joined by straight segments.

    Attributes
    ----------
    points : Tensor, shape (N, D)
        The knots (beads), first and last being the endpoints.
    losses : Tensor, shape (N,)
        ``problem.loss(points)``.
    t : Tensor, shape (N,)
        Position of each knot along the path in [0, 1] (cumulative length over total length).
    method : str
        The method that made it (a key of ``landscape.METHODS``).
    level : float or None
        The level u the path was asked to stay below.
    status : str
        One of :data:`STATUSES`.
    dense_max_loss : float or None
        Max loss over the dense evaluation of every segment (knots included).
    dense_argmax : float or None
        Position t of that maximum.
    resolution : int or None
        Sub-intervals per segment in the dense check.
    certificate : {"bound", "grid"} or None
        What stands behind ``status`` (see :func:`landscape.certify`): ``"bound"``, a proof that the loss
        is ≤ the level on the whole path (or a point found above it); ``"grid"``, the dense check.
    bound : float or None
        With ``"bound"`` and ``connected``: the proven upper bound of the loss on the whole path.
    spacing : float or None
        The dense check's largest parameter-space distance between checked points (longest segment
        over ``resolution``): features narrower than this can hide from a ``"grid"`` certificate.
    evaluations : int
        Loss (or loss-and-gradient) evaluations spent, method and certification together.
    seconds : float
    info : dict
        Method-specific figures (rounds, beads added, training steps, ...), JSON-able.
    """

    points: torch.Tensor
    losses: torch.Tensor
    t: torch.Tensor | None = None
    method: str = "linear"
    level: float | None = None
    status: str = "unchecked"
    dense_max_loss: float | None = None
    dense_argmax: float | None = None
    resolution: int | None = None
    certificate: str | None = None
    bound: float | None = None
    spacing: float | None = None
    evaluations: int = 0
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.points.dim() != 2 or self.points.shape[0] < 2:
            raise LandscapeError(f"a path needs points of shape (N >= 2, D), got {tuple(self.points.shape)}")
        if self.losses.shape != (self.points.shape[0],):
            raise LandscapeError(f"a path needs one loss per point, got {tuple(self.losses.shape)}")
        if self.t is None:
            self.t = arc_positions(self.points)
        STATUSES.lookup(self.status)

    # -------------------------------------------------------------- geometry
    @property
    def n_points(self) -> int:
        return int(self.points.shape[0])

    @property
    def n_beads(self) -> int:
        """Interior knots (the endpoints are not beads)."""
        return self.n_points - 2

    @property
    def segment_lengths(self) -> torch.Tensor:
        """‖θ_{i+1} − θ_i‖, shape (N − 1,)."""
        return (self.points[1:] - self.points[:-1]).norm(dim=1)

    @property
    def length(self) -> float:
        """Σ ‖θ_{i+1} − θ_i‖."""
        return float(self.segment_lengths.sum())

    @property
    def chord(self) -> float:
        """‖θ_{N−1} − θ_0‖, the length of the straight segment."""
        return float((self.points[-1] - self.points[0]).norm())

    @property
    def normalized_length(self) -> float:
        """Length over chord: 1 for the straight segment, larger the more the level set bends
        (the normalized geodesic length of Freeman & Bruna, ICLR 2017)."""
        chord = self.chord
        return self.length / chord if chord > 0 else float("nan")

    # -------------------------------------------------------------- losses
    @property
    def endpoint_loss(self) -> float:
        """The larger of the two endpoint losses."""
        return float(torch.maximum(self.losses[0], self.losses[-1]))

    @property
    def max_loss(self) -> float:
        """Max loss along the path: the dense maximum when checked, else the max over the knots (inf where
        a loss is not finite)."""
        knots = float(torch.nan_to_num(self.losses, nan=float("inf")).max())
        return knots if self.dense_max_loss is None else max(knots, self.dense_max_loss)

    @property
    def barrier(self) -> float:
        """Max loss minus the larger endpoint loss (≥ 0)."""
        return max(0.0, self.max_loss - self.endpoint_loss)

    def is_below(self, level: float) -> bool:
        """Whether the densely checked path stays at or under ``level``.

        Raises
        ------
        LandscapeError
            If the path was never checked densely (call :func:`landscape.certify` first).
        """
        if self.dense_max_loss is None:
            raise LandscapeError("this path was not checked densely; call landscape.certify(problem, path, level)")
        return self.max_loss <= level

    # -------------------------------------------------------------- transforms
    def reversed(self) -> "Path":
        """The same path walked from the other end."""
        argmax = None if self.dense_argmax is None else 1.0 - self.dense_argmax
        return replace(self, points=self.points.flip(0), losses=self.losses.flip(0), t=1.0 - self.t.flip(0),
                       dense_argmax=argmax, info=dict(self.info))

    def dense_t(self, resolution: int) -> torch.Tensor:
        """Positions t of the points of :func:`interpolate` (each segment cut into ``resolution`` equal
        sub-intervals, knots included), shape ((N − 1)·resolution + 1,), without the points."""
        s = torch.arange(resolution, dtype=self.t.dtype, device=self.t.device) / resolution
        ta, tb = self.t[:-1], self.t[1:]
        return torch.cat([(ta[:, None] + s[None, :] * (tb - ta)[:, None]).reshape(-1), self.t[-1:]])

    def summary(self) -> dict:
        """JSON-able figures of the path (what ``landscape connect --json`` prints about it)."""
        return {
            "method": self.method, "status": self.status, "level": self.level, "max_loss": self.max_loss,
            "barrier": self.barrier, "endpoint_losses": [float(self.losses[0]), float(self.losses[-1])],
            "length": self.length, "chord": self.chord, "normalized_length": self.normalized_length,
            "n_points": self.n_points, "n_beads": self.n_beads, "resolution": self.resolution,
            "dense_max_loss": self.dense_max_loss, "dense_argmax": self.dense_argmax,
            "certificate": self.certificate, "bound": self.bound, "spacing": self.spacing,
            "evaluations": self.evaluations, "seconds": self.seconds, "info": self.info,
        }


def arc_positions(points: torch.Tensor) -> torch.Tensor:
    """Cumulative length along a polyline, scaled to [0, 1], shape (N,)."""
    seg = (points[1:] - points[:-1]).norm(dim=1)
    cum = torch.cat([seg.new_zeros(1), seg.cumsum(0)])
    total = cum[-1]
    if total <= 0:
        return torch.linspace(0, 1, points.shape[0], dtype=points.dtype, device=points.device)
    return cum / total


def interpolate(points: torch.Tensor, t: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each segment of a polyline cut into ``resolution`` equal sub-intervals; knots included."""
    if resolution < 1:
        raise LandscapeError(f"resolution must be >= 1, got {resolution}")
    s = torch.arange(resolution, dtype=points.dtype, device=points.device) / resolution  # [R]
    a, b = points[:-1], points[1:]  # [N-1, D]
    dense = a[:, None, :] + s[None, :, None] * (b - a)[:, None, :]  # [N-1, R, D]
    ta, tb = t[:-1], t[1:]
    dense_t = ta[:, None] + s[None, :] * (tb - ta)[:, None]
    return (torch.cat([dense.reshape(-1, points.shape[1]), points[-1:]]),
            torch.cat([dense_t.reshape(-1), t[-1:]]))
