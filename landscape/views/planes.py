"""`Plane`: an origin and two directions in parameter space, the 2-D slices that renders draw.

Four ways to choose one, in the registry ``PLANES`` (one signature,
``PLANES[kind](problem, anchors, *, generator=None, **options) -> Plane``):

- ``random``: two filter-normalized random directions at ``anchors[0]`` (Li et al. 2018);
- ``pca``: the two leading principal components of a cloud of points, usually a
  gradient-descent trajectory (Li et al. 2018, Section 7);
- ``points``: the plane through three points (two minima and a third minimum, or the bead of
  a path farthest from their chord; Garipov et al. 2018 draw curves this way);
- ``identity``: the (x, y) plane of a two-parameter problem (the analytic landscapes).

A plane holds float64 tensors on the CPU whatever the problem's dtype: projections of points
far apart in a space of many dimensions need the precision, and the cache key of a surface is a
hash of these exact bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

from .._errors import LandscapeError
from .._random import resolve_generator
from .._registry import Registry
from ..problems.problem import Problem

#: Ways of choosing the bias and normalization parts (1-D parameters) of a random direction.
BIASES = Registry("biases option", ("zero", "keep"))
#: How a random direction is scaled to the weights: per row/filter, per tensor, or not at all.
NORMALIZATIONS = Registry("normalization", ("filter", "layer", "none"))


@dataclass
class Plane:
    """The affine plane ``origin + a·directions[0] + b·directions[1]``.

    Attributes
    ----------
    origin : Tensor, shape (D,), float64
    directions : Tensor, shape (2, D), float64
        Not necessarily orthogonal nor of unit norm (filter-normalized directions are neither).
    names : (str, str)
        What the two axes are, for plots ("PC1 (93.1%)", "x", ...).
    kind : str
        The ``PLANES`` key that made it, or ``"custom"``.
    info : dict
        JSON-able figures of its construction (explained variance, seed, normalization, ...).
    """

    origin: torch.Tensor
    directions: torch.Tensor
    names: tuple[str, str] = ("d1", "d2")
    kind: str = "custom"
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.origin = torch.as_tensor(self.origin).detach().to("cpu", torch.float64).reshape(-1)
        self.directions = torch.as_tensor(self.directions).detach().to("cpu", torch.float64)
        d = self.origin.shape[0]
        if self.directions.shape != (2, d):
            raise LandscapeError(f"a plane needs directions of shape (2, {d}), got {tuple(self.directions.shape)}")
        if not (torch.isfinite(self.origin).all() and torch.isfinite(self.directions).all()):
            raise LandscapeError("the plane's origin or directions hold NaN or infinite values")
        gram = self.gram
        if torch.linalg.det(gram) <= 1e-12 * float(gram.diagonal().prod()) or float(gram.diagonal().min()) == 0:
            raise LandscapeError("the plane's two directions are zero or parallel; choose other points or seeds")
        self.names = tuple(str(n) for n in self.names)

    @property
    def dim(self) -> int:
        """D, the dimension of the parameter space."""
        return int(self.origin.shape[0])

    @property
    def gram(self) -> torch.Tensor:
        """The 2×2 Gram matrix of the directions, ``directions @ directions.T``."""
        return self.directions @ self.directions.T

    def point(self, coords) -> torch.Tensor:
        """Parameters at plane coordinates.

        Parameters
        ----------
        coords : array-like, shape (..., 2)

        Returns
        -------
        Tensor, shape (..., D), float64
        """
        coords = torch.as_tensor(coords, dtype=torch.float64)
        return self.origin + coords @ self.directions

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Orthogonal projection of points onto the plane.

        Parameters
        ----------
        points : Tensor, shape (K, D) or (D,)

        Returns
        -------
        coords : Tensor, shape (K, 2), float64
            The least-squares coordinates: ``point(coords)`` is the nearest point of the plane.
        residual : Tensor, shape (K,), float64
            ‖point − point(coords)‖, the distance from the plane (0 for points on it).
        """
        p = torch.as_tensor(points).detach().to("cpu", torch.float64)
        single = p.dim() == 1
        p = p.reshape(-1, self.dim) if single else p
        if p.dim() != 2 or p.shape[1] != self.dim:
            raise LandscapeError(f"points of shape {tuple(p.shape)} cannot be projected on a plane in D = {self.dim}")
        offset = p - self.origin
        coords = torch.linalg.solve(self.gram, self.directions @ offset.T).T  # [K, 2]
        residual = (offset - coords @ self.directions).norm(dim=1)
        return (coords[0], residual[0]) if single else (coords, residual)

    def fingerprint(self) -> str:
        """SHA-256 of the origin and directions (their exact float64 bytes)."""
        h = hashlib.sha256()
        h.update(self.origin.numpy().tobytes())
        h.update(self.directions.numpy().tobytes())
        return h.hexdigest()

    def describe(self) -> dict:
        """JSON-able summary: kind, names, direction norms, the angle between them, and ``info``."""
        norms = self.directions.norm(dim=1)
        cos = float(self.gram[0, 1] / (norms[0] * norms[1]))
        return {"kind": self.kind, "names": list(self.names), "dim": self.dim,
                "direction_norms": [float(n) for n in norms], "cosine": cos, "info": dict(self.info)}


