"""`Path`: a polygonal path in parameter space, its losses, and its certification at a level.

A path *certifies* that two points are connected at level u only if the loss, evaluated densely
along every segment, never exceeds u. The knots alone prove nothing: a segment between two
low knots can cross a hill.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from .._errors import LandscapeError
from .._registry import Registry
from ..problems.problem import Problem

#: The states of a path's claim. ``connected``: its dense max loss is ≤ the level.
#: ``not_found``: no path below the level was found (the best one is kept). ``unchecked``: no level asked.
STATUSES = Registry("path status", ("connected", "not_found", "unchecked"))

#: Default sub-intervals per segment in the dense check. Grids of resolution R and 2R are nested,
#: so doubling the resolution only adds points.
DEFAULT_RESOLUTION = 32


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
        """Max loss along the path: the dense maximum when checked, else the max over the knots."""
        knots = float(self.losses.max())
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
            If the path was never checked densely (call :func:`certify` first).
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

    def dense(self, resolution: int = DEFAULT_RESOLUTION) -> tuple[torch.Tensor, torch.Tensor]:
        """Points along every segment, cut into ``resolution`` equal sub-intervals, and their positions t.

        Returns
        -------
        points : Tensor, shape ((N − 1)·resolution + 1, D)
        t : Tensor, same length
        """
        return interpolate(self.points, self.t, resolution)

    def dense_t(self, resolution: int = DEFAULT_RESOLUTION) -> torch.Tensor:
        """Positions t of the points of :meth:`dense`, shape ((N − 1)·resolution + 1,), without the points."""
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


#: Bytes of interpolated points one block of :func:`dense_losses` may hold (the loss itself is chunked
#: further by the problem). Keeps the dense check of a long path over a large network in bounded memory.
DENSE_BLOCK_BYTES = 64 << 20


def dense_losses(problem: Problem, points: torch.Tensor, resolution: int = DEFAULT_RESOLUTION) -> torch.Tensor:
    """Loss at every point of every segment cut into ``resolution`` sub-intervals, knots included.

    The points are those of :func:`interpolate` (same order, each knot once); they are generated
    a block of segments at a time (at most :data:`DENSE_BLOCK_BYTES`), each block one batched
    ``problem.loss`` call, so memory stays bounded however long the path and large the network.

    Parameters
    ----------
    problem : Problem
    points : Tensor, shape (N, D)
    resolution : int

    Returns
    -------
    Tensor, shape ((N − 1)·resolution + 1,)
        Use :func:`segment_view` for the (N − 1, resolution + 1) view, one row per segment.
    """
    if resolution < 1:
        raise LandscapeError(f"resolution must be >= 1, got {resolution}")
    n, d = points.shape
    per_segment = resolution * d * points.element_size()
    block = max(1, DENSE_BLOCK_BYTES // max(per_segment, 1))
    s = torch.arange(resolution, dtype=points.dtype, device=points.device) / resolution
    out = []
    for i in range(0, n - 1, block):
        j = min(i + block, n - 1)
        a, b = points[i:j], points[i + 1:j + 1]
        dense = (a[:, None, :] + s[None, :, None] * (b - a)[:, None, :]).reshape(-1, d)
        if j == n - 1:  # the last knot closes the last block: a short path is one batched call
            dense = torch.cat([dense, points[-1:]])
        out.append(problem.loss(dense))
    return torch.cat(out)


def segment_view(values: torch.Tensor, resolution: int) -> torch.Tensor:
    """The dense losses of :func:`dense_losses` as one row per segment, both knots included.

    Returns
    -------
    Tensor, shape (N − 1, resolution + 1)
        Row i holds the losses from knot i to knot i + 1 (a view; knots shared by two rows).
    """
    return values.unfold(0, resolution + 1, resolution)


#: Zoom passes of :func:`certify` around the highest local maxima of the dense grid, the candidates
#: followed, and the sub-points per side in each pass. Each pass shrinks the uncertainty on the
#: position of a smooth maximum by ``ZOOM_POINTS``, its error on the height by ``ZOOM_POINTS``².
ZOOM_PASSES, ZOOM_CANDIDATES, ZOOM_POINTS = 2, 4, 8


def certify(problem: Problem, path: Path, level: float | None = None, *,
            resolution: int = DEFAULT_RESOLUTION, zoom: int = ZOOM_PASSES) -> Path:
    """Evaluate the loss densely along every segment (batched), zoom in on its maxima, and state the claim.

    The grid of ``resolution`` sub-intervals per segment is evaluated first; then, ``zoom`` times,
    the few highest local maxima of the grid are bracketed by their neighbours and re-sampled
    ``ZOOM_POINTS`` times finer (one batched call a pass), so that a smooth peak between two grid
    points is found to within (1/(resolution·8^zoom))² of its height instead of (1/resolution)².
    A narrower spike than the grid can still hide; raise ``resolution`` for rough losses.

    Parameters
    ----------
    problem : Problem
    path : Path
    level : float, optional
        The level u. ``status`` becomes ``"connected"`` if the max loss found is ≤ u, else
        ``"not_found"``; ``"unchecked"`` when no level is given (and the path has none).
    resolution : int
        Sub-intervals per segment: (N − 1)·resolution + 1 evaluations, batched (see :func:`dense_losses`).
    zoom : int
        Refinement passes around the maxima (0: the grid alone).

    Returns
    -------
    Path
        A copy with ``dense_max_loss``, ``dense_argmax`` (its position t), ``resolution``, ``status``
        and ``level`` set, ``losses`` re-evaluated at the knots, and ``evaluations`` increased by every
        evaluation made here.
    """
    values = dense_losses(problem, path.points, resolution)
    t = path.dense_t(resolution)
    if not torch.isfinite(values).all():
        where = float(t[~torch.isfinite(values)][0])
        raise LandscapeError(f"the loss is not finite along the path (at t = {where:.3f}); "
                             "check the endpoints and the problem's data")
    peak, where, extra = refine_maximum(problem, path.points, values, resolution, passes=zoom)
    seg = min(int(where), path.n_points - 2)
    frac = where - seg
    argmax_t = float(path.t[seg] + frac * (path.t[seg + 1] - path.t[seg]))
    level = path.level if level is None else float(level)
    if level is None:
        status = "unchecked"
    else:
        status = "connected" if peak <= level else "not_found"
    return replace(path, losses=values[::resolution].clone(), level=level, status=status, dense_max_loss=peak,
                   dense_argmax=argmax_t, resolution=resolution,
                   evaluations=path.evaluations + int(values.shape[0]) + extra, info=dict(path.info))


def refine_maximum(problem: Problem, points: torch.Tensor, values: torch.Tensor, resolution: int, *,
                   passes: int = ZOOM_PASSES, candidates: int = ZOOM_CANDIDATES,
                   subdivisions: int = ZOOM_POINTS) -> tuple[float, float, int]:
    """The max loss along a polyline, from its dense grid ``values`` refined around the top local maxima.

    Returns
    -------
    peak : float
        The highest loss found (≥ ``values.max()``).
    where : float
        Its position in knot units (segment index + fraction), in [0, N − 1].
    evaluations : int
        Losses evaluated by the refinement.
    """
    n = points.shape[0]
    best = int(values.argmax())
    peak, where = float(values[best]), best / resolution
    if passes <= 0 or values.numel() < 3:
        return peak, where, 0
    low = values.new_full((1,), float("-inf"))
    left, right = torch.cat([low, values[:-1]]), torch.cat([values[1:], low])
    local = torch.nonzero((values >= left) & (values >= right) & (values > low)).flatten()
    local = local[values[local].argsort(descending=True)[:candidates]]
    pos = local.to(torch.float64) / resolution
    current = values[local].to(torch.float64)
    width = 1.0 / resolution
    steps = torch.cat([torch.arange(-subdivisions, 0), torch.arange(1, subdivisions + 1)]).to(torch.float64)
    spent = 0
    for _ in range(passes):
        at = (pos[:, None] + steps[None, :] * (width / subdivisions)).clamp(0, n - 1)  # [k, 2m]
        seg = at.floor().long().clamp(max=n - 2)
        frac = (at - seg).to(points.dtype).reshape(-1, 1)
        seg = seg.reshape(-1).to(points.device)
        sample = (1 - frac.to(points.device)) * points[seg] + frac.to(points.device) * points[seg + 1]
        got = problem.loss(sample).to(torch.float64).cpu().reshape(at.shape)
        spent += int(sample.shape[0])
        if not torch.isfinite(got).all():
            raise LandscapeError("the loss is not finite along the path; check the endpoints and the problem's data")
        top, arg = got.max(1)
        better = top > current
        pos = torch.where(better, at.gather(1, arg[:, None])[:, 0], pos)
        current = torch.maximum(top, current)
        width /= subdivisions
    i = int(current.argmax())
    if float(current[i]) > peak:
        peak, where = float(current[i]), float(pos[i])
    return peak, where, spent


def default_level(loss_a: float, loss_b: float, *, margin: float = 0.1) -> float:
    """The level asked when none is given: ``max(L(a), L(b)) · (1 + margin)``.

    As Dynamic String Sampling's m = 1.1 (Freeman & Bruna, ICLR 2017): a path is sought that
    stays within 10% of the worse endpoint. For a non-positive endpoint loss the margin is
    added instead of multiplied, so the level is always above both endpoints.
    """
    top = max(float(loss_a), float(loss_b))
    if not math.isfinite(top):
        raise LandscapeError(f"endpoint losses must be finite, got {loss_a} and {loss_b}")
    return top * (1 + margin) if top > 0 else top + margin


def linear_path(problem: Problem, start: torch.Tensor, end: torch.Tensor, *, n_points: int = 2) -> Path:
    """The straight segment from ``start`` to ``end`` with ``n_points`` evenly spaced knots."""
    s = torch.linspace(0, 1, n_points, dtype=start.dtype, device=start.device)[:, None]
    points = (1 - s) * start + s * end
    return Path(points, problem.loss(points), s[:, 0].clone(), method="linear", evaluations=n_points)


# ------------------------------------------------------------------ files
_SCALARS = ("method", "level", "status", "dense_max_loss", "dense_argmax", "resolution", "evaluations", "seconds")


def save_path(file, problem: Problem, path: Path, *, meta: dict | None = None):
    """Write a path atomically as a landscape file of kind ``"path"`` (safe to load, see the checkpoint docs).

    The record holds ``problem`` (spec), ``points`` [N, D], ``losses`` [N], ``t`` [N], the path's
    claim (``method``, ``level``, ``status``, dense check figures, ``evaluations``, ``seconds``),
    ``info``, ``summary`` and ``meta`` (e.g. the endpoint files), all JSON-able besides the tensors.
    """
    from ..problems.checkpoint import FORMAT, VERSION, atomic_save, versions
    from ..problems.problem import _jsonable

    record = {"format": FORMAT, "version": VERSION, "kind": "path", "problem": problem.spec,
              "points": path.points.detach().cpu().clone(), "losses": path.losses.detach().cpu().clone(),
              "t": path.t.detach().cpu().clone(), "info": _jsonable(path.info, where="path info"),
              "summary": _jsonable(path.summary(), where="path summary"),
              "meta": _jsonable(dict(meta or {}), where="path meta"), "versions": versions()}
    record.update({k: getattr(path, k) for k in _SCALARS})
    return atomic_save(record, file)


def load_path(file, *, problem: Problem | None = None) -> tuple[Path, Problem, dict]:
    """Load a path file written by :func:`save_path`.

    Returns
    -------
    path : Path
    problem : Problem
    meta : dict
    """
    from ..problems.checkpoint import read_file

    return path_from_record(file, read_file(file), problem)


def path_from_record(file, obj, problem: Problem | None = None) -> tuple[Path, Problem, dict]:
    """:func:`load_path` on a record already read from ``file`` (named in the errors)."""
    from ..problems.checkpoint import FORMAT, VERSION
    from ..problems.embedded import problem_from_spec

    if not (isinstance(obj, dict) and obj.get("format") == FORMAT):
        raise LandscapeError(f"{file}: not a landscape path file")
    if obj.get("kind") != "path":
        raise LandscapeError(f"{file}: a landscape {obj.get('kind')!r} file, not a path")
    if not isinstance(obj.get("version"), int) or obj["version"] > VERSION:
        raise LandscapeError(f"{file}: format version {obj.get('version')!r} is newer than this landscape reads; "
                             "upgrade landscape")
    try:
        built = problem_from_spec(obj.get("problem"), user=problem)
    except LandscapeError as err:
        raise LandscapeError(f"{file}: {err}") from None
    points, losses, t = obj.get("points"), obj.get("losses"), obj.get("t")
    if not (isinstance(points, torch.Tensor) and points.dim() == 2 and points.shape[1] == built.dim
            and isinstance(losses, torch.Tensor) and losses.shape == (points.shape[0],)
            and isinstance(t, torch.Tensor) and t.shape == losses.shape):
        raise LandscapeError(f"{file}: malformed path (needs points [N, {built.dim}], losses [N], t [N])")
    if not (torch.isfinite(points).all() and torch.isfinite(losses).all()):
        raise LandscapeError(f"{file}: the path holds NaN or infinite values")
    kwargs = {k: obj.get(k) for k in _SCALARS if obj.get(k) is not None}
    info = obj.get("info") if isinstance(obj.get("info"), dict) else {}
    try:
        path = Path(points, losses, t, info=info, **kwargs)
    except TypeError as err:
        raise LandscapeError(f"{file}: malformed path record ({err})") from None
    return path, built, obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
