"""2-D companions of the 3-D views, with matplotlib: where a flat chart reads better.

- the loss along paths (every method on one chart), evaluated densely between knots;
- the normalized geodesic length against the level (Freeman & Bruna, ICLR 2017, Figure 2), and
  as a surface over (level, width) when a study provides the table.

Figures are ``matplotlib.figure.Figure`` objects made without pyplot (no global state, no GUI
backend); :func:`save_figure` writes them atomically.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path as FilePath
from typing import Mapping

import numpy as np
import torch

from .._errors import LandscapeError
from .._registry import Registry
from ..paths.path import Path, interpolate
from ..io import atomic_write_file as write_atomic, read_text

#: What the x axis of a path-loss chart measures.
PATH_AXES = Registry("x axis", ("t", "distance", "arc_over_chord"))


def figure(width: float = 7.0, height: float = 4.5):
    """A fresh matplotlib Figure (no pyplot)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise LandscapeError("charts need matplotlib: pip install 'landscape[viz]'") from None
    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig, out, *, dpi: int = 120) -> FilePath:
    """Write a figure to ``out`` (format from the suffix: .png, .pdf, .svg, ...) atomically."""
    out = FilePath(out)
    if not out.suffix:
        raise LandscapeError(f"-o {out}: give a file name with a suffix such as .png, .pdf or .svg")
    formats = fig.canvas.get_supported_filetypes()
    if out.suffix[1:].lower() not in formats:
        raise LandscapeError(f"-o {out}: charts are written as {', '.join('.' + f for f in sorted(formats))}; "
                             "choose one of those suffixes")
    return write_atomic(out, lambda tmp: fig.savefig(tmp, dpi=dpi, format=out.suffix[1:].lower()))


def path_profiles(paths: Mapping[str, Path], problem=None, *, resolution: int = 16, split: str = "train",
                  device="cpu", dtype=torch.float32) -> dict[str, dict]:
    """Loss along each path against t, distance and arc length over chord.

    With a ``problem`` every segment is cut into ``resolution`` pieces and all paths' points are
    evaluated in one batched call; without one the knots' stored losses are used.

    Returns
    -------
    dict of str to dict
        Per path: ``t`` [n], ``distance`` [n] (cumulative length in parameter space),
        ``arc_over_chord`` [n] and ``loss`` [n], numpy arrays.
    """
    dense = {}
    for name, path in paths.items():
        pts, t = (interpolate(path.points.detach().cpu().double(), path.t.detach().cpu().double(), resolution)
                  if problem is not None else (path.points.detach().cpu().double(), path.t.detach().cpu().double()))
        dense[name] = (pts, t)
    if problem is not None and dense:
        stacked = torch.cat([p for p, _ in dense.values()])
        with torch.no_grad():
            values = problem.loss(stacked.to(device=device, dtype=dtype), split=split).cpu().double()
    out, start = {}, 0
    for name, (pts, t) in dense.items():
        n = pts.shape[0]
        loss = values[start:start + n] if problem is not None else paths[name].losses.detach().cpu().double()
        start += n
        seg = (pts[1:] - pts[:-1]).norm(dim=1)
        dist = torch.cat([seg.new_zeros(1), seg.cumsum(0)])
        chord = float((pts[-1] - pts[0]).norm())
        out[name] = {"t": t.numpy(), "distance": dist.numpy(),
                     "arc_over_chord": (dist / chord).numpy() if chord > 0 else dist.numpy(),
                     "loss": loss.numpy()}
    return out


def plot_path_losses(paths: Mapping[str, Path], problem=None, *, level: float | None = None, x: str = "t",
                     log: bool = False, resolution: int = 16, split: str = "train", ax=None, title=None):
    """The loss along each path, all on one chart.

    Parameters
    ----------
    paths : dict of str to Path
        Labelled paths (several methods between the same minima read best together).
    problem : Problem, optional
        Evaluate densely between knots (one batched call); else plot the knots' losses.
    level : float, optional
        Draw the level u; by default the level the first path was certified at.
    x : {"t", "distance", "arc_over_chord"}
        Position along the path in [0, 1], parameter distance, or distance over the chord (ends at
        the normalized geodesic length).
    log : bool
        Log-scale loss axis.
    title : str, optional
        By default the problem and what is drawn ("ring: loss along a and b"); "" for none.

    Returns
    -------
    matplotlib.figure.Figure
    """
    PATH_AXES.lookup(x)
    if not paths:
        raise LandscapeError("no paths to chart")
    fig, ax = _fig_ax(ax)
    profiles = path_profiles(paths, problem, resolution=resolution, split=split)
    for name, prof in profiles.items():
        p = paths[name]
        line, = ax.plot(prof[x], prof["loss"], lw=1.8,
                        label=f"{name} ({p.method}): length/chord {p.normalized_length:.3f}, "
                              f"max {max(p.max_loss, float(prof['loss'].max())):.4g}")
        knots = prof[x] if problem is None else np.interp(p.t.detach().cpu().double().numpy(), prof["t"], prof[x])
        ax.plot(knots, p.losses.detach().cpu().numpy(), "o", ms=3, color=line.get_color())
    if level is None:
        level = next((p.level for p in paths.values() if p.level is not None), None)
    if level is not None:
        ax.axhline(level, ls="--", color="black", lw=1, label=f"level u = {level:.4g}")
    ax.set_xlabel({"t": "position along the path, t", "distance": "distance along the path (parameter space)",
                   "arc_over_chord": "arc length / chord"}[x])
    what = f"{split} loss" if problem is not None and problem.splits else "loss"
    ax.set_ylabel(what)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    if title is None:  # the problem, and what is drawn
        names = list(paths)
        along = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names) if len(names) <= 3 \
            else f"{len(names)} paths"
        title = (f"{problem.name}: " if problem is not None else "") + f"{what} along {along}" + \
            (" (log scale)" if log else "")
    if title:
        ax.set_title(title, fontsize="medium")
    return fig


