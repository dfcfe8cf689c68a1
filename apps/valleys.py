"""``landscape valleys``: valley counts, spurious valleys and the merge tree of a set of minima."""

from __future__ import annotations

import click
import torch

import landscape

from ._common import (FINITE, RESOLUTION, Real, SEED, UserError, count, device_option, echo_json,
                      file_problem_option, json_option, memory_option, memory_text, quiet_option,
                      table)


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--level", "levels", type=FINITE, multiple=True, help="A level u (repeatable).")
@click.option("--levels", "auto", flag_value="auto", default=None,
              help="'auto': the whole merge tree, reported wherever the count changes (the default).")
@click.option("--method", type=click.Choice(sorted(landscape.METHODS)), default="string", show_default=True,
              help="Path method at a given level.")
@click.option("--merge-method", type=click.Choice(sorted(landscape.METHODS)), default="neb", show_default=True,
              help="Level-free path method for the merge tree.")
@click.option("--bisect", type=count(0, 100), default=3, show_default=True,
              help="Probes of each merge level by --method at lower levels (0: none).")
@click.option("--attempts", type=count(1, 100), default=2, show_default=True,
              help="Refinements tried per pair of valleys before they are reported separate.")
@click.option("--tol", type=Real(0), default=None, help="Spurious tolerance (default 1e-6 + 1e-3·|best loss|).")
@click.option("--resolution", type=RESOLUTION, default=landscape.paths.DEFAULT_RESOLUTION, show_default=True,
              help="Sub-intervals per segment in the dense certification.")
@click.option("--metrics", is_flag=True, help="Add Hessian top eigenvalue and trace of each minimum.")
@click.option("--extent", type=count(0, 10**6), default=0, show_default=True,
              help="Hit-and-run samples per minimum and level: each valley's extent in the report (0: none).")
@click.option("--align", type=click.Choice(sorted(landscape.ALIGNERS)), default="none", show_default=True,
              help="First move every minimum onto the lowest by the permutation symmetry of its network.")
@click.option("--polish", is_flag=True,
              help="Descend minima whose |grad L| > 1e-3*max(|L|, 0.1) until they meet it (default: refuse them).")