# ---------------------------------------------------------------- random directions
def filter_normalized_direction(problem: Problem, theta: torch.Tensor, *, generator: torch.Generator | None = None,
                                normalization: str = "filter", biases: str = "zero") -> torch.Tensor:
    """A Gaussian direction rescaled to the weights, as in Li et al. (NeurIPS 2018).

    For each weight tensor W (a parameter of two or more dimensions, rows = its first axis, so
    a row of a ``Linear`` weight or a filter of a convolution) each row d_i of the direction is
    rescaled to ``d_i · ‖W_i‖ / ‖d_i‖``: the direction then has the scale of the network at
    every unit, and plots of networks of different scales (or of a network and its rescaled
    copy) compare. One-dimensional parameters (biases, normalization scales and shifts) are
    zeroed (``biases="zero"``, Li et al.'s default) or set equal to the parameters themselves
    (``biases="keep"``, as their code does).

    Parameters
    ----------
    problem : Problem
        Its ``layout`` says which slices of θ are which tensors of which shapes.
    theta : Tensor, shape (D,)
        The point the direction is normalized to (the plane's origin).
    generator : torch.Generator, optional
        Source of the Gaussian draw (on the CPU, so a seed gives the same direction anywhere).
        Seeded 0 when None (``landscape._random``).
    normalization : {"filter", "layer", "none"}
        Per row/filter (Li et al.), per tensor, or the raw Gaussian.
    biases : {"zero", "keep"}

    Returns
    -------
    Tensor, shape (D,), float64
    """
    NORMALIZATIONS.lookup(normalization)
    BIASES.lookup(biases)
    theta = _vector(problem, theta, "theta")
    generator = resolve_generator(generator)
    d = torch.randn(problem.dim, generator=generator, dtype=torch.float64)
    if normalization == "none":
        return d
    for (start, stop), shape in zip(problem.layout.offsets.values(), problem.layout.shapes):
        part, w = d[start:stop], theta[start:stop]
        if len(shape) < 2:
            part.copy_(w if biases == "keep" else torch.zeros_like(w))
            continue
        rows = shape[0] if normalization == "filter" else 1
        dr, wr = part.view(rows, -1), w.view(rows, -1)
        dr.mul_(wr.norm(dim=1, keepdim=True) / (dr.norm(dim=1, keepdim=True) + 1e-10))
    return d


def random(problem: Problem, anchors: torch.Tensor, *, generator: torch.Generator | None = None,
           normalization: str = "filter", biases: str = "zero") -> Plane:
    """Two independent filter-normalized random directions at ``anchors[0]`` (Li et al. 2018).

    Parameters
    ----------
    anchors : Tensor, shape (K, D) or (D,)
        The first row is the origin (a minimum); the others are not used.
    generator : torch.Generator, optional
        Draws both directions, one after the other. Seeded 0 when None (``landscape._random``).
    normalization, biases : str
        See :func:`filter_normalized_direction`.
    """
    origin = _rows(problem, anchors, "anchors")[0]
    generator = resolve_generator(generator)
    seed = int(generator.initial_seed())
    dirs = torch.stack([filter_normalized_direction(problem, origin, generator=generator,
                                                    normalization=normalization, biases=biases) for _ in range(2)])
    if (dirs.norm(dim=1) == 0).any():
        raise LandscapeError(f"problem {problem.name!r} has no weight tensors to normalize a random direction to; "
                             "use the identity plane (two parameters), biases='keep' or normalization='none'")
    label = {"filter": "filter-normalized", "layer": "layer-normalized", "none": "random"}[normalization]
    return Plane(origin, dirs, (f"{label} d1", f"{label} d2"), "random",
                 {"normalization": normalization, "biases": biases, "seed": seed})