def read_rows(file) -> list[dict]:
    """Rows of a table from a CSV file (header line) or a JSON list of objects (or ``{"rows": [...]}``).

    Numbers are read as floats; empty cells as None.
    """
    file = FilePath(file)
    if not file.is_file():
        raise LandscapeError(f"{file}: no such file")
    text = read_text(file, "table")
    if file.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise LandscapeError(f"{file}: not valid JSON ({err})") from None
        rows = data.get("rows") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise LandscapeError(f"{file}: expected a list of objects (or {{\"rows\": [...]}})")
        return rows
    rows = list(csv.DictReader(text.splitlines()))
    return [{k: _number(v) for k, v in r.items()} for r in rows]


def length_table(rows, *, x: str = "level", y: str = "width", value: str = "normalized_length"):
    """Pivot rows into a grid: sorted x values, sorted y values, and the mean value in each cell.

    Returns
    -------
    xs : ndarray, shape (X,)
    ys : ndarray, shape (Y,)
    z : ndarray, shape (X, Y)
        Mean of ``value`` over the rows of each (x, y); NaN where there is none (or none finite).
    """
    triples = []
    for i, r in enumerate(rows):
        try:
            triples.append((float(r[x]), float(r[y]), _float(r.get(value))))
        except (KeyError, TypeError, ValueError):
            raise LandscapeError(f"row {i} of the table lacks a number in {x!r} or {y!r}: {r}") from None
    if not triples:
        raise LandscapeError("the table has no rows")
    xs = np.array(sorted({t[0] for t in triples}))
    ys = np.array(sorted({t[1] for t in triples}))
    total, count = np.zeros((len(xs), len(ys))), np.zeros((len(xs), len(ys)))
    for a, b, v in triples:
        if math.isfinite(v):
            i, j = int(np.searchsorted(xs, a)), int(np.searchsorted(ys, b))
            total[i, j] += v
            count[i, j] += 1
    with np.errstate(invalid="ignore"):
        return xs, ys, np.where(count > 0, total / np.maximum(count, 1), np.nan)


def plot_lengths(rows, *, by: str | None = None, x: str = "level", value: str = "normalized_length",
                 log_x: bool = False, ax=None, title=None):
    """Normalized geodesic length against the level, one line per group (method, width, pair, ...).

    Freeman & Bruna (ICLR 2017, Figure 2) read the curvature of level sets this way: a length that
    grows as the level falls says the sublevel sets bend (and near a disconnection, explode).
    Rows whose value is missing or not finite (no path found) are marked with a cross on the axis.
    """
    fig, ax = _fig_ax(ax)
    groups: dict = {}
    for i, r in enumerate(rows):
        if x not in r:
            raise LandscapeError(f"row {i} of the table has no {x!r} column: {r}")
        groups.setdefault(r.get(by) if by else value, []).append(r)
    if not groups:
        raise LandscapeError("the table has no rows")
    for key, group in groups.items():
        pts = sorted((float(r[x]), _float(r.get(value))) for r in group)
        xs = np.array([p[0] for p in pts])
        ys = np.array([p[1] for p in pts])
        ok = np.isfinite(ys)
        label = f"{by} = {key}" if by else None
        line, = ax.plot(xs[ok], ys[ok], "o-", ms=4, label=label)
        if (~ok).any():
            ax.plot(xs[~ok], np.ones((~ok).sum()), "x", color=line.get_color(), ms=8)
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel("normalized geodesic length (length / chord)")
    if log_x:
        ax.set_xscale("log")
    if by:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return fig


def plot_length_surface(rows, *, x: str = "level", y: str = "width", value: str = "normalized_length",
                        log_x: bool = False, title=None):
    """The normalized geodesic length as a surface over (level, width), from a study's table."""
    from mpl_toolkits.mplot3d import Axes3D  # noqa: F401 - registers the 3d projection

    xs, ys, z = length_table(rows, x=x, y=y, value=value)
    if len(xs) < 2 or len(ys) < 2:
        raise LandscapeError(f"a surface needs at least two values of {x!r} and of {y!r}; "
                             f"the table has {len(xs)} and {len(ys)}")
    fig = figure(7.0, 5.5)
    ax = fig.add_subplot(projection="3d")
    gx = np.log10(xs) if log_x else xs
    X, Y = np.meshgrid(gx, ys, indexing="ij")
    masked = np.ma.masked_invalid(z)
    ax.plot_surface(X, Y, masked, cmap="viridis", edgecolor="k", linewidth=0.3, alpha=0.9)
    ok = np.isfinite(z)
    ax.scatter(X[ok], Y[ok], z[ok], color="black", s=8)
    ax.set_xlabel(("log10 " if log_x else "") + x.replace("_", " "))
    ax.set_ylabel(y.replace("_", " "))
    ax.set_zlabel("length / chord")
    if title:
        ax.set_title(title)
    return fig


def _fig_ax(ax):
    if ax is not None:
        return ax.figure, ax
    fig = figure()
    return fig, fig.add_subplot()


def _number(v):
    if v is None or str(v).strip() == "":
        return None
    try:
        return float(v)
    except ValueError:
        return v


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")
