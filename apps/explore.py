"""``landscape explore``: the level-set explorer in a browser, with a level slider."""

from __future__ import annotations

import click
import torch

import landscape
import landscape.viz
from landscape.views import BIASES, NORMALIZATIONS, SCENE_PLANES, default_cache_dir

from ._common import FINITE, SEED, Real, UserError, build_problem, count, device_option, problem_options


@click.command()
@click.argument("files", nargs=-1, type=click.Path())
@click.option("--path", "path_files", multiple=True, type=click.Path(),
              help="A path file (landscape connect) drawn as a tube at its own losses; repeatable.")
@click.option("--valleys", "valleys_file", type=click.Path(), default=None,
              help="A valley graph written by 'landscape valleys FILES -o graph.json' (default: computed here "
                   "as landscape valleys computes it).")
@click.option("--problem", "problem_name", default=None,
              help="An analytic problem to explore with its known minima (e.g. himmelblau), or the problem of "
                   "state_dicts / user-problem files.")
@problem_options
@click.option("--plane", type=click.Choice(list(SCENE_PLANES)), default="auto", show_default=True,
              help="The plane of the view, as in landscape render.")
@click.option("--grid", default="51x51", show_default=True, help="Grid points along the two directions, AxB.")
@click.option("--level", type=FINITE, default=None, help="The first u (default: the lowest merge level).")
@click.option("--log", is_flag=True, help="Heights, colours and the level slider on a log scale.")
@click.option("--no-trajectory", is_flag=True, help="Leave out the trajectories stored in the checkpoints.")
@click.option("--tol", type=Real(0), default=None, help="Spurious tolerance (default 1e-6 + 1e-3·|best loss|).")
@click.option("--seed", type=SEED, default=0, show_default=True,
              help="Seed of the valley search (as landscape valleys --seed) and of a random plane.")
@click.option("--normalization", type=click.Choice(list(NORMALIZATIONS)), default="filter", show_default=True,
              help="Random directions scaled per row/filter, per tensor, or not at all.")
@click.option("--biases", type=click.Choice(list(BIASES)), default="zero", show_default=True,
              help="Bias and normalization parts of random directions.")
@click.option("--cache", type=click.Path(), default=None,
              help="Folder of cached surfaces [default: $LANDSCAPE_CACHE or ~/.cache/landscape/surfaces].")
@click.option("--no-cache", is_flag=True, help="Evaluate the surface again and do not store it.")
@click.option("--port", type=count(0, 65535), default=0, show_default=True, help="Port on 127.0.0.1 (0: a free one).")
@click.option("--no-browser", is_flag=True, help="Do not open a browser; only print the address.")
@device_option
def explore(files, path_files, valleys_file, problem_name, width, params, plane, grid, level, log, no_trajectory, tol,
            seed, normalization, biases, cache, no_cache, port, no_browser, device):
    """Explore minima (FILES, checkpoints), their valleys and paths in a browser, with a level slider.

    \b
      landscape explore minima/*.pt --path path.pt
      landscape explore --problem himmelblau --log
      landscape explore minima/*.pt --valleys graph.json --port 8080 --no-browser

    The page shows the loss surface on a plane with the sublevel set {L <= u} shaded, the minima
    coloured by valley at u, the valley and spurious-valley counts (those landscape valleys reports)
    and the merge tree; each browser tab has its own u. Ctrl-C stops the server.

    The server listens on 127.0.0.1 only and answers only the page of the address it prints (that
    address carries a random key of this launch).
    """
    problem = build_problem(problem_name, width, params) if problem_name else None
    if not files and problem is None:
        raise UserError("give checkpoints of minima, or --problem NAME of an analytic problem (e.g. himmelblau)")
    if not files and not hasattr(problem, "minima"):
        raise UserError(f"--problem {problem_name}: without checkpoints only an analytic problem (himmelblau, ring, "
                        "double_well) has known minima; give checkpoint files")
    sock = landscape.viz.listen(port, "127.0.0.1")  # before the surface: a port in use is refused at once
    try:
        source = f"read from {valleys_file}" if valleys_file else "the merge tree, as landscape valleys computes it"
        click.echo(f"landscape explore: surface and valleys of {len(files) or 'the known'} minima ({source}) ...",
                   err=True)
        app = landscape.viz.explore(
            files, paths=path_files, problem=problem, valleys=valleys_file, level=level, log=log,
            trajectories=not no_trajectory, tol=tol, seed=seed, device=landscape.resolve_device(device),
            plane=plane, plane_options={"normalization": normalization, "biases": biases}, grid=grid,
            generator=torch.Generator().manual_seed(seed),
            cache=None if no_cache else (cache or default_cache_dir()), progress=True)

        def ready(url):
            click.echo(f"landscape explore: {app.state.counts}; serving {url} (Ctrl-C stops)", err=True)
            click.echo(url)

        try:
            app.start(sock=sock, ready=ready, open_browser=not no_browser)
        finally:
            app.close()
        click.echo("landscape explore: stopped", err=True)
    finally:
        sock.close()
