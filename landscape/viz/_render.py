"""3-D views of a scene with pyvista: the surface warped by loss, level sets, paths, trajectories.

Off-screen by default: on a machine with no display VTK renders through EGL (Mesa's llvmpipe
where there is no GPU), with ``VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow`` set before VTK
loads so that it does not probe for X. One plotter serves every output: PNG, an interactive
HTML page, VTK files for ParaView, or a window when there is a display.
"""

from __future__ import annotations

import errno
import gc

import os
import sys
from pathlib import Path as FilePath

import numpy as np

from .._errors import LandscapeError
from .._registry import Registry
from ..views.scene import Scene
from ._meshes import SceneMeshes, block_name, scene_meshes
from ..io import atomic_write_file as write_atomic
from ._axes import default_title, draw_axes, place_title_and_legend
from ._output import quiet_vtk, write_multiblock

#: What each output suffix holds.
FORMATS = Registry("output format", {".png": "image", ".jpg": "image", ".jpeg": "image", ".html": "interactive page (vtk.js)",
           ".vtm": "every dataset (MultiBlock)", ".vts": "the surface (StructuredGrid)",
           ".vtp": "paths, trajectories and minima (PolyData)", ".vtk": "the surface (legacy VTK)"})
#: Solid colours of paths, in order; none occurs in the viridis or plasma colour maps.
PATH_COLORS = ("#ff00ff", "#ff7f0e", "#00a5ff", "#ff1493", "#32cd32", "#8b4513")
TRAJECTORY_COLOR = "#fafafa"
MINIMUM_COLOR = "#ff2020"
SADDLE_COLOR = "#e6ab02"
VIEWS = Registry("view", ("iso", "top", "side"))
PATH_COLORINGS = Registry("path colouring", ("solid", "length"))


