"""A 3-D view whose level u moves: the sublevel set re-shaded, minima coloured by valley, paths lit below u.

The surface is evaluated once (the scene); a new level only clips the drawn surface at u, draws
its contour and recolours markers and tubes, so a change of u costs a render, not a loss
evaluation.
"""

from __future__ import annotations

import numpy as np

from ..views.levels import Levels, LevelState
from ..views.scene import Scene
from ._meshes import block_name
from ._render import PATH_COLORS, default_title, plot_scene, pyvista, shaded_cmap

#: Colours of the valleys at u, lowest valley first: none is white (the shaded sublevel set) or in viridis.
VALLEY_COLORS = ("#e41a1c", "#000000", "#ff7f00", "#f781bf", "#a65628", "#ffff33", "#4d4dff", "#00ced1")
#: Minima whose loss is above u belong to no valley yet.
ABOVE_COLOR = "#9e9e9e"
#: Paths whose certified max is above u.
DIM_COLOR = "#b0b0b0"


def valley_color(k) -> str:
    """The colour of valley ``k`` at a level (``ABOVE_COLOR`` for None: a minimum above u)."""
    return ABOVE_COLOR if k is None else VALLEY_COLORS[k % len(VALLEY_COLORS)]


def path_label(curve) -> str:
    """A path's label on the view: its normalized length, max loss and what certifies it."""
    f = curve.figures
    text = f"{curve.label}: length/chord {f['normalized_length']:.3f}, max loss {f['max_loss']:.4g}"
    if f.get("status") == "connected":
        text += " (proven)" if f.get("certificate") == "bound" else " (grid-checked)"
    elif f.get("status") == "not_found" and f.get("level") is not None:
        text += f" (not below its level {f['level']:.4g})"
    return text


