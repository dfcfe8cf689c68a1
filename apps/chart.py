"""``landscape chart``: 2-D companions of the 3-D views (matplotlib)."""

from __future__ import annotations

import json
from pathlib import Path as FilePath

import click

import landscape
import landscape.viz
from landscape.io import read_text

from ._common import (FINITE, Group, RESOLUTION, Real, UserError, build_problem, echo_json, json_option,
                      problem_options)

_OUT = click.option("-o", "--out", required=True, type=click.Path(), help="Figure file: .png, .pdf or .svg.")


@click.group(cls=Group)
def chart():
    """Flat charts: loss along paths, lengths against levels, merge trees, normalized weights."""


@chart.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--x", "x", type=click.Choice(list(landscape.viz.PATH_AXES)), default="t", show_default=True,
              help="Position along the path, parameter distance, or distance over the chord.")
@click.option("--level", type=FINITE, default=None, help="Draw the level u (default: the paths' level).")
@click.option("--log", is_flag=True, help="Log-scale loss axis.")
@click.option("--split", default="train", show_default=True)
@click.option("--resolution", type=RESOLUTION, default=16, show_default=True, help="Evaluations per segment.")
@click.option("--problem", "problem_name", default=None, help="The user problem the files were made with.")
@problem_options
@_OUT
@json_option
def losses(files, x, level, log, split, resolution, problem_name, width, params, out, as_json):
    """The loss along path files (landscape connect), every method on one chart, evaluated densely."""
    user = build_problem(problem_name, width, params) if problem_name else None
    paths, problem = {}, None
    for f in files:
        path, p, _ = landscape.load_path(f, problem=user)
        if problem is not None and p.spec != problem.spec:
            raise UserError(f"{f}: made for {p!r}, the other paths for {problem!r}")
        problem = p
        paths[FilePath(f).stem] = path
    fig = landscape.viz.plot_path_losses(paths, problem, level=level, x=x, log=log, resolution=resolution,
                                         split=split)
    _done(landscape.viz.save_figure(fig, out), {n: p.summary() for n, p in paths.items()}, as_json)


@chart.command()
@click.argument("table", type=click.Path())
@click.option("--by", default=None, help="Column that splits the rows into lines (method, width, pair, ...).")
@click.option("--x", "x", default="level", show_default=True, help="Column of the horizontal axis.")
@click.option("--surface", "surface_over", default=None, metavar="COLUMN",
              help="Draw a surface over (x, COLUMN) instead, e.g. --surface width.")
@click.option("--log-x", is_flag=True, help="Log-scale horizontal axis.")
@_OUT
@json_option
def lengths(table, by, x, surface_over, log_x, out, as_json):
    """Normalized geodesic length against the level, from a CSV or JSON TABLE of rows."""
    rows = landscape.viz.read_rows(table)
    if surface_over:
        fig = landscape.viz.plot_length_surface(rows, x=x, y=surface_over, log_x=log_x)
    else:
        fig = landscape.viz.plot_lengths(rows, by=by, x=x, log_x=log_x)
    _done(landscape.viz.save_figure(fig, out), {"rows": len(rows)}, as_json)


@chart.command()
@click.argument("merges", type=click.Path())
@click.option("--level", type=FINITE, default=None, help="Cut at level u: count valleys and spurious ones.")
@click.option("--tol", type=Real(0), default=None,
              help="A valley is spurious when its best loss exceeds the global minimum L* by more than this "
                   "(default: 1e-6 + 1e-3·|L*|, the rule of landscape valleys).")
@click.option("--log", is_flag=True, help="Log-scale loss axis.")
@_OUT
@json_option
def tree(merges, level, tol, log, out, as_json):
    """The disconnectivity graph of a JSON file {"minima": {name: loss}, "merges": [{"pair": [a, b], "level": u}]}.

    A valley report (landscape valleys --json) is such a file; its "separations" make a count exact where
    they cover every pair of valleys (otherwise a count is an upper bound: "at most").
    """
    try:
        data = json.loads(read_text(merges, "merge file"))
    except FileNotFoundError:
        raise UserError(f"{merges}: no such file") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{merges}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("minima"), dict):
        raise UserError(f"{merges}: expected {{\"minima\": {{name: loss}}, \"merges\": [...]}}")
    separations = data.get("separations", [])
    fig = landscape.viz.plot_disconnectivity(data["minima"], data.get("merges", []), level=level, tol=tol, log=log,
                                             separations=separations)
    t = landscape.viz.merge_tree(data["minima"], data.get("merges", []))
    info = {"minima": len(t.losses), "merges": len(t.merges)}
    if level is not None:
        unproven = t.pairs_not_joined(level, separations)
        info.update(valleys=t.valleys_at(level), spurious=t.spurious_at(level, tol=tol),
                    spurious_at_least=t.spurious_at_least(level, tol=tol, separations=separations),
                    count_is_upper_bound=unproven > 0, pairs_not_joined=unproven)
    _done(landscape.viz.save_figure(fig, out), info, as_json)


@chart.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--problem", "problem_name", default=None, help="The user problem the file was made with.")
@problem_options
@_OUT
@json_option
def weights(checkpoint, problem_name, width, params, out, as_json):
    """θ/‖θ‖ on the unit sphere beside ‖θ‖ over time, from a CHECKPOINT's trajectory (exponential losses)."""
    user = build_problem(problem_name, width, params) if problem_name else None
    ck = landscape.load_checkpoint(checkpoint, problem=user)
    if ck.trajectory is None:
        raise UserError(f"{checkpoint}: holds no trajectory; train without --no-trajectory")
    fig = landscape.viz.plot_normalized_weights(ck.trajectory, title=f"{ck.problem.name}, seed {ck.seed}")
    w = landscape.viz.normalized_weights(ck.trajectory)
    info = {"norm_start": float(w.norms[0]), "norm_end": float(w.norms[-1]),
            "angle_start_to_final": float(w.angle_to_final[0]), "captured_mean": float(w.captured.mean())}
    _done(landscape.viz.save_figure(fig, out), info, as_json)


def _done(path, info, as_json):
    if as_json:
        echo_json({"file": str(path), **info})
    else:
        click.echo(f"wrote {path}")
