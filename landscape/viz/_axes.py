"""The words and numbers around a 3-D view: its title, legend box and axis ticks.

Ticks are round numbers (:mod:`landscape.views.spans`) at the places VTK's cube axes put their labels
(evenly from one end of the box to the other), and the box is exactly the plane's span and a range of
heights that holds everything drawn, so that every label says the coordinate it stands at. The labels
are VTK's vector font drawn along the axes: a minus sign there is a thin bar, kept legible by a label
size of at least ``LABEL_SIZE`` (at VTK's default, 10, a slanted "-11" read ".11"). Two axes meet at
corners of the box, where their end labels would print over each other: the y axis and the foot of
the z axis leave their end labels out there.
"""

from __future__ import annotations

import textwrap

import numpy as np

from ..views.scene import Scene
from ..views.spans import nice_ticks, tick_text


def plane_phrase(plane) -> str:
    """What a plane is, in words: "the plane through a, b and c", "the (x, y) plane", ..."""
    info = plane.info
    anchors = [str(a) for a in info.get("anchors") or []]
    at = f" at {anchors[0]}" if anchors else ""
    if plane.kind == "identity":
        return "the (x, y) plane"
    if plane.kind == "points":
        if len(anchors) == 3:
            return f"the plane through {anchors[0]}, {anchors[1]} and {anchors[2]}"
        return "the plane through three points"
    if plane.kind == "pca":
        ratio = info.get("explained_variance_ratio") or []
        share = f", {100 * sum(ratio):.1f}% of their variance" if ratio else ""
        return f"the PCA plane of {info.get('cloud', 'the points')}{at}{share}"
    if plane.kind == "random":
        label = {"filter": "filter-normalized", "layer": "layer-normalized"}.get(info.get("normalization"), "random")
        seed = f", seed {info['seed']}" if "seed" in info else ""
        return f"a {label} random plane{at}{seed}" if label != "random" else f"a random plane{at}{seed}"
    return f"a {plane.kind} plane"


def default_title(scene: Scene, log: bool = False) -> str:
    """The problem, what is drawn and on which plane: "digits_mlp (D = 17,610): train loss (cross_entropy)
    on the plane through a, b and dss bead 4"."""
    problem = scene.problem
    name = problem.name + (f" (D = {problem.dim:,})" if problem.dim > 2 else "")
    what = ("log10 " if log else "") + scene.loss_name
    return f"{name}: {what} on {plane_phrase(scene.plane)}"


def place_title_and_legend(p, title: str, legend: list, width: int, height: int, font: int) -> None:
    """The title over the view's top-left corner, wrapped to the window's width, and the legend box below it
    sized to its text (characters are ~0.55 em wide; the box scales its text to fit); the colour bars
    start below them."""
    px = round(1.25 * font)
    per_line = max(20, int(0.94 * width / (0.56 * px)))
    lines = textwrap.wrap(title, per_line) or [""]
    top = height - 0.6 * px
    p.add_text("\n".join(lines), position=(round(0.012 * width), round(top - 1.2 * px * len(lines))),
               font_size=px / 2, color="black", name="title")
    bottom = (top - 1.2 * px * len(lines) - 0.4 * px) / height
    if legend:
        longest = max(len(row[0]) for row in legend)
        row = min(0.03, 0.4 / len(legend))
        size = (min(0.96, 0.5 * row * height / width * (longest + 4)), row * len(legend))
        box = p.add_legend([list(r) for r in legend], bcolor="white", border=True, loc="upper left", size=size)
        box.SetPosition(0.008, bottom - size[1])
        box.SetPosition2(*size)
        bottom -= size[1]
    for bar in p.scalar_bars.values():  # a bar's title stands ~2 label heights over its top
        x, y = bar.GetPosition()
        top_free = bottom - 3.5 * font / height
        if y + bar.GetHeight() > top_free:
            bar.SetHeight(max(0.2, top_free - y))


#: Size of the axis labels and titles, VTK's "screen size" (its default is 10).
LABEL_SIZE = 12.0
def axis_labels(lo: float, hi: float, most: int, fmt: str = "%.3g") -> tuple[list[str], bool]:
    """Labels of an axis from ``lo`` to ``hi`` at VTK's ticks, and whether they are round values: round
    when the range allows (at most ``most`` of them), else five values as ``fmt``."""
    for n in range(max(most, 2), 1, -1):
        ticks = nice_ticks(lo, hi, least=n, most=n)
        if ticks is not None:
            at = vtk_ticks(lo, hi, n)
            if len(at) == n and np.allclose(at, ticks, rtol=0, atol=1e-9 * (hi - lo)):
                return [tick_text(v, ticks[1] - ticks[0]) for v in ticks], True
    return [fmt % v for v in vtk_ticks(lo, hi, max(2, min(5, most)))], False


def vtk_ticks(lo: float, hi: float, n: int) -> list[float]:
    """Where VTK's cube axes put ``n`` labels from ``lo`` to ``hi``: evenly spaced while ``n`` is below the
    count of its own ticks, else on its own ticks (pyvista mirrors the rule; evenly spaced if it cannot)."""
    try:
        from pyvista.plotting.cube_axes_actor import _axis_label_values
    except ImportError:  # pragma: no cover - an older or newer pyvista
        return [float(v) for v in np.linspace(lo, hi, n)]
    return [float(v) for v in _axis_label_values(lo, hi, n)]


def draw_axes(p, scene: Scene, meshes, *, log: bool, font: int) -> None:
    """The box around the view with labelled x, y and z axes (see the module's notes)."""
    from vtkmodules.vtkCommonCore import vtkStringArray

    surf, heights = scene.surface, meshes.heights
    x0, x1, y0, y1 = (float(v) for v in (surf.a[0], surf.a[-1], surf.b[0], surf.b[-1]))
    drawn = [meshes.surface.points[:, 2]] + [m.points[:, 2] for m in meshes.curves.values()] \
        + [m.points[:, 2] for m in meshes.markers.values()]
    z = np.concatenate(drawn) / heights.scale + heights.offset
    # the box fits the heights (widened to round ends it made VTK move the y axis to the box's back edge)
    zlo, zhi = float(np.nanmin(z)), float(np.nanmax(z))
    zhi = zhi if zhi > zlo else zlo + 1.0
    names = scene.plane.names
    ztitle = ("log10 " if log else "") + scene.loss_name
    bounds = [x0, x1, y0, y1, heights.scale * (zlo - heights.offset), heights.scale * (zhi - heights.offset)]
    p.show_bounds(bounds=bounds, axes_ranges=[x0, x1, y0, y1, zlo, zhi], xtitle=names[0], ytitle=names[1],
                  ztitle=ztitle, color="black", font_size=font, location="outer", ticks="outside", n_xlabels=5,
                  n_ylabels=5, n_zlabels=4, fmt="%.3g")
    axes = p.renderer.cube_axes_actor
    if axes is None:
        return
    axes.SetScreenSize(LABEL_SIZE)
    axes.SetTitleOffset((30.0, 30.0))
    for axis, (a, b, most) in {0: (x0, x1, 6), 1: (y0, y1, 7), 2: (zlo, zhi, 4)}.items():
        labels, round_ = axis_labels(a, b, most)
        if axis == 1:  # its ends are corners shared with x (which of them, VTK decides by the view)
            labels[0] = labels[-1] = ""
        if axis == 2:  # its foot is x's end; an uneven top is left to the colour bar
            labels[0] = ""
            if not round_:
                labels[-1] = ""
        array = vtkStringArray()
        for text in labels:
            array.InsertNextValue(text)
        axes.SetAxisLabels(axis, array)