def has_display() -> bool:
    """Whether an interactive window can open here."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def pyvista(*, off_screen: bool = True):
    """Import pyvista, set up for off-screen rendering when there is no display."""
    if sys.platform.startswith("linux") and not has_display():
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    try:
        import pyvista as pv
    except ImportError:
        raise LandscapeError("3-D views need pyvista: pip install 'landscape[viz]'") from None
    if off_screen:
        pv.OFF_SCREEN = True
    return pv


def plot_scene(scene: Scene, *, log: bool = False, levels=None, n_levels: int = 10, level: float | None = None,
               zmax: float | None = None, path_color: str = "solid", window_size=(1024, 768), view: str = "iso",
               opacity: float | None = None, cmap: str = "viridis", title: str | None = None,
               labels: bool = True, shade: bool = True, azimuth: float = -60.0, elevation: float = 35.0,
               off_screen: bool = True):
    """A pyvista plotter holding the view of a scene, and the datasets in it.

    Parameters
    ----------
    scene : Scene
    log : bool
        Heights and colours on a log10 scale.
    levels : sequence of float, optional
        Contour levels (``n_levels`` automatic ones when None).
    level : float, optional
        The level u: its sublevel set {L ≤ u} is shaded and its contour drawn bold. By default the
        level the first path was certified at, if any.
    zmax : float, optional
        Clip the drawn heights above this loss.
    path_color : {"solid", "length"}
        One colour per path (``PATH_COLORS``), or coloured by cumulative arc length over the chord.
    window_size : (int, int)
        Pixels, width × height.
    view : {"iso", "top", "side"}
        A perspective view from ``azimuth`` and ``elevation``, a map from above, or a side view.
    opacity : float, optional
        Of the surface; by default 1, or 0.65 when a path or trajectory runs off the plane (so that
        parts of it below the slice stay visible).
    cmap : str
        Colour map of the surface (matplotlib name).
    title : str, optional
    labels : bool
        Label each path on the view with its normalized length and max loss.
    shade : bool
        Shade the sublevel set at ``level`` (its contour is drawn either way).
    azimuth, elevation : float
        Direction the "iso" view looks from, in degrees: azimuth from the first plane direction
        towards the second, elevation above the plane.

    Returns
    -------
    plotter : pyvista.Plotter
    meshes : SceneMeshes
    """
    VIEWS.lookup(view)
    PATH_COLORINGS.lookup(path_color)
    width, height = (int(v) for v in window_size)
    if width < 16 or height < 16:
        raise LandscapeError(f"window size {window_size!r} is too small; give at least 16x16 pixels")
    pv = pyvista(off_screen=off_screen)
    if level is None:
        level = next((c.figures.get("level") for c in scene.curves if c.figures.get("level") is not None), None)
    meshes = scene_meshes(scene, log=log, levels=levels, n_levels=n_levels, level=level, zmax=zmax)
    surf = scene.surface
    side = max(float(surf.a[-1] - surf.a[0]), float(surf.b[-1] - surf.b[0]))
    off_plane = [c for c in scene.curves if float(c.residual.max()) > 1e-3 * side]
    if opacity is None:
        opacity = 0.65 if off_plane else 1.0

    p = pv.Plotter(off_screen=off_screen, window_size=(width, height))
    p.set_background("white")
    font = max(8, round(height / 55))
    # log colours map log10(loss) linearly (not a log lookup table): the HTML viewer draws them the same.
    # The sublevel set {L <= u} is lighter in the surface's own colours (a colour map with a step at u,
    # mapped before interpolation so the step is sharp inside cells), not a second surface laid over it
    scalars = "log10_loss" if log else "loss"
    clim = _clim(meshes.surface[scalars])
    cut = None
    if shade and level is not None and (level > 0 or not log):
        cut = float(meshes.heights.height(level)) if log else float(level)
    p.add_mesh(meshes.surface, scalars=scalars, cmap=shaded_cmap(cmap, clim, cut), clim=clim, opacity=opacity,
               smooth_shading=True, interpolate_before_map=True, n_colors=1024, nan_color="lightgrey", name="surface",
               scalar_bar_args={"title": ("log10 " if log else "") + scene.loss_name.split(" (")[0], "color": "black",
                                "vertical": True,
                                "position_x": 0.88, "position_y": 0.2, "height": 0.6, "width": 0.05,
                                "title_font_size": font + 2, "label_font_size": font, "fmt": "%.3g"})
    if meshes.contours is not None and meshes.contours.n_points:
        p.add_mesh(meshes.contours, color="black", line_width=1.2, name="contours", show_scalar_bar=False)
    if meshes.level_line is not None and meshes.level_line.n_points:
        p.add_mesh(meshes.level_line, color="white", line_width=3.5, name="level", show_scalar_bar=False)

    legend = [[title if title is not None else default_title(scene, log), "black", "none"]]
    if meshes.level_line is not None and meshes.level_line.n_points:
        legend.append([f"level u = {level:.4g}: white line" + (", lighter below" if cut is not None else ""),
                       "#9a9a9a", "rectangle"])
    if meshes.below_floor:
        floor = meshes.heights.floor
        legend.append([f"log scale: losses below {floor:.3g} (the grid's lowest off the minima) drawn at it",
                       "#606060", "none"])
    r_tube, r_sphere = meshes.radii["tube"], meshes.radii["sphere"]
    paths = [c for c in scene.curves if c.kind == "path"]
    for i, curve in enumerate(paths):
        line = meshes.curves[block_name("path", curve.label)]
        tube = _resting(line.tube(radius=r_tube, n_sides=16), r_tube)
        color = PATH_COLORS[i % len(PATH_COLORS)]
        if path_color == "length":
            p.add_mesh(tube, scalars="arc_over_chord", cmap="plasma", name=f"path {i}",
                       scalar_bar_args={"title": "arc length / chord", "color": "black", "vertical": True,
                                        "position_x": 0.06, "position_y": 0.08, "height": 0.35, "width": 0.04,
                                        "title_font_size": font, "label_font_size": font, "fmt": "%.2f"})
        else:
            p.add_mesh(tube, color=color, name=f"path {i}")
        text = path_text(curve)
        legend.append([text, color if path_color == "solid" else "black", "rectangle"])
        if labels:
            k = int(np.argmax(curve.losses.numpy()))
            p.add_point_labels(line.points[k:k + 1], [curve.label], font_size=font, text_color="black",
                               point_color=color, point_size=1, shape_color="white", shape_opacity=0.7,
                               always_visible=True, name=f"label {i}")
    for i, curve in enumerate(c for c in scene.curves if c.kind == "trajectory"):
        line = meshes.curves[block_name("trajectory", curve.label)]
        p.add_mesh(_resting(line.tube(radius=0.45 * r_tube, n_sides=10), 0.45 * r_tube), color=TRAJECTORY_COLOR,
                   name=f"trajectory {i}")
        start = pv.Cube(center=line.points[0], x_length=2.2 * r_sphere, y_length=2.2 * r_sphere,
                        z_length=2.2 * r_sphere)
        p.add_mesh(start, color=TRAJECTORY_COLOR, name=f"start {i}")
        if i == 0:
            trajs = [c for c in scene.curves if c.kind == "trajectory"]
            off = max(float(c.residual.max()) for c in trajs)
            legend.append([f"trajectories ({len(trajs)}, cube: start)"
                           + (f", off-plane <= {off:.3g}" if off > 1e-3 * side else ""), "#606060", "rectangle"])
    minima = [m for m in scene.markers if m.kind == "minimum"]
    saddles = [m for m in scene.markers if m.kind == "saddle"]
    for group, color, scale, name in ((minima, MINIMUM_COLOR, 1.0, "minima"), (saddles, SADDLE_COLOR, 0.7, "saddles")):
        if not group:
            continue
        centers = np.vstack([meshes.markers[block_name(m.kind, m.label)].points for m in group])
        spheres = pv.PolyData(centers).glyph(geom=pv.Sphere(radius=scale * r_sphere), scale=False, orient=False)
        p.add_mesh(spheres, color=color, name=name, smooth_shading=True)
        off = max(m.residual for m in group)
        legend.append([f"{name} ({len(group)})" + (f", off-plane <= {off:.3g}" if off > 1e-3 * side else ""),
                       color, "circle"])
    meshes.legend = [(str(row[0]), row[1], row[2]) for row in legend]  # for viewers that draw their own (HTML)
    place_title_and_legend(p, str(legend[0][0]), legend[1:], width, height, font)
    draw_axes(p, scene, meshes, log=log, font=font)
    _camera(p, view, azimuth, elevation)
    return p, meshes


def _clim(values) -> list[float]:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
    return [lo, hi if hi > lo else lo + 1.0]


#: How much lighter the sublevel set {L <= u} is drawn: its colours mixed this much with white.
SHADE = 0.45


def shaded_cmap(cmap: str, clim, cut: float | None, n: int = 1024):
    """``cmap`` as a colour table over ``clim``, its entries at or below ``cut`` mixed with white (``SHADE``)."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    colors = colormaps[cmap](np.linspace(0.0, 1.0, n))
    if cut is not None:
        centres = clim[0] + (np.arange(n) + 0.5) / n * (clim[1] - clim[0])
        below = centres <= cut
        colors[below, :3] = (1 - SHADE) * colors[below, :3] + SHADE
    return ListedColormap(colors)


