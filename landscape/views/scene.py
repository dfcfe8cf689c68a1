"""`Scene`: what a 3-D view shows, computed without any rendering library.

A scene is a plane, the loss surface over it, and the objects drawn on it: minima, certified
paths and gradient-descent trajectories, each projected onto the plane and placed at its *own*
loss (evaluated at the true point, not read off the surface), with its distance from the plane
kept (``residual``) so that a view can say how far an object lies off the slice instead of
pretending it lies on it. ``landscape.viz.render`` draws a scene; the numbers live here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Mapping

import torch

from .._errors import LandscapeError
from .._registry import Registry
from ..paths.path import Path, interpolate
from .planes import PLANES, Plane, make_plane
from ..problems.problem import Problem
from .spans import default_span
from .surface import Surface, evaluate_plane

#: Plane kinds a scene accepts: the ``PLANES`` keys and ``"auto"``.
SCENE_PLANES = Registry("plane", {"auto": None, **PLANES}, shared=PLANES.shared)
#: A point is on the plane of a view when it lies within this fraction of the plane's wider side of it
#: (the views say how far off the plane anything farther is).
ON_PLANE = 1e-3


@dataclass
class Curve:
    """A path or trajectory as drawn on a plane.

    Attributes
    ----------
    label : str
    kind : {"path", "trajectory"}
    coords : Tensor, shape (n, 2)
        Projections of the curve's points onto the plane.
    losses : Tensor, shape (n,)
        The loss at the points themselves (on the scene's split).
    residual : Tensor, shape (n,)
        Distance of each point from the plane.
    arc : Tensor, shape (n,)
        Cumulative length in parameter space divided by the chord ‖end − start‖; its last value is
        the normalized geodesic length (Freeman & Bruna, ICLR 2017).
    steps : Tensor, shape (n,), optional
        Optimiser steps of a trajectory's points.
    figures : dict
        JSON-able: method, status, level, normalized length, max loss, barrier, chord.
    """

    label: str
    kind: str
    coords: torch.Tensor
    losses: torch.Tensor
    residual: torch.Tensor
    arc: torch.Tensor
    steps: torch.Tensor | None = None
    figures: dict = field(default_factory=dict)

    def summary(self) -> dict:
        chord = self.figures.get("chord") or float("nan")
        return {"label": self.label, "kind": self.kind, "points": int(self.coords.shape[0]),
                "max_residual": float(self.residual.max()),
                "max_residual_over_chord": float(self.residual.max()) / chord if chord > 0 else None,
                "max_loss_drawn": float(self.losses.max()), **self.figures}


@dataclass
class Marker:
    """A point drawn as a sphere: a minimum, a saddle or a trajectory's start."""

    label: str
    kind: str
    coords: torch.Tensor
    loss: float
    residual: float

    def summary(self) -> dict:
        return {"label": self.label, "kind": self.kind, "coords": [float(c) for c in self.coords],
                "loss": self.loss, "residual": self.residual}


@dataclass
class Scene:
    """A plane, its loss surface, and the minima, paths and trajectories drawn on it."""

    problem: Problem
    surface: Surface
    curves: list[Curve]
    markers: list[Marker]
    split: str = "train"

    @property
    def plane(self) -> Plane:
        return self.surface.plane

    @property
    def loss_name(self) -> str:
        """What the vertical axis is: ``"train loss (cross_entropy)"``, ``"loss"`` for analytic problems."""
        name = getattr(self.problem, "loss_name", None)
        if not self.problem.splits:
            return "loss"
        return f"{self.split} loss" + (f" ({name})" if name else "")

    def summary(self) -> dict:
        """JSON-able figures of the scene (what ``landscape render --json`` prints)."""
        return {"problem": self.problem.spec, "split": self.split, "plane": self.plane.describe(),
                "surface": self.surface.summary(), "curves": [c.summary() for c in self.curves],
                "markers": [m.summary() for m in self.markers]}


def build_scene(problem: Problem, *, minima: Mapping[str, torch.Tensor] | None = None,
                paths: Mapping[str, Path] | None = None, trajectories: Mapping[str, dict] | None = None,
                plane: str | Plane = "auto", plane_options: dict | None = None, grid=(51, 51), span=None,
                margin: float = 0.15, split: str = "train", generator: torch.Generator | None = None,
                samples: int = 256, device="cpu", dtype: torch.dtype = torch.float32, cache=None,
                progress: bool = False) -> Scene:
    """Choose a plane, evaluate the surface, and project minima, paths and trajectories onto it.

    Parameters
    ----------
    problem : Problem
    minima : dict of str to Tensor (D,), optional
        Labelled points drawn as spheres. For an analytic problem with none given, its known
        minima (and saddles) are used.
    paths : dict of str to Path, optional
        Each drawn at its own losses, sampled densely between knots.
    trajectories : dict of str to dict, optional
        ``{"step": [T], "theta": [T, D], ...}`` as stored in checkpoints.
    plane : str or Plane
        ``"auto"``, a key of ``landscape.PLANES``, or a ready plane. ``"auto"`` takes the identity
        plane for two parameters; the plane through three points when there are three minima, or
        two and a path leaving their chord (its farthest bead); else the PCA plane of the
        trajectories (at the first minimum) when there are any; else a random filter-normalized
        plane at the first minimum.
    plane_options : dict, optional
        Options of the plane constructor (``normalization``, ``biases``, ``origin``).
    grid : int, (int, int) or str
        Points a side; the lines nearest each minimum and saddle on the plane are moved onto it
        (``evaluate_plane(through=...)``), so the surface meets them at their losses.
    span : ((float, float), (float, float)), optional
        Plane coordinates to cover. By default: the problem's box for analytic problems, else the
        bounding box of everything drawn, widened by ``margin`` (and at least [−1, 1]² for a
        random plane, the range of Li et al.) and then to round ends (``views.spans.default_span``).
    split : str
    generator : torch.Generator, optional
        For random planes.
    samples : int
        About how many points each path is drawn with (knots included), all evaluated in one call.
    device, dtype, cache, progress
        See :func:`landscape.evaluate_plane`.

    Returns
    -------
    Scene
    """
    if problem.splits and split not in problem.splits:
        raise LandscapeError(f"problem {problem.name!r} has no data split {split!r}; it has {list(problem.splits)}")
    minima = {k: _flat(problem, v, f"minimum {k!r}") for k, v in (minima or {}).items()}
    paths = dict(paths or {})
    trajectories = dict(trajectories or {})
    if not minima and not paths and hasattr(problem, "minima"):
        minima = {f"min {i + 1}": m for i, m in enumerate(problem.minima.to(torch.float64))}
    saddles = {f"saddle {i + 1}": s for i, s in enumerate(getattr(problem, "saddles", torch.zeros(0, 2)).double())}
    for name, path in paths.items():
        if path.points.shape[1] != problem.dim:
            raise LandscapeError(f"path {name!r} lives in D = {path.points.shape[1]}, not D = {problem.dim}")
    traj = {}
    for name, t in trajectories.items():
        theta = t.get("theta") if isinstance(t, Mapping) else None
        if not isinstance(theta, torch.Tensor) or theta.dim() != 2 or theta.shape[1] != problem.dim:
            raise LandscapeError(f"trajectory {name!r} needs theta of shape (T, {problem.dim})")
        traj[name] = t
    if not (minima or paths or traj):
        raise LandscapeError(f"nothing to draw on a plane of {problem.name!r}: give minima, paths or trajectories")

    if not isinstance(plane, Plane):
        plane = _choose_plane(problem, plane, minima, paths, traj, generator, dict(plane_options or {}))
    elif plane.dim != problem.dim:
        raise LandscapeError(f"the plane lives in D = {plane.dim}, not D = {problem.dim}")

    # every point drawn, evaluated in one batched call
    groups: list[tuple[str, str, torch.Tensor]] = []
    for name, theta in minima.items():
        groups.append(("minimum", name, theta[None]))
    for name, theta in saddles.items():
        groups.append(("saddle", name, theta[None]))
    for name, path in paths.items():
        res = max(1, math.ceil(samples / max(1, path.n_points - 1)))
        pts, _ = interpolate(path.points.detach().cpu().double(), path.t.detach().cpu().double(), res)
        groups.append(("path", name, pts))
    for name, t in traj.items():
        groups.append(("trajectory", name, t["theta"].detach().cpu().double()))
    stacked = torch.cat([g[2] for g in groups])
    with torch.no_grad():
        losses = problem.loss(stacked.to(device=device, dtype=dtype), split=split).cpu().double()
    coords, residual = plane.project(stacked)

    markers, curves, start = [], [], 0
    for kind, name, pts in groups:
        stop = start + pts.shape[0]
        c, l, r = coords[start:stop], losses[start:stop], residual[start:stop]
        start = stop
        if kind in ("minimum", "saddle"):
            markers.append(Marker(name, kind, c[0], float(l[0]), float(r[0])))
            continue
        chord = float((pts[-1] - pts[0]).norm())
        seg = (pts[1:] - pts[:-1]).norm(dim=1)
        cum = torch.cat([seg.new_zeros(1), seg.cumsum(0)])
        arc = cum / chord if chord > 0 else cum
        if kind == "path":
            p = paths[name]
            figures = {"method": p.method, "status": p.status, "level": p.level,
                       "normalized_length": p.normalized_length, "max_loss": p.max_loss, "barrier": p.barrier,
                       "chord": chord, "length": p.length, "certificate": p.certificate}
            curves.append(Curve(name, "path", c, l, r, arc, None, figures))
        else:
            t = traj[name]
            steps = torch.as_tensor(t.get("step", torch.arange(pts.shape[0]))).reshape(-1)
            figures = {"chord": chord, "length": float(cum[-1]), "normalized_length": float(arc[-1]),
                       "steps": int(steps[-1]) if steps.numel() else 0, "start_loss": float(l[0]),
                       "end_loss": float(l[-1]), "max_loss": float(l.max())}
            curves.append(Curve(name, "trajectory", c, l, r, arc, steps, figures))

    span = default_span(problem, plane, coords, margin) if span is None else span
    # the grid passes through every marker on the plane: the surface meets a minimum at its loss
    side = max(float(hi) - float(lo) for lo, hi in span)
    through = [m.coords.tolist() for m in markers if m.residual <= ON_PLANE * side]
    surface = evaluate_plane(problem, plane, grid=grid, span=span, split=split, device=device, dtype=dtype,
                             cache=cache, progress=progress, through=through)
    return Scene(problem, surface, curves, markers, split)


def scene_from_files(checkpoints=(), *, paths=(), problem: Problem | None = None, trajectories: bool = True,
                     **options) -> Scene:
    """Load checkpoints (minima, with their trajectories) and path files, and build their scene.

    Parameters
    ----------
    checkpoints : sequence of str or path
        Minima written by ``landscape train`` (or plain state_dicts when ``problem`` is given).
    paths : sequence of str or path
        Path files written by ``landscape.save_path`` (``landscape connect``).
    problem : Problem, optional
        Needed for user problems and state_dicts; alone (no files) it draws an analytic problem
        with its known minima.
    trajectories : bool
        Draw the trajectories stored in the checkpoints.
    **options
        Passed to :func:`build_scene`.

    Raises
    ------
    LandscapeError
        Files of different problems, unreadable files, nothing to draw.
    """
    from ..problems.checkpoint import load_checkpoint
    from ..paths.files import load_path

    minima, found, trajs, built = {}, {}, {}, problem
    for f in checkpoints:
        ck = load_checkpoint(f, problem=problem)
        built = _same_problem(built, ck.problem, f)
        label = _unique(FilePath(f).stem, minima)
        minima[label] = ck.theta
        if trajectories and ck.trajectory is not None:
            trajs[label] = ck.trajectory
    for f in paths:
        path, p, _ = load_path(f, problem=problem)
        built = _same_problem(built, p, f)
        found[_unique(FilePath(f).stem, found)] = path
    if built is None:
        raise LandscapeError("nothing to render: give checkpoints, --path files, or --problem NAME of an analytic "
                             "problem")
    if not minima and found:  # the endpoints of the paths are the minima
        for name, path in found.items():
            for end, theta in (("start", path.points[0]), ("end", path.points[-1])):
                if not any(_same_point(theta, m) for m in minima.values()):
                    minima[_unique(f"{name} {end}", minima)] = theta
    if not minima and not found and not hasattr(built, "minima"):
        raise LandscapeError(f"problem {built.name!r} has no known minima: give checkpoints or path files to draw")
    return build_scene(built, minima=minima, paths=found, trajectories=trajs, **options)


# ---------------------------------------------------------------- plane choice
def _choose_plane(problem, kind, minima, paths, traj, generator, options) -> Plane:
    SCENE_PLANES.lookup(kind)
    SCENE_PLANES.check_options(None, options)
    names = list(minima)
    third = _third_point(minima, paths)
    if kind == "auto":
        if problem.dim == 2:
            kind = "identity"
        elif len(minima) >= 3 or (paths and third is not None):
            kind = "points"
        elif traj:
            kind = "pca"
        else:
            kind = "random"
    options = {k: v for k, v in options.items() if k in PLANES.options(kind)}
    if kind == "identity":
        return make_plane("identity", problem)
    if kind == "points":
        if len(minima) < 2 or third is None:
            raise LandscapeError("the plane through points needs three minima, or two and a path that leaves "
                                 "their chord; give more minima or a --path")
        label, point = third
        plane = make_plane("points", problem, torch.stack([minima[names[0]], minima[names[1]], point]))
        plane.names = (f"{names[0]} -> {names[1]}", f"towards {label}")
        plane.info["anchors"] = [names[0], names[1], label]
        return plane
    if kind == "pca":
        cloud = [t["theta"].detach().cpu().double() for t in traj.values()] or \
                [p.points.detach().cpu().double() for p in paths.values()]
        if not cloud:
            raise LandscapeError("the PCA plane needs trajectories (train with them) or paths")
        origin = None
        if names and "origin" not in options:
            options["origin"], origin = minima[names[0]], names[0]
        plane = make_plane("pca", problem, torch.cat(cloud), **options)
        plane.info["cloud"] = f"{len(cloud)} {'trajectories' if traj else 'paths'}"
        plane.info["anchors"] = [origin] if origin else []
        return plane
    anchors = [(n, minima[n]) for n in names] or [(f"{n} start", p.points[0].double()) for n, p in paths.items()] \
        or [(f"{n} end", t["theta"][-1].double()) for n, t in traj.items()]
    plane = make_plane("random", problem, torch.stack([a[1] for a in anchors]), generator=generator, **options)
    plane.info["anchors"] = [anchors[0][0]]
    return plane


def _third_point(minima, paths):
    """The third anchor of a plane through points: a third minimum, else the farthest path bead off the chord."""
    names = list(minima)
    if len(names) >= 3:
        return names[2], minima[names[2]]
    if len(names) < 2 or not paths:
        return None
    a, b = minima[names[0]], minima[names[1]]
    u = b - a
    nu = float(u.norm())
    if nu == 0:
        return None
    u = u / nu
    best, best_d = None, 1e-9 * nu
    for name, path in paths.items():
        pts = path.points.detach().cpu().double() - a
        d = (pts - (pts @ u)[:, None] * u).norm(dim=1)
        i = int(d.argmax())
        if float(d[i]) > best_d:
            best, best_d = (f"{name} bead {i}", path.points[i].detach().cpu().double()), float(d[i])
    return best


# ---------------------------------------------------------------- helpers
def _flat(problem, theta, what) -> torch.Tensor:
    t = torch.as_tensor(theta).detach().cpu().double()
    if t.shape != (problem.dim,):
        raise LandscapeError(f"{what} has shape {tuple(t.shape)}, expected ({problem.dim},) for {problem.name!r}")
    return t


def _same_point(a, b) -> bool:
    a, b = a.detach().cpu().double(), b.detach().cpu().double()
    return float((a - b).norm()) <= 1e-6 * (1.0 + float(a.norm()))


def _same_problem(known, found, file):
    if known is not None and known.spec != found.spec:
        raise LandscapeError(f"{file}: made for {found!r}, but the other files are of {known!r}; "
                             "render files of one problem together")
    return known if known is not None else found


def _unique(label, taken):
    out, i = label, 2
    while out in taken:
        out, i = f"{label} ({i})", i + 1
    return out