@click.option("--float64", is_flag=True, help="Compute in double precision.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("-o", "--out", "json_out", type=click.Path(), default=None, help="Write the graph (node-link JSON).")
@click.option("--graphml", type=click.Path(), default=None, help="Write the graph as GraphML.")
@click.option("--plot", type=click.Path(), default=None, help="Draw the disconnectivity graph (PNG).")
@memory_option
@file_problem_option
@quiet_option
@device_option
@json_option
def valleys(files, levels, auto, method, merge_method, bisect, attempts, tol, resolution, metrics, extent, align,
            polish, float64, seed, json_out, graphml, plot, memory, given, quiet, device, as_json):
    """Count the valleys of {L <= u} among the minima FILES; find the spurious ones and the merge tree.

    Every file must hold a minimum (|grad L| <= 1e-3*max(|L|, 0.1)); one on a slope is refused, or
    descended first with --polish.
    """
    if levels and auto:
        raise UserError("give --level U (repeatable) or --levels auto, not both")
    dev = landscape.resolve_device(device)
    cks = [landscape.load_checkpoint(f, problem=given) for f in files]
    problem = cks[0].problem
    for ck in cks[1:]:
        if ck.problem.spec != problem.spec:
            raise UserError(f"{ck.path} and {cks[0].path} belong to different problems")
    thetas = torch.stack([ck.theta for ck in cks]).to(dev, torch.float64 if float64 else torch.float32)
    graph, report = landscape.find_valleys(
        problem, thetas, names=[str(ck.path) for ck in cks], levels=list(levels) if levels else "auto",
        method=method, merge_method=merge_method, bisect=bisect, attempts=attempts, tol=tol, resolution=resolution,
        metrics=metrics, align=align, extent=extent, polish=polish, generator=torch.Generator().manual_seed(seed),
        memory=memory, progress=not quiet)
    if json_out or graphml:
        landscape.valleys.write_graph(graph, json_out, graphml)
    if plot:
        from landscape import viz

        cut = report["levels"][0]["level"] if levels and len(levels) == 1 else None
        fig = viz.plot_disconnectivity(report["minima"], report["merges"], level=cut, tol=report["tolerance"],
                                       separations=report["separations"])
        viz.save_figure(fig, plot)
    if as_json:
        echo_json(report)
        return
    click.echo(f"{len(cks)} minima of {problem!r}; best loss {report['global_loss']:.6g}")
    for row in report["polished"]:
        click.echo(f"polished {_short(row['name'])}: loss {row['loss_before']:.6g} -> {row['loss']:.6g}, |grad L| "
                   f"{row['grad_norm_before']:.3g} -> {row['grad_norm']:.3g}, moved {row['distance']:.3g} "
                   f"in {row['steps']} steps")
    if report["alignment"]:
        click.echo(_aligned(report["alignment"]))
    click.echo(table([[f"{r['level']:.6g}", f"{r['n_valleys']} at most" if r["count_is_upper_bound"] else r["n_valleys"],
                       f"{r['n_spurious']} at most" if r["spurious_is_upper_bound"] else r["n_spurious"],
                       " | ".join(",".join(_short(n) for n in v) for v in r["valleys"])]
                      for r in report["levels"]], ["level", "valleys", "spurious", "members"]))
    for r in report["levels"]:
        click.echo(f"at {r['level']:.6g}: {_known(r)}")
        if r["spurious_is_upper_bound"]:
            click.echo(f"  spurious: {r['n_spurious']} at most, at least {r['n_spurious_at_least']} "
                       f"({_plural(r['n_spurious'], 'valley')} not joined to a global minimum: no path found, "
                       f"{len(r['spurious_proven'])} proven apart)")
    if report["merges"]:
        click.echo("merges: " + "; ".join(f"{_short(m['pair'][0])}~{_short(m['pair'][1])} at {m['level']:.6g} "
                                         f"({_backed(m)})" for m in report["merges"]))
    for s in report["separations"]:
        click.echo(f"separate below {s['below']:.6g}: {_short(s['a'])}, {_short(s['b'])} ({s['how']})")
    click.echo(f"{report['straight_checks']} straight checks, {report['refinements']} refinements "
               f"({report['failed']} found no path below the level), {report['seconds']:.1f} s")
    click.echo(f"memory: {memory_text(report['memory'])}")
    if any(r["count_is_upper_bound"] for r in report["levels"]):
        click.echo("a count 'at most' is an upper bound: minima no path joined are not proven to lie in different "
                   "valleys (a valley not joined to a global minimum is spurious only if proven apart from it)")


def _known(row: dict) -> str:
    """One row's count and what backs it: certified joins, and pairs of valleys proven apart or only not joined."""
    n, joins = row["n_valleys"], row["joins"]
    kinds = [f"{joins['bound']} proven by bound"] if joins["bound"] else []
    if joins["grid"]:
        spacing = f", spacing <= {joins['grid_spacing']:.3g}" if joins["grid_spacing"] is not None else ""
        kinds.append(f"{joins['grid']} checked on a grid{spacing}")
    paths = joins["bound"] + joins["grid"]
    joined = f"; joined by {_plural(paths, 'certified path')} ({', '.join(kinds)})" if paths else ""
    if row["count_is_upper_bound"]:
        tried = f" by {_plural(row['not_found'], 'refinement')}" if row["not_found"] else ""
        apart = f"; {row['pairs_separated']} proven apart" if row["pairs_separated"] else ""
        return (f"{n} valleys at most, at least {row['n_valleys_at_least']} ({_plural(row['pairs_not_joined'], 'pair')} "
                f"not joined: no path found{tried}, separation not proven{apart}){joined}")
    if n > 1:
        return f"{n} valleys, separation proven{joined}"
    return f"{_plural(n, 'valley')}{joined}"


def _aligned(a: dict) -> str:
    """What the alignment did: the method, the minima moved onto which reference, their distance to it."""
    moved = f"{len(a['moved'])} of {a['aligned']} moved" if a["aligned"] else "nothing else to align"
    return (f"aligned by {a['method']} onto {_short(a['reference'])} (the lowest): {moved}; mean distance to it "
            f"{a['mean_distance_before']:.4g} -> {a['mean_distance_after']:.4g}, {a['seconds']:.1f} s")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _backed(merge: dict) -> str:
    """What backs a merge: the proof's bound, or the dense grid's spacing."""
    if merge.get("certificate") == "bound":
        return f"proven <= {merge['proven_below']:.6g}"
    return f"grid, spacing {merge['spacing']:.3g}" if merge.get("spacing", -1) >= 0 else "grid"


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1].removesuffix(".pt")
