"""The merge tree drawn for the explorer's side panel: a PNG that stays readable at the panel's size.

:func:`plot_disconnectivity` lays its chart out for a page (the legend right of the axes, leaf names
rotated under them); in a 420-pixel panel that clipped the title and the legend, and the leaf names and
the tick labels of a log axis ran into one another. Here the same chart is laid out for the panel: the
title wrapped, the legend under the axes, the minima named by what tells them apart (the common prefix
of their names said once, in the axis label), and a tick label that would overlap another one left out.
:class:`TreeImage` keeps where every text was drawn (so that a test can check the panel is readable)
and where each merge is (so that a click on it moves u there).
"""

from __future__ import annotations

import io
import os
import textwrap
from dataclasses import dataclass, field
from typing import Mapping

from ._tree import _label, merge_tree, plot_disconnectivity

#: Average width of a character of the panel's fonts, in font sizes (DejaVu Sans: about 0.6 em).
EM = 0.62


@dataclass
class TreeImage:
    """A disconnectivity graph drawn as a PNG, with where its merges and its texts are in the image.

    Attributes
    ----------
    png : bytes
    size : (int, int)
        Width and height in pixels.
    merges : list of (float, float, float)
        Each merge bar as (x pixel, y pixel from the top, level).
    texts : list of (str, (float, float, float, float))
        Every text drawn (title, axis labels, tick labels, legend rows): its text and its box
        ``(x0, y0, x1, y1)`` in pixels from the top left corner.
    """

    png: bytes
    size: tuple
    merges: list
    _to_level: object = None
    texts: list = field(default_factory=list)

    def level_at(self, x: float, y: float, *, snap: float = 12.0) -> float | None:
        """The level a click at pixel (x, y) points to: a merge's level when within ``snap`` pixels of its
        bar, else the level at that height inside the axes, else None."""
        near = [(abs(px - x) + abs(py - y), level) for px, py, level in self.merges]
        best = min(near, default=None)
        if best is not None and best[0] <= snap:
            return best[1]
        return self._to_level(x, y) if self._to_level is not None else None


def short_names(names) -> tuple[list[str], str]:
    """Names with what they all share cut off at a separator, and the shared part with … for the names.

    ``["hb_s3", "hb_s7"]`` -> ``(["s3", "s7"], "hb_…")``; ``["run1_final", "run2_final"]`` ->
    ``(["run1", "run2"], "…_final")``. A common start or end is cut only at a character that is not a letter
    or a digit (``seed3``/``seed7`` keep their names), and only where every name keeps something.
    """
    names = [str(n) for n in names]
    if len(names) < 2:
        return names, "…"
    shortest = min(len(n) for n in names)
    start = os.path.commonprefix(names)
    cut = max((i + 1 for i, c in enumerate(start) if not c.isalnum()), default=0)
    while cut >= shortest or (cut > 0 and start[cut - 1].isalnum()):
        cut -= 1
    end = os.path.commonprefix([n[cut:][::-1] for n in names])[::-1]
    tail = max((len(end) - i for i, c in enumerate(end) if not c.isalnum()), default=0)
    while tail > 0 and (tail >= shortest - cut or end[-tail].isalnum()):
        tail -= 1
    short = [n[cut:len(n) - tail] for n in names]
    return short, names[0][:cut] + "…" + (names[0][len(names[0]) - tail:] if tail else "")