def shade_level(plotter, meshes: SceneMeshes, level: float | None, *, log: bool = False,
                cmap: str = "viridis") -> None:
    """Colour the drawn surface (actor ``"surface"`` of :func:`plot_scene`) for another level u: {L <= u}
    lighter, nothing evaluated and no surface laid over it (a view whose u moves calls this)."""
    actor = plotter.actors.get("surface")
    if actor is None:
        return
    scalars = "log10_loss" if log else "loss"
    clim = _clim(meshes.surface[scalars])
    cut = None if level is None or (log and level <= 0) else float(meshes.heights.height(level)) if log else level
    table = shaded_cmap(cmap, clim, cut)(np.linspace(0.0, 1.0, 1024))
    lut = actor.mapper.lookup_table
    lut.values = np.round(255 * table).astype(np.uint8)
    lut.scalar_range = tuple(clim)


def _resting(tube, radius):
    """A tube raised by its radius, so that it rests on the loss it follows instead of sinking into the
    surface between grid points (its lowest line is the true loss)."""
    tube.points[:, 2] += radius
    return tube


def path_text(curve) -> str:
    """One line about a path: normalized length, max loss, status, and its distance from the plane."""
    f = curve.figures
    text = f"{curve.label}: length/chord {f['normalized_length']:.3f}, max loss {f['max_loss']:.4g}"
    if f.get("status") and f["status"] != "unchecked":
        proven = "proven " if f.get("certificate") == "bound" and f["status"] == "connected" else ""
        said = {"not_found": "no path found below the level"}.get(f["status"], f["status"])
        text += f" ({proven}{said} at {f['level']:.4g})"
    res = float(curve.residual.max())
    chord = f.get("chord") or 0.0
    if chord > 0 and res > 1e-6 * chord:
        text += f", off-plane <= {res:.3g} ({100 * res / chord:.0f}% of chord)"
    return text


