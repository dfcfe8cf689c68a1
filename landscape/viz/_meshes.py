"""A scene as pyvista datasets, in the coordinates the view draws them in.

x and y are plane coordinates; z is the loss (or log10 of it) times a round scale (1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 × 10^k)
that makes the height about 0.6 of the plane's width, so that a valley reads in any units. Every dataset keeps
the true values as point data (``loss``, ``height`` = the unscaled z, ``residual``,
``arc_over_chord``), so the VTK files written for ParaView hold the numbers, not just a picture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .._errors import LandscapeError
from ..views.scene import Scene


#: Block folder of each kind of object in the VTK files.
GROUPS = {"path": "paths", "trajectory": "trajectories", "minimum": "minima", "saddle": "saddles"}


def block_name(kind: str, label: str) -> str:
    """Name of an object's block: ``paths/<label>``, ``minima/<label>``, ..."""
    return f"{GROUPS[kind]}/{label}"


@dataclass
class Heights:
    """The map loss -> z of a view: ``z = scale · (f(loss) − offset)``, f = identity or log10."""

    log: bool
    floor: float
    scale: float
    offset: float
    zmax: float | None = None

    def height(self, loss) -> np.ndarray:
        """f(loss): the loss, or log10 of it with values below ``floor`` raised to it; clipped at ``zmax``."""
        v = np.asarray(loss, dtype=float)
        v = np.where(np.isfinite(v), v, np.nan)
        if self.log:
            v = np.log10(np.maximum(v, self.floor))
        if self.zmax is not None:
            v = np.minimum(v, self.zmax)
        return v

    def z(self, loss) -> np.ndarray:
        return self.scale * (self.height(loss) - self.offset)


#: Mantissas of the round scales: within 16% of any number, and short to read ("× 2.5").
ROUND_STEPS = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)


def round_scale(x: float) -> float:
    """The round number (1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6, 8 × 10^k) nearest ``x`` > 0 on a log scale."""
    k = math.floor(math.log10(x))
    steps = ROUND_STEPS
    m = min(steps, key=lambda v: abs(math.log10(x / (v * 10.0**k))))
    return float(m * 10.0**k)


@dataclass
class SceneMeshes:
    """The datasets of a view (all pyvista), and the height map that placed them."""

    heights: Heights
    surface: object
    contours: object | None
    sublevel: object | None
    level_line: object | None
    curves: dict = field(default_factory=dict)
    markers: dict = field(default_factory=dict)
    levels: list = field(default_factory=list)
    radii: dict = field(default_factory=dict)
    #: (text, colour, symbol) rows of the view's legend, the first its title (set when it is drawn)
    legend: list = field(default_factory=list)
    #: Grid points and markers below the log view's floor (drawn at it); 0 on a linear view
    below_floor: int = 0

    def multiblock(self):
        """Everything as one ``pyvista.MultiBlock`` (blocks named surface, contours, paths/…, …)."""
        import pyvista as pv

        blocks = pv.MultiBlock()
        blocks["surface"] = self.surface
        for name, mesh in (("contours", self.contours), ("sublevel", self.sublevel), ("level", self.level_line)):
            if mesh is not None and mesh.n_points:
                blocks[name] = mesh
        for label, mesh in self.curves.items():
            blocks[label] = mesh
        for label, mesh in self.markers.items():
            blocks[label] = mesh
        return blocks

    def polydata(self):
        """Curves and markers merged into one ``PolyData`` (the ``.vtp`` export), with a ``part`` id array."""
        import pyvista as pv

        parts = list(self.curves.values()) + list(self.markers.values())
        if not parts:
            raise LandscapeError("the scene has no paths, trajectories or minima to write as .vtp; write .vts or .vtm")
        for i, mesh in enumerate(parts):
            mesh.point_data["part"] = np.full(mesh.n_points, i, dtype=np.int32)
        return pv.merge(parts, merge_points=False)


def auto_levels(losses: np.ndarray, n: int, *, log: bool) -> list[float]:
    """``n`` contour levels spread over the surface's range: geometric when ``log``, else linear quantiles."""
    v = losses[np.isfinite(losses)]
    if n <= 0 or v.size == 0:
        return []
    if log:
        pos = v[v > 0]
        if pos.size == 0:
            return []
        return list(np.geomspace(pos.min(), pos.max(), n + 2)[1:-1])
    return list(np.quantile(v, np.linspace(0, 1, n + 2)[1:-1]))


