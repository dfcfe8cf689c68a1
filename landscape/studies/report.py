"""Tables of a study's results (CSV, Markdown) and what its plots show (drawn by ``landscape.viz``).

What a report holds is data too, the ``[report]`` table of the study file::

    [report]
    group = ["dynamics"]            # summary: mean ± std of each figure over the other axes
    figures = ["cosine", "margin_ratio"]   # the figures shown (default: every numeric one)

    [[report.series]]               # curves recorded by each task under figures["series"]
    x = "step"
    y = ["cosine", "margin_ratio"]
    by = "dynamics"                 # one curve per value (averaged over the other axes)
    at = [10, 100, 1000]            # rows of its table (default: every recorded x)
    logx = true
    logy = ["norm"]

    [[report.plot]]                 # a figure against an axis
    x = "problem.width"
    y = "converged_fraction"
    by = "optimizer"

Every report also has ``results`` (one row per finished task). This module computes what each PNG
shows, as data; :func:`landscape.viz.figure_png` draws it (matplotlib, imported only then).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path as FilePath

from .._errors import LandscapeError
from ..io import atomic_write_bytes
from .._registry import Registry
from .store import read_study
from .study import Study, canonical, check_axes, report_spec

#: What :func:`write_report` writes: tables as CSV and Markdown, charts as PNG.
REPORT_FORMATS = Registry("report format", ("csv", "md", "png"))


class Table:
    """A header and rows of cells, written as CSV or Markdown."""

    def __init__(self, name: str, header: list[str], rows: list[list], title: str = ""):
        self.name, self.header, self.rows, self.title = name, header, rows, title

    def csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.header)
        writer.writerows([["" if c is None else c for c in row] for row in self.rows])
        return buf.getvalue()

    def markdown(self) -> str:
        cells = [[_fmt(c) for c in row] for row in self.rows]
        lines = ["| " + " | ".join(self.header) + " |", "|" + "|".join("---" for _ in self.header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in cells]
        return "\n".join(lines) + "\n"

    def as_dicts(self) -> list[dict]:
        return [dict(zip(self.header, row)) for row in self.rows]


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.4g}"
        if abs(value) >= 100:
            return f"{value:.1f}"
        if 0.9 < abs(value) < 1:  # keep three digits of 1 − |value| visible (a cosine of 0.99999996)
            return f"{value:.{max(6, 3 - math.floor(math.log10(1 - abs(value))))}g}"
        return f"{value:.6g}" if abs(value) > 0.9 else f"{value:.4g}"
    return str(value)


def study_results(study=None, *, store=None) -> list[dict]:
    """The stored rows of a study's current tasks, in grid order.

    Returns
    -------
    list of dict
        ``id``, ``point`` (the grid point by dotted axis), ``params``, ``status``, ``figures``,
        ``error``, ``attempts``, ``seconds``, ``started``, ``finished``, ``worker``, ``device``,
        ``versions``. Tasks never run yet are absent.
    """
    study, _, rows = read_study(study, store)
    by_id = {r["id"]: r for r in rows}
    out = []
    for t in study.tasks():
        if t.id in by_id:
            out.append({**by_id[t.id], "point": t.point})
    return out


def study_tables(study: Study, results: list[dict]) -> dict[str, Table]:
    """The report's tables: ``results``, ``summary`` and one ``series_<i>`` per ``[[report.series]]``."""
    spec = report_spec(study)
    done = [r for r in results if r["status"] == "done"]
    axes = study.axes
    numeric = _numeric_figures(done)
    shown = spec.get("figures") or numeric
    scalar = [k for k in _scalar_figures(done) if k in shown or k not in numeric]
    tables = {}
    tables["results"] = Table("results", axes + scalar + ["seconds"],
                              [[r["point"].get(a) for a in axes] + [r["figures"].get(k) for k in scalar]
                               + [r["seconds"]] for r in done], f"{study.name}: one row per task")
    group = spec.get("group", [a for a in axes if "seed" not in a.split(".")[-1]])
    check_axes(study, group, "report.group")
    header = list(group) + ["n"]
    for k in shown:
        header += [k, f"{k} std"]
    rows = []
    for key, members in _groups(done, group).items():
        row = list(key) + [len(members)]
        for k in shown:
            vals = [float(m["figures"][k]) for m in members  # a flag's mean is the fraction of tasks setting it
                    if _is_number(m["figures"].get(k)) or isinstance(m["figures"].get(k), bool)]
            row += [statistics.fmean(vals) if vals else None,
                    statistics.stdev(vals) if len(vals) > 1 else None]
        rows.append(row)
    tables["summary"] = Table("summary", header, rows, f"{study.name}: mean and std over "
                              f"{', '.join(a for a in axes if a not in group) or 'nothing'}")
    for i, s in enumerate(spec.get("series", [])):
        tables[f"series_{i}"] = _series_table(study, done, s, f"series_{i}")
    return tables


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numeric_figures(done) -> list[str]:
    out = []
    for r in done:
        out += [k for k, v in r["figures"].items() if (_is_number(v) or isinstance(v, bool)) and k not in out]
    return out