def _camera(p, view, azimuth, elevation):
    if view == "top":  # a map: parallel projection, x to the right and y up
        p.view_xy()
        p.enable_parallel_projection()
    elif view == "side":
        p.view_xz()
        p.enable_parallel_projection()
    else:  # looking down at the plane from azimuth (degrees from +x towards +y) and elevation
        (x0, x1, y0, y1, z0, z1) = p.bounds
        center = np.array([(x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2])
        az, el = np.radians(azimuth), np.radians(elevation)
        direction = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        p.camera_position = [tuple(center + 10 * max(x1 - x0, y1 - y0, z1 - z0) * direction), tuple(center),
                             (0.0, 0.0, 1.0)]
    p.reset_camera()
    p.camera.zoom(0.75)
    if view not in ("top", "side"):  # the legend holds the top of the picture: move the box below it
        cam = p.camera
        pos, focal, up = (np.array(v, dtype=float) for v in (cam.position, cam.focal_point, cam.up))
        shift = 0.04 * np.linalg.norm(pos - focal) * np.tan(np.radians(cam.view_angle / 2)) * 2 * up
        cam.position, cam.focal_point = tuple(pos + shift), tuple(focal + shift)
    p.render()


def check_outputs(out, *, show: bool = False) -> list[FilePath]:
    """The output files as paths, checked before any work: known suffixes, a display for ``show``.

    Raises
    ------
    LandscapeError
    """
    outs = [] if out is None else [out] if isinstance(out, (str, os.PathLike)) else list(out)
    outs = [FilePath(o) for o in outs]
    for o in outs:
        if o.suffix.lower() not in FORMATS:
            raise LandscapeError(f"-o {o}: unknown output format {o.suffix or '(none)'}; {FORMATS.choices()}")
    if show and not has_display():
        raise LandscapeError("no display here for an interactive window; write -o view.html and open it in a browser")
    return outs


def render(scene: Scene, out=None, *, show: bool = False, **style):
    """Draw a scene, and write it to files or show it.

    Parameters
    ----------
    scene : Scene
    out : str, path or sequence of them, optional
        One file per output, by suffix (see :data:`FORMATS`): ``.png``/``.jpg`` an off-screen image,
        ``.html`` a self-contained interactive page, ``.vtm``/``.vts``/``.vtp``/``.vtk`` VTK files
        that ``pyvista.read`` and ParaView open. Every file is written atomically.
    show : bool
        Open an interactive window (needs a display).
    **style
        See :func:`plot_scene`.

    Returns
    -------
    list of pathlib.Path, or ndarray of shape (H, W, 3)
        The files written; the image itself when neither ``out`` nor ``show`` is given.
    """
    outs = check_outputs(out, show=show)
    plotter, meshes = plot_scene(scene, off_screen=not show, **style)
    try:
        written = [_write(plotter, meshes, o) for o in outs]
        if show:
            plotter.show()
            return written
        if not outs:
            return np.asarray(plotter.screenshot(return_img=True))
        return written
    finally:
        plotter.close()


def _write(plotter, meshes: SceneMeshes, out: FilePath) -> FilePath:
    kind = out.suffix.lower()
    if kind in (".png", ".jpg", ".jpeg"):
        return write_atomic(out, lambda tmp: _screenshot_checked(plotter, tmp))
    if kind == ".html":
        from ._html import html_text

        # the web viewer labels the z axis with drawn heights, z = scale · f(loss) (a round scale), and
        # places axis titles where long ones are cut at the page's edge: the axis is "z", the legend says what
        axes, heights = plotter.renderer.cube_axes_actor, meshes.heights
        title = axes.GetZTitle() if axes is not None else None
        legend = list(meshes.legend)
        if axes is not None:
            axes.SetZTitle("z")
            said = title if heights.scale == 1.0 else f"{title} \u00d7 {heights.scale:g}"
            legend.insert(1, (f"z axis: {said}", "black", "none"))
        try:
            text = html_text(plotter, legend=legend)
        finally:
            if axes is not None:
                axes.SetZTitle(title)
            gc.collect()  # the exporter's serializers go now, while the scene they refer to is still alive
        return write_atomic(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    if kind == ".vtm":
        return write_multiblock(out, meshes.multiblock())
    data = meshes.polydata() if kind == ".vtp" else meshes.surface
    return write_atomic(out, lambda tmp: save_checked(data, tmp))


def _screenshot_checked(plotter, tmp: FilePath) -> None:
    """A screenshot, verified to decode (an image writer on a full disk can leave a truncated file)."""
    from PIL import Image

    plotter.screenshot(str(tmp), return_img=False)
    try:
        with Image.open(tmp) as image:
            image.load()
    except Exception:  # noqa: BLE001 - a file that does not decode is incomplete
        raise OSError(errno.EIO, "the image writer left an incomplete file (is the disk full?)") from None


def save_checked(data, tmp: FilePath) -> None:
    """Save a VTK dataset and read it back: VTK's writers report a full disk on stderr and leave a
    truncated file, so a file that does not read back whole is an error (its target is left intact); VTK's
    own reports of the failure are silenced, the caller gives one line."""
    import pyvista

    with quiet_vtk():
        data.save(str(tmp))
    try:
        with quiet_vtk():
            back = pyvista.read(str(tmp))
        whole = (back.n_points == data.n_points and back.n_cells == data.n_cells
                 and np.allclose(back.points, data.points) and back.array_names == data.array_names
                 and all(np.allclose(back[n], data[n], equal_nan=True) for n in data.point_data))
    except Exception:  # noqa: BLE001 - any failure to read back is an incomplete file
        whole = False
    if not whole:
        raise OSError(errno.EIO, "the VTK writer left an incomplete file (is the disk full?)")