def scene_meshes(scene: Scene, *, log: bool = False, levels=None, n_levels: int = 10, level: float | None = None,
                 zmax: float | None = None, height_ratio: float = 0.6, tube: float = 0.01,
                 sphere: float = 0.02) -> SceneMeshes:
    """Build the pyvista datasets of a scene.

    Parameters
    ----------
    scene : Scene
    log : bool
        Heights are log10 of the loss; losses below the floor (the grid's lowest positive loss off the
        markers it passes through, whose exact minima would set the depth) are drawn at the floor.
    levels : sequence of float, optional
        Contour levels; ``n_levels`` automatic ones when None.
    level : float, optional
        The level u whose sublevel set {L ≤ u} is shaded and whose contour is drawn bold.
    zmax : float, optional
        Clip heights above this loss (the surface is drawn flat there; colours keep the true loss).
    height_ratio : float
        Height of the drawn surface relative to the wider side of the plane.
    tube, sphere : float
        Tube and sphere radii as fractions of the wider side of the plane.
    """
    import pyvista as pv

    surf = scene.surface
    losses = surf.losses.numpy()
    a, b = surf.a.numpy(), surf.b.numpy()
    width = max(a[-1] - a[0], b[-1] - b[0])
    finite = losses[np.isfinite(losses)]
    if finite.size == 0:
        raise LandscapeError("the loss is NaN or infinite everywhere on the plane; choose a smaller span")
    # log heights: a point at (or near) loss 0 would sink without bound. The view's floor is the lowest
    # loss the grid resolves: its lowest, leaving out the points it has on the minima themselves (their
    # loss is often 0 or rounding, which would set the depth of the whole view); lower is drawn at it
    resolved = np.isfinite(losses) & (losses > 0)
    for i, j in marker_nodes(scene):
        resolved[i, j] = False
    positive = losses[resolved] if resolved.any() else finite[finite > 0]
    floor = float(positive.min()) if positive.size else 1e-12
    heights = Heights(log, floor, 1.0, 0.0, None)
    if zmax is not None:
        heights.zmax = float(heights.height(zmax))
    drawn = [heights.height(losses).ravel()] + [heights.height(c.losses.numpy()) for c in scene.curves] \
        + [heights.height(np.array([m.loss for m in scene.markers]))]
    h = np.concatenate(drawn)
    lo, hi = float(np.nanmin(h)), float(np.nanmax(h))
    # z = scale · f(loss), the scale a round number (see round_scale) near the one giving the asked
    # height ratio: a viewer that labels z itself (the HTML page) then reads f(loss) × scale
    heights.offset = 0.0
    heights.scale = round_scale(height_ratio * width / (hi - lo)) if hi > lo else 1.0

    aa, bb = np.meshgrid(a, b, indexing="ij")
    zz = heights.z(losses)
    zz = np.where(np.isfinite(zz), zz, np.nanmax(zz))
    grid = pv.StructuredGrid(aa, bb, zz)
    grid.point_data["loss"] = losses.ravel(order="F")
    grid.point_data["height"] = heights.height(losses).ravel(order="F")
    if log:
        grid.point_data["log10_loss"] = np.log10(np.maximum(losses, floor)).ravel(order="F")
    grid.field_data["axis_names"] = np.array(list(scene.plane.names))
    grid.field_data["z_scale"] = np.array([heights.scale])
    grid.field_data["z_offset"] = np.array([heights.offset])

    levels = auto_levels(losses, n_levels, log=log) if levels is None else [float(v) for v in levels]
    lift = 0.002 * height_ratio * width
    contours = _contour(grid, levels, lift, log)
    sublevel = level_line = None
    if level is not None:  # {L <= u} as its own dataset for the VTK files; views colour it on the surface
        sublevel = grid.clip_scalar(scalars="loss", value=float(level), invert=True)
        level_line = _contour(grid, [float(level)], 2 * lift, log)

    curves = {}
    for curve in scene.curves:
        pts = np.c_[curve.coords.numpy(), heights.z(curve.losses.numpy())]
        line = pv.lines_from_points(pts)
        line.point_data["loss"] = curve.losses.numpy()
        line.point_data["residual"] = curve.residual.numpy()
        line.point_data["arc_over_chord"] = curve.arc.numpy()
        if curve.steps is not None:
            line.point_data["step"] = curve.steps.numpy().astype(np.float64)
        curves[block_name(curve.kind, curve.label)] = line
    markers = {}
    for m in scene.markers:
        point = pv.PolyData(np.array([[float(m.coords[0]), float(m.coords[1]), float(heights.z(m.loss))]]))
        point.point_data["loss"] = np.array([m.loss])
        point.point_data["residual"] = np.array([m.residual])
        markers[block_name(m.kind, m.label)] = point
    below = int((losses < floor).sum()) + sum(m.loss < floor for m in scene.markers) if log else 0
    return SceneMeshes(heights, grid, contours, sublevel, level_line, curves, markers, levels,
                       {"tube": tube * width, "sphere": sphere * width}, below_floor=below)


def marker_nodes(scene: Scene) -> list[tuple[int, int]]:
    """Grid indices (i, j) of the surface's points that lie on a marker (a minimum or saddle it passes
    through, see ``evaluate_plane(through=...)``)."""
    a, b = scene.surface.a.numpy(), scene.surface.b.numpy()
    tol = 1e-9 * max(a[-1] - a[0], b[-1] - b[0])
    nodes = []
    for m in scene.markers:
        x, y = (float(c) for c in m.coords)
        i, j = int(np.abs(a - x).argmin()), int(np.abs(b - y).argmin())
        if abs(a[i] - x) <= tol and abs(b[j] - y) <= tol:
            nodes.append((i, j))
    return nodes


def _contour(grid, levels, lift, log):
    """Contour lines at ``levels`` of the drawn surface: of log10(loss) on a log view (so that they follow
    the colours, which interpolate log10(loss) between grid points), with their ``loss`` exactly the level."""
    levels = [float(v) for v in levels if not log or v > 0]
    if not levels:
        return None
    if log:
        lines = grid.contour(isosurfaces=list(np.log10(levels)), scalars="log10_loss")
        if lines.n_points:
            lines.point_data["loss"] = 10.0 ** lines.point_data["log10_loss"]
    else:
        lines = grid.contour(isosurfaces=levels, scalars="loss")
    if lines.n_points:
        lines.points[:, 2] += lift
    return lines