def _scalar_figures(done) -> list[str]:
    out = []
    for r in done:
        out += [k for k, v in r["figures"].items() if isinstance(v, (int, float, str, bool)) and k not in out]
    return out


def _groups(done, axes) -> dict[tuple, list[dict]]:
    groups: dict[str, tuple] = {}
    members: dict[str, list] = {}
    for r in done:
        key = tuple(r["point"].get(a) for a in axes)
        ck = canonical(list(key))
        groups.setdefault(ck, key)
        members.setdefault(ck, []).append(r)
    return {groups[k]: members[k] for k in groups}


def _series(done, spec, where):
    """{group value: {y: (xs, mean ys)}} averaged over the tasks of each group at common x."""
    x, ys, by = spec.get("x", "step"), spec.get("y"), spec.get("by")
    ys = [ys] if isinstance(ys, str) else ys
    if not ys:
        raise LandscapeError(f"{where}: needs y = [...] (names of recorded series)")
    out = {}
    for key, members in _groups(done, [by] if by else []).items():
        curves = {}
        for y in ys:
            acc: dict[float, list[float]] = {}
            for m in members:
                series = m["figures"].get("series") or {}
                if x not in series or y not in series:
                    raise LandscapeError(f"{where}: task results have no series {x!r} and {y!r}; "
                                         f"they have {sorted(series)}")
                for xv, yv in zip(series[x], series[y]):
                    if yv is not None:
                        acc.setdefault(xv, []).append(yv)
            xs = sorted(acc)
            curves[y] = (xs, [statistics.fmean(acc[v]) for v in xs])
        out[key[0] if by else "all"] = curves
    return x, ys, by, out


def _series_table(study, done, spec, name) -> Table:
    x, ys, by, curves = _series(done, spec, f"{study.source}: report.series")
    at = spec.get("at")
    xs = sorted({v for c in curves.values() for y in ys for v in c[y][0]})
    if at:
        xs = sorted({min(xs, key=lambda v: abs(v - a)) for a in at}) if xs else []
    header = [x] + [f"{y} ({g})" if by else y for y in ys for g in curves]
    rows = []
    for xv in xs:
        row = [xv]
        for y in ys:
            for g in curves:
                cx, cy = curves[g][y]
                row.append(cy[cx.index(xv)] if xv in cx else None)
        rows.append(row)
    return Table(name, header, rows, f"{study.name}: {', '.join(ys)} against {x}" + (f" by {by}" if by else ""))


def write_report(study=None, *, store=None, out=None, formats=("csv", "md", "png")) -> dict:
    """Write a study's tables (CSV, Markdown) and plots (PNG) into a folder.

    Parameters
    ----------
    study : Study, str or Path, optional
        When None, the study kept in ``store``.
    store : str or Path, optional
    out : str or Path, optional
        The folder; ``<study name>_report`` by default.
    formats : tuple of {"csv", "md", "png"}

    Returns
    -------
    dict
        ``folder``, ``files`` (written paths), ``tables`` (name -> :class:`Table`), ``done``,
        ``tasks``.
    """
    for f in formats:
        REPORT_FORMATS.lookup(f)
    study, path, _ = read_study(study, store)
    results = study_results(study, store=path)
    tables = study_tables(study, results)
    folder = FilePath(out) if out is not None else FilePath(f"{study.name}_report")
    files = []
    for t in tables.values():
        if "csv" in formats:
            files.append(atomic_write_bytes(folder / f"{t.name}.csv", t.csv()))
        if "md" in formats:
            files.append(atomic_write_bytes(folder / f"{t.name}.md", f"**{t.title}**\n\n{t.markdown()}"))
    done = [r for r in results if r["status"] == "done"]
    if "png" in formats and done:
        from ..viz import figure_png  # drawing lives in viz (matplotlib); the core only says what to draw

        spec = report_spec(study)
        figures = {f"series_{i}.png": _series_figure(study, done, s) for i, s in enumerate(spec.get("series", []))}
        figures.update({f"plot_{i}.png": _axis_figure(study, done, p) for i, p in enumerate(spec.get("plot", []))})
        files += [atomic_write_bytes(folder / name, figure_png(fig)) for name, fig in figures.items()]
    return {"folder": str(folder), "files": [str(f) for f in files], "tables": tables, "done": len(done),
            "tasks": len(study.tasks())}


