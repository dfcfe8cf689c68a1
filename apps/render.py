"""``landscape render``: 3-D views of minima, paths and trajectories on a plane of the loss."""

from __future__ import annotations

import click
import torch

import landscape
import landscape.viz
from landscape.views import BIASES, NORMALIZATIONS, SCENE_PLANES, default_cache_dir

from ._common import (FINITE, Real, SEED, UserError, build_problem, count, device_option, echo_json, json_option,
                      problem_options, quiet_option)


def parse_floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{what} {text!r}: give numbers separated by commas, e.g. 0.1,0.5,1") from None


def parse_span(text: str | None):
    """``"-1:1,-0.5:0.5"`` -> ``((-1, 1), (-0.5, 0.5))``."""
    if text is None:
        return None
    try:
        a, b = text.split(",")
        (a0, a1), (b0, b1) = (tuple(float(v) for v in part.split(":")) for part in (a, b))
        return (a0, a1), (b0, b1)
    except ValueError:
        raise UserError(f"--span {text!r}: write A0:A1,B0:B1, e.g. -1:1,-1:1") from None


#: Largest image side in pixels (an 8192² RGBA frame is 256 MiB before VTK's own buffers).
MAX_PIXELS = 8192


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        size = int(w), int(h)
    except ValueError:
        raise UserError(f"--size {text!r}: write WIDTHxHEIGHT in pixels, e.g. 1024x768") from None
    if not all(16 <= s <= MAX_PIXELS for s in size):
        raise UserError(f"--size {text!r}: each side must be 16 to {MAX_PIXELS} pixels")
    return size


@click.command()
@click.argument("files", nargs=-1, type=click.Path())
@click.option("--path", "path_files", multiple=True, type=click.Path(),
              help="A path file (landscape connect) to draw as a tube at its own losses; repeatable.")
@click.option("--trajectory/--no-trajectory", default=True, show_default=True,
              help="Draw the gradient-descent trajectories stored in the checkpoints.")
@click.option("--plane", type=click.Choice(list(SCENE_PLANES)), default="auto", show_default=True,
              help="auto: identity for 2 parameters; through three points for 3 minima, or 2 and a path; "
                   "else PCA of the trajectories; else random filter-normalized.")
@click.option("--grid", default="51x51", show_default=True, help="Grid points along the two directions, AxB.")
@click.option("--span", default=None, metavar="A0:A1,B0:B1", help="Plane coordinates to cover (default: fit).")
@click.option("--levels", default=None, metavar="U1,U2,...", help="Contour levels (default: --contours of them).")
@click.option("--contours", type=count(0, 200), default=10, show_default=True,
              help="Number of automatic contour levels.")
@click.option("--level", type=FINITE, default=None,
              help="Shade the sublevel set {L <= U} (default: the level the first path was certified at).")
@click.option("--log", is_flag=True, help="Heights and colours on a log10 scale.")
@click.option("--zmax", type=FINITE, default=None, help="Clip drawn heights above this loss.")
@click.option("--color-paths", "path_color", type=click.Choice(list(landscape.viz.PATH_COLORINGS)), default="solid",
              show_default=True, help="One colour per path, or by cumulative arc length over the chord.")
@click.option("--split", default="train", show_default=True, help="Data split the loss is computed on.")
@click.option("--problem", "problem_name", default=None,
              help="Draw an analytic problem with its known minima (e.g. ring), or name the problem of "
                   "state_dicts / user-problem files.")
@problem_options
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of a random plane's directions.")
@click.option("--normalization", type=click.Choice(list(NORMALIZATIONS)), default="filter", show_default=True,
              help="Random directions scaled per row/filter (Li et al. 2018), per tensor, or not at all.")
@click.option("--biases", type=click.Choice(list(BIASES)), default="zero", show_default=True,
              help="Bias and normalization parts of random directions: zero, or equal to the parameters.")
@click.option("--size", default="1024x768", show_default=True, help="Image size in pixels, WxH.")
@click.option("--view", type=click.Choice(list(landscape.viz.VIEWS)), default="iso", show_default=True,
              help="A perspective view, a map from above (top), or a side view.")