def tree_image(minima: Mapping[str, float], merges, *, level: float | None = None, tol: float | None = None,
               log_floor: float | None = None, size=(420, 480), title=None, colors=None) -> TreeImage:
    """Draw :func:`plot_disconnectivity` as a PNG for a panel ``size`` pixels wide and high, and say where its
    merges and texts are.

    Parameters
    ----------
    minima, merges, level, tol
        See :func:`plot_disconnectivity`.
    log_floor : float, optional
        A symmetric-log loss axis, linear below this level (a loss of 0 stays drawable).
    size : (int, int)
        Pixels, width × height.
    title : str, optional
        The start of the title (the counts at u follow it).
    colors : dict of str to str, optional
        A colour for each minimum's dot (its valley's, in the explorer).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    dpi, (width, height) = 100, (int(size[0]), int(size[1]))
    tree = merge_tree(minima, merges)
    fig = plot_disconnectivity(minima, merges, level=level, tol=tol, title=title)
    FigureCanvasAgg(fig)
    fig.set_size_inches(width / dpi, height / dpi)
    fig.set_dpi(dpi)
    ax = fig.axes[0]
    legend = ax.get_legend()
    handles, rows = legend.legend_handles, [t.get_text() for t in legend.get_texts()]
    legend.remove()
    if colors and rows and rows[0] == "valley with a global minimum":  # the dots say the valley at u, not blue
        from matplotlib.lines import Line2D

        handles[0], rows[0] = Line2D([], [], color="black"), "valley with a global minimum (dots: valley at u)"
    def chars(fontsize: float, room: float) -> int:  # characters of a line ``room`` pixels wide
        return max(20, int(room / (EM * fontsize * dpi / 72)))

    ax.set_title(textwrap.fill(ax.get_title(), chars(9, 0.95 * width)), fontsize=9)
    order = sorted(tree.x, key=tree.x.get)
    labels, pattern = short_names([_label(m) for m in order])
    spacing = 0.8 * width / max(1, len(order))  # the axes take about 80% of the width
    upright = max(map(len, labels)) * EM * 8 <= 0.9 * spacing
    ax.set_xticks([tree.x[m] for m in order], labels, rotation=0 if upright else 90, ha="center", fontsize=8)
    ax.set_xlim(-0.6, len(order) - 0.4)  # the outer dots whole
    ax.set_xlabel(f"minima ({pattern})" if pattern != "…" else "minima", fontsize=8)
    ax.yaxis.label.set_fontsize(8)
    ax.tick_params(axis="y", labelsize=8)
    if colors:
        names = [m for m in tree.x if m in colors]
        ax.scatter([tree.x[m] for m in names], [tree.losses[m] for m in names], s=42, zorder=3,
                   c=[colors[m] for m in names], edgecolors="#333333", linewidths=0.8)
    if log_floor is not None:
        ax.set_yscale("symlog", linthresh=log_floor)
        top = max(n["level"] for n in tree.nodes)
        ax.set_ylim(min(min(tree.losses.values()), 0.0), max(ax.get_ylim()[1], 2.0 * top if top > 0 else top))
    fig.legend(handles, [textwrap.fill(r.replace("\n", " "), chars(8, 0.85 * width)) for r in rows],  # + handles
               loc="outside lower center", fontsize=8, frameon=False, handlelength=1.8)
    fig.draw_without_rendering()  # lays it out: where every text goes, without drawing a pixel
    fig.set_layout_engine("none")  # the layout as drawn: what is left out below keeps the rest in place
    renderer = fig.canvas.get_renderer()
    for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        _keep_apart(axis, lim, renderer, (width, height))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi="figure")
    spots = []
    for n in tree.nodes:
        if len(n["members"]) > 1:
            px, py = ax.transData.transform((n["x"], n["level"]))
            spots.append((float(px), float(height - py), float(n["level"])))
    inverse, box = ax.transData.inverted(), ax.bbox

    def to_level(x, y):
        if not (box.x0 <= x <= box.x1 and box.y0 <= height - y <= box.y1):
            return None
        return float(inverse.transform((x, height - y))[1])

    texts = [ax.title, ax.xaxis.label, ax.yaxis.label, *_drawn(ax.xaxis, ax.get_xlim()),
             *_drawn(ax.yaxis, ax.get_ylim()), *fig.legends[0].get_texts()]
    boxes = []
    for t in texts:
        if t.get_visible() and t.get_text().strip():
            b = t.get_window_extent(renderer)
            boxes.append((t.get_text(), (float(b.x0), float(height - b.y1), float(b.x1), float(height - b.y0))))
    fig.clear()
    return TreeImage(buf.getvalue(), (width, height), spots, to_level, boxes)


def _drawn(axis, lim) -> list:
    """The tick labels of ``axis`` inside its view (those drawn)."""
    lo, hi = sorted(lim)
    return [t for loc, t in zip(axis.get_majorticklocs(), axis.get_ticklabels()) if lo <= loc <= hi]


def _keep_apart(axis, lim, renderer, size) -> None:
    """Keep the tick labels of ``axis`` that fit in the image and overlap no label kept before them."""
    lo, hi = sorted(lim)
    ticks = [(loc, t) for loc, t in zip(axis.get_majorticklocs(), axis.get_ticklabels())
             if lo <= loc <= hi and t.get_text().strip()]
    kept, boxes = [], []
    for loc, t in ticks:
        b = t.get_window_extent(renderer)
        inside = b.x0 >= 0 and b.y0 >= 0 and b.x1 <= size[0] and b.y1 <= size[1]
        if inside and not any(b.x0 < k.x1 and k.x0 < b.x1 and b.y0 < k.y1 and k.y0 < b.y1 for k in boxes):
            kept.append((loc, t.get_text()))
            boxes.append(b)
    if len(kept) < len(ticks):
        ax = axis.axes
        xlim, ylim = ax.get_xlim(), ax.get_ylim()
        axis.set_ticks([loc for loc, _ in kept], [text for _, text in kept])
        ax.set_xlim(xlim)
        ax.set_ylim(ylim)