# ---------------------------------------------------------------- what the plots show
def _series_figure(study, done, spec) -> dict:
    """The curves of a ``[[report.series]]``: one panel per y, one curve per value of ``by``."""
    x, ys, by, curves = _series(done, spec, f"{study.source}: report.series")
    logx = bool(spec.get("logx", False))
    logy = spec.get("logy", [])
    logy = ys if logy is True else ([logy] if isinstance(logy, str) else logy)
    panels = []
    for y in ys:
        lines = []
        for g, c in curves.items():
            xs, vs = c[y]
            if logx:
                xs, vs = zip(*[(a, b) for a, b in zip(xs, vs) if a > 0]) if any(a > 0 for a in xs) else ([], [])
            lines.append({"label": str(g), "x": list(xs), "y": list(vs), "yerr": None})
        panels.append({"xlabel": x, "ylabel": y, "logx": logx, "logy": y in logy, "xticks": None, "curves": lines})
    return {"title": study.name, "legend": by, "marker": ".", "panels": panels}


def _axis_figure(study, done, spec) -> dict:
    """A ``[[report.plot]]``: the mean of each y against a grid axis, one curve per value of ``by``.

    Error bars: ± the standard deviation, except for a figure whose values all lie in [0, 1] (a flag or a
    fraction), whose bars are the 95% Wilson score interval of its mean over the tasks, so they stay in
    [0, 1] (Wilson 1927).
    """
    x, y, by = spec.get("x"), spec.get("y"), spec.get("by")
    if not x or not y:
        raise LandscapeError(f"{study.source}: report.plot needs x (an axis) and y (a figure)")
    check_axes(study, [x] + ([by] if by else []), "report.plot")
    logx = bool(spec.get("logx", False))
    panels = []
    for yname in ([y] if isinstance(y, str) else y):
        groups = {}
        for key, members in _groups(done, [by] if by else []).items():
            pts = {}
            for m in members:
                v = m["figures"].get(yname)
                if _is_number(v) or isinstance(v, bool):
                    pts.setdefault(m["point"].get(x), []).append(float(v))
            groups[key] = pts
        values = [v for pts in groups.values() for vs in pts.values() for v in vs]
        fraction = bool(values) and all(0.0 <= v <= 1.0 for v in values)
        lines, seen = [], []
        for key, pts in groups.items():
            xs = sorted(pts, key=lambda v: (isinstance(v, str), v))
            means = [statistics.fmean(pts[v]) for v in xs]
            if fraction:
                bounds = [_wilson(m, len(pts[v])) for m, v in zip(means, xs)]
                yerr = [[m - lo for m, (lo, _) in zip(means, bounds)], [hi - m for m, (_, hi) in zip(means, bounds)]]
            else:
                yerr = [statistics.stdev(pts[v]) if len(pts[v]) > 1 else 0.0 for v in xs]
            lines.append({"label": str(key[0]) if by else None, "x": [str(v) if isinstance(v, str) else v for v in xs],
                          "y": means, "yerr": yerr})
            seen.extend(xs)
        ticks = sorted({v for v in seen if _is_number(v) and v > 0}) if logx else []
        panels.append({"xlabel": x, "ylabel": f"{yname} (mean, 95% Wilson)" if fraction else f"{yname} (mean ± sd)",
                       "logx": logx, "logy": bool(spec.get("logy", False)),
                       "xticks": ticks if 0 < len(ticks) <= 10 else None, "curves": lines})
    return {"title": study.name, "legend": by, "marker": "o", "panels": panels}


def _wilson(p: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a proportion p observed over n trials: inside [0, 1] for every p."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