@click.option("--azimuth", type=Real(-360, 360), default=-60.0, show_default=True,
              help="iso view: degrees from the first plane direction towards the second.")
@click.option("--elevation", type=Real(-90, 90), default=35.0, show_default=True,
              help="iso view: degrees above the plane.")
@click.option("--opacity", type=Real(0, 1, min_open=True), default=None,
              help="Surface opacity (default 1, 0.65 when paths leave it).")
@click.option("--title", default=None, help="Title of the view.")
@click.option("--cache", type=click.Path(), default=None,
              help="Folder of cached surfaces [default: $LANDSCAPE_CACHE or ~/.cache/landscape/surfaces].")
@click.option("--no-cache", is_flag=True, help="Evaluate the surface again and do not store it.")
@click.option("--float64", is_flag=True, help="Evaluate the surface in double precision.")
@device_option
@click.option("-o", "--out", "outs", multiple=True, type=click.Path(),
              help="Output file, by suffix: .png .jpg (image), .html (interactive page), .vtm .vts .vtp .vtk "
                   "(ParaView); repeatable.")
@click.option("--show", is_flag=True, help="Open an interactive window (needs a display).")
@quiet_option
@json_option
def render(files, path_files, trajectory, plane, grid, span, levels, contours, level, log, zmax, path_color, split,
           problem_name, width, params, seed, normalization, biases, size, view, azimuth, elevation, opacity, title,
           cache, no_cache, float64, device, outs, show, quiet, as_json):
    """Draw minima (FILES, checkpoints), paths and trajectories on a plane of the loss, in 3-D.

    \b
      landscape render --problem ring --path arc.pt --log -o ring.png
      landscape render minima/a.pt minima/b.pt --path ab.pt -o view.png -o view.html
      landscape render minima/a.pt --plane pca --grid 41x41 -o pca.vtm
    """
    if not outs and not show:
        raise UserError("give -o FILE (.png, .html, .vtm, .vts, .vtp, .vtk) or --show")
    landscape.viz.check_outputs(outs, show=show)
    window = parse_size(size)
    span = parse_span(span)
    levels = parse_floats(levels, "--levels")
    problem = build_problem(problem_name, width, params) if problem_name else None
    scene = landscape.views.scene_from_files(
        files, paths=path_files, problem=problem, trajectories=trajectory, plane=plane,
        plane_options={"normalization": normalization, "biases": biases}, grid=grid, span=span,
        split=split, generator=torch.Generator().manual_seed(seed), device=landscape.resolve_device(device),
        dtype=torch.float64 if float64 else torch.float32,
        cache=None if no_cache else (cache or default_cache_dir()), progress=not quiet)
    written = landscape.viz.render(scene, outs, show=show, log=log, levels=levels, n_levels=contours, level=level,
                                   zmax=zmax, path_color=path_color, window_size=window, view=view, azimuth=azimuth,
                                   elevation=elevation,
                                   opacity=opacity, title=title)
    summary = {**scene.summary(), "files": [str(w) for w in written]}
    if as_json:
        echo_json(summary)
        return
    pl, surf = summary["plane"], summary["surface"]
    click.echo(f"plane {pl['kind']}: {pl['names'][0]} x {pl['names'][1]}  (cosine {pl['cosine']:.3f})")
    how = "read from the cache" if surf["cached"] else f"{surf['points_per_s']:.0f} points/s"
    click.echo(f"surface {surf['grid'][0]}x{surf['grid'][1]} on {surf['split']}: loss {surf['min_loss']:.4g} .. "
               f"{surf['max_loss']:.4g}, {surf['seconds']:.2f} s ({how})")
    for c in summary["curves"]:
        line = f"  {c['kind']} {c['label']}: length/chord {c['normalized_length']:.3f}, max loss {c['max_loss']:.4g}"
        line += f", off-plane <= {c['max_residual']:.3g}"
        click.echo(line)
    for m in summary["markers"]:
        click.echo(f"  {m['kind']} {m['label']}: loss {m['loss']:.4g}, off-plane {m['residual']:.3g}")
    for w in written:
        click.echo(f"wrote {w}")