class LevelView:
    """A pyvista plotter showing a scene at a level u that can change.

    Parameters
    ----------
    scene : Scene
    levels : Levels
        The valley graph over u; its minima are the scene's minimum markers, in order.
    level : float
    log : bool
        Heights and colours of the surface on a log10 scale.
    window_size : (int, int)
    **style
        Passed to :func:`plot_scene`.
    """

    def __init__(self, scene: Scene, levels: Levels, level: float, *, log: bool = False, window_size=(900, 700),
                 **style):
        self.scene, self.levels = scene, levels
        self.minima = [m for m in scene.markers if m.kind == "minimum"]
        if len(self.minima) != levels.graph.n:
            raise ValueError(f"{len(self.minima)} minima drawn but {levels.graph.n} in the valley graph")
        self.paths = [c for c in scene.curves if c.kind == "path"]
        self.trajectories = [c for c in scene.curves if c.kind == "trajectory"]
        self.plotter, self.meshes = plot_scene(scene, log=log, level=level, window_size=window_size, labels=False,
                                               shade=False, **style)  # set_level shades it
        self.pv = pyvista()
        p = self.plotter
        p.remove_actor("minima")
        p.remove_legend()
        p.remove_actor("title")  # plot_scene's title: this view's legend holds it
        r_sphere = self.meshes.radii["sphere"]
        self.sphere = self.pv.Sphere(radius=1.15 * r_sphere)
        self.centers = np.vstack([self.meshes.markers[block_name("minimum", m.label)].points for m in self.minima])
        legend = [[default_title(scene), "black", "none"]]
        legend += [[path_label(c), PATH_COLORS[i % len(PATH_COLORS)], "rectangle"] for i, c in enumerate(self.paths)]
        if self.trajectories:
            legend.append([f"gradient-descent trajectories ({len(self.trajectories)}, cube: start)", "#606060",
                           "rectangle"])
        legend.append(["minima: colour = valley at u, grey = above u", VALLEY_COLORS[0], "circle"])
        width, height = window_size
        longest = max(len(row[0]) for row in legend)
        row = min(0.03, 0.4 / len(legend))
        p.add_legend(legend, bcolor="white", border=True, loc="upper left",
                     size=(min(0.95, 0.5 * row * height / width * (longest + 4)), row * len(legend)))
        self.font = max(8, round(height / 55))
        self.log, self._loss_title = log, scene.loss_name.split(" (")[0]
        self.cmap = style.get("cmap", "viridis")
        self.level = None
        self.set_level(level)

    def set_level(self, level: float, *, render: bool = True) -> LevelState:
        """Re-shade the view at ``level`` and return the valleys there (no loss is evaluated); ``render``: draw
        it now (a screenshot then shows it), else leave it to whoever shows it next (the page's next frame)."""
        level = float(level)
        at = self.levels.at(level)
        p, m = self.plotter, self.meshes
        lift = 0.002 * 0.6 * max(np.ptp(m.surface.points[:, 0]), np.ptp(m.surface.points[:, 1]))
        self._shade(level)
        line = m.surface.contour(isosurfaces=[level], scalars="loss")
        if line.n_points:
            line.points[:, 2] += 2 * lift
            p.add_mesh(line, color="white", line_width=3.5, name="level", show_scalar_bar=False, reset_camera=False,
                       render=False)
        else:
            p.remove_actor("level")
        # minima: one sphere each, coloured by its valley at u
        colors = np.array([_rgb(valley_color(k)) for k in at.valley_of], dtype=np.uint8)
        spheres = self.pv.PolyData(self.centers)
        spheres.point_data["rgb"] = colors
        glyphs = spheres.glyph(geom=self.sphere, scale=False, orient=False)
        p.add_mesh(glyphs, scalars="rgb", rgb=True, name="minima", smooth_shading=True, show_scalar_bar=False,
                   reset_camera=False, render=False)
        spurious = [(i, "spurious" if at.spurious_proven[k] else "spurious if apart")
                    for k, v in enumerate(at.valleys) if at.spurious[k] for i in v[:1]]
        if spurious:
            p.add_point_labels(self.centers[[i for i, _ in spurious]], [t for _, t in spurious], font_size=self.font,
                               text_color="#b00000", point_size=1, shape_color="white", shape_opacity=0.8,
                               always_visible=True, name="spurious")
        else:
            p.remove_actor("spurious")
        # paths: lit in their colour when their certified max is <= u, else dimmed
        for i, curve in enumerate(self.paths):
            actor = p.actors.get(f"path {i}")
            if actor is None:
                continue
            below = curve.figures["max_loss"] <= level
            actor.prop.color = PATH_COLORS[i % len(PATH_COLORS)] if below else DIM_COLOR
            actor.prop.opacity = 1.0 if below else 0.45
        self.level = level
        if render:
            self.plotter.render()  # once, after every change
        return at

    def _shade(self, level: float) -> None:
        """The surface's own colours lightened at and below u, in the scale they are drawn in (a second, white
        surface laid over it z-fought it in steep valleys: grey shards)."""
        actor = self.plotter.actors.get("surface")
        if actor is None:
            return
        mapper = actor.GetMapper()
        clim = mapper.GetScalarRange()
        cut = (float(np.log10(level)) if level > 0 else None) if self.log else level
        table = shaded_cmap(self.cmap, clim, cut)(np.linspace(0.0, 1.0, 1024))
        lut = actor.mapper.lookup_table
        lut.values = np.round(255 * table).astype(np.uint8)
        lut.scalar_range = tuple(clim)

    def color_scale(self, *, log: bool, floor: float | None = None) -> None:
        """Colour the surface by log10 of the loss (losses below ``floor`` at the floor; by default the lowest
        positive loss) or by the loss, its colour bar too; heights stay as drawn."""
        surface = self.meshes.surface
        name = "log10_loss" if log else "loss"
        if log:
            loss = np.asarray(surface.point_data["loss"], dtype=float)
            if floor is None:
                positive = loss[np.isfinite(loss) & (loss > 0)]
                floor = float(positive.min()) if positive.size else 1e-12
            with np.errstate(invalid="ignore"):
                surface.point_data[name] = np.log10(np.maximum(loss, floor))
        values = np.asarray(surface.point_data[name], dtype=float)
        values = values[np.isfinite(values)]
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        mapper = self.plotter.actors["surface"].GetMapper()
        mapper.SetScalarModeToUsePointFieldData()
        mapper.SelectColorArray(name)
        mapper.SetScalarRange(low, high)
        mapper.GetLookupTable().SetRange(low, high)
        for title, bar in list(self.plotter.scalar_bars.items()):
            if bar.GetLookupTable() is mapper.GetLookupTable() or title.removeprefix("log10 ") == self._loss_title:
                bar.SetTitle(("log10 " if log else "") + self._loss_title)
        self.log = log
        if self.level is not None:
            self._shade(self.level)
        self.plotter.render()

    def snapshot(self, quality: int = 80) -> str:
        """The view as it is now, a JPEG ``data:`` URL (what a page shows before its first frame)."""
        import base64
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(self.plotter.screenshot(return_img=True)).convert("RGB").save(buf, "JPEG", quality=quality)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()

    def path_below(self, level: float) -> list[bool]:
        return [c.figures["max_loss"] <= level for c in self.paths]

    def show_trajectories(self, show: bool) -> None:
        for i in range(len(self.trajectories)):
            for name in (f"trajectory {i}", f"start {i}"):
                if name in self.plotter.actors:
                    self.plotter.actors[name].SetVisibility(bool(show))

    def label_paths(self) -> None:
        """Label each path at its highest point with its normalized length and certificate."""
        for i, curve in enumerate(self.paths):
            line = self.meshes.curves[block_name("path", curve.label)]
            k = int(np.argmax(curve.losses.numpy()))
            self.plotter.add_point_labels(line.points[k:k + 1], [path_label(curve)], font_size=self.font,
                                          text_color="black", point_size=1, shape_color="white", shape_opacity=0.7,
                                          always_visible=True, name=f"label {i}")

    def close(self) -> None:
        self.plotter.close()


def _rgb(color: str) -> tuple:
    color = color.lstrip("#")
    return tuple(int(color[i:i + 2], 16) for i in (0, 2, 4))