def pca(problem: Problem, anchors: torch.Tensor, *, generator: torch.Generator | None = None,
        origin: torch.Tensor | None = None) -> Plane:
    """The plane of the two leading principal components of points (a trajectory), at ``origin``.

    As Li et al. (2018, Section 7): the matrix of θ_i − θ_origin is analysed by principal
    components (scikit-learn's PCA, which centres it); the directions are the two leading
    components (orthonormal), and the plane passes through the origin, by default the last
    point (the minimum a trajectory ends at). The explained variance ratios go into ``info``
    and the axis names.

    Parameters
    ----------
    anchors : Tensor, shape (T, D)
        The points, T ≥ 3 (several trajectories may be stacked).
    origin : Tensor, shape (D,), optional
    """
    from sklearn.decomposition import PCA

    pts = _rows(problem, anchors, "anchors")
    if pts.shape[0] < 3:
        raise LandscapeError(f"a PCA plane needs at least 3 points (a trajectory), got {pts.shape[0]}")
    o = pts[-1] if origin is None else _vector(problem, origin, "origin")
    x = (pts - o).numpy()
    if float((pts - pts.mean(0)).abs().max()) == 0:
        raise LandscapeError("the points of the PCA plane are all equal; record a trajectory (landscape train)")
    fit = PCA(n_components=2, svd_solver="full").fit(x)
    ratio = [float(r) for r in fit.explained_variance_ratio_]
    dirs = torch.as_tensor(fit.components_, dtype=torch.float64)
    return Plane(o, dirs, (f"PC1 ({100 * ratio[0]:.1f}%)", f"PC2 ({100 * ratio[1]:.1f}%)"), "pca",
                 {"explained_variance_ratio": ratio, "explained_variance": [float(v) for v in fit.explained_variance_],
                  "n_points": int(pts.shape[0])})


def points(problem: Problem, anchors: torch.Tensor, *, generator: torch.Generator | None = None) -> Plane:
    """The plane through three points, with orthonormal directions.

    ``directions[0]`` = (p1 − p0)/‖p1 − p0‖ and ``directions[1]`` the unit part of p2 − p0
    orthogonal to it (Gram–Schmidt), so plane coordinates are distances in parameter space and
    the three points have residual 0: p0 = (0, 0), p1 = (‖p1 − p0‖, 0).

    Parameters
    ----------
    anchors : Tensor, shape (3, D)
        p0 (the origin), p1, p2; rows beyond the third are not used.
    """
    pts = _rows(problem, anchors, "anchors")
    if pts.shape[0] < 3:
        raise LandscapeError(f"the plane through points needs three points, got {pts.shape[0]}: "
                             "give a third minimum or a path whose beads leave the chord")
    p0, p1, p2 = pts[:3]
    u = p1 - p0
    nu = float(u.norm())
    if nu == 0:
        raise LandscapeError("the first two points of the plane are equal; give two distinct minima")
    u = u / nu
    w = p2 - p0
    w = w - (w @ u) * u
    nw = float(w.norm())
    if nw <= 1e-9 * max(nu, float((p2 - p0).norm())):
        raise LandscapeError("the three points of the plane lie on one line; give a point off the chord")
    return Plane(p0, torch.stack([u, w / nw]), ("p0 -> p1", "towards p2"), "points",
                 {"chord": nu, "height": nw})


def identity(problem: Problem, anchors: torch.Tensor | None = None, *,
             generator: torch.Generator | None = None) -> Plane:
    """The coordinate plane of a two-parameter problem: origin 0, directions e1 and e2."""
    if problem.dim != 2:
        raise LandscapeError(f"the identity plane needs a problem with 2 parameters; {problem.name!r} has "
                             f"D = {problem.dim}: choose random, pca or points")
    return Plane(torch.zeros(2), torch.eye(2), ("x", "y"), "identity", {})


#: Plane constructors by name; keys equal function names. ``PLANES[kind](problem, anchors, *, generator, **options)``.
PLANES = Registry("plane", (random, pca, points, identity), shared=("problem", "anchors", "generator"))


def make_plane(kind: str, problem: Problem, anchors: torch.Tensor | None = None, *,
               generator: torch.Generator | None = None, **options) -> Plane:
    """Build a plane by name (a key of :data:`PLANES`).

    Raises
    ------
    LandscapeError
        For an unknown kind or option, or anchors that do not define a plane.
    """
    PLANES.check_options(kind, options)
    if anchors is None and kind != "identity":
        raise LandscapeError(f"the {kind} plane needs anchor points (minima or a trajectory)")
    try:
        return PLANES[kind](problem, anchors, generator=generator, **options)
    except TypeError as err:
        raise LandscapeError(f"bad options for the {kind} plane: {err}") from None


# ---------------------------------------------------------------- helpers
def _vector(problem: Problem, theta, what: str) -> torch.Tensor:
    t = torch.as_tensor(theta).detach().to("cpu", torch.float64)
    if t.shape != (problem.dim,):
        raise LandscapeError(f"{what} has shape {tuple(t.shape)}, expected ({problem.dim},) for {problem.name!r}")
    return t


def _rows(problem: Problem, anchors, what: str) -> torch.Tensor:
    t = torch.as_tensor(anchors).detach().to("cpu", torch.float64)
    t = t.reshape(1, -1) if t.dim() == 1 else t
    if t.dim() != 2 or t.shape[1] != problem.dim or t.shape[0] == 0:
        raise LandscapeError(f"{what} have shape {tuple(t.shape)}, expected (K, {problem.dim}) for {problem.name!r}")
    if not torch.isfinite(t).all():
        raise LandscapeError(f"{what} hold NaN or infinite values")
    return t
