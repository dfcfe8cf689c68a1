"""``landscape align``: move one minimum onto another modulo the network's symmetries."""

from __future__ import annotations

import click
import torch

import landscape
import landscape.paths

from ._common import RESOLUTION, SEED, count, device_option, echo_json, file_problem_option, json_option, table


@click.command()
@click.argument("reference", type=click.Path())
@click.argument("moved", type=click.Path())
@click.option("-o", "--out", required=True, type=click.Path(), help="Checkpoint to write: MOVED, aligned.")
@click.option("--method", type=click.Choice(list(landscape.ALIGNERS)), default="weight", show_default=True,
              help="weight: weight matching; activation: activation matching on the training data; none: keep "
                   "the units as they are.")
@click.option("--rescale/--no-rescale", default=None,
              help="Divide out the positive rescaling of ReLU/linear units first. Default: on where it is a "
                   "symmetry of the loss (homogeneous activations, no weight decay), off for --method none.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the layer order (weight matching).")
@click.option("--max-iter", type=count(1, 10**6), default=100, show_default=True,
              help="Most sweeps of weight matching.")
@click.option("--samples", type=count(1), default=None, help="Samples used by activation matching (default: all).")
@click.option("--resolution", type=RESOLUTION, default=landscape.paths.DEFAULT_RESOLUTION, show_default=True,
              help="Points per straight path when checking its barrier.")
@file_problem_option
@device_option
@json_option
def align(reference, moved, out, method, rescale, seed, max_iter, samples, resolution, given, device, as_json):
    """Align MOVED to REFERENCE by a permutation (and rescaling) of hidden units; write it to OUT.

    The aligned network computes the same function as MOVED. The linear barrier between REFERENCE and
    MOVED is printed before and after: a barrier that vanishes after alignment was only a symmetry.
    """
    ck_a = landscape.load_checkpoint(reference, problem=given)
    ck_b = landscape.load_checkpoint(moved, problem=given or ck_a.problem)
    problem = ck_a.problem
    dev = landscape.resolve_device(device)
    a, b = ck_a.theta.to(dev), ck_b.theta.to(dev)
    result = landscape.align(problem, a, b, method=method, rescale=rescale, max_iter=max_iter, samples=samples,
                             generator=torch.Generator().manual_seed(seed))
    paths = [landscape.paths.straight_path(problem, a, t, resolution=resolution) for t in (b, result.theta)]
    barrier = {"before": paths[0].barrier, "after": paths[1].barrier,
               "max_loss_before": paths[0].max_loss, "max_loss_after": paths[1].max_loss}
    trajectory = None
    if ck_b.trajectory is not None:
        trajectory = dict(ck_b.trajectory, theta=result.apply(ck_b.trajectory["theta"].to(dev)))
    record = {"reference": str(reference), "source": str(moved), "linear_barrier": barrier,
              "resolution": resolution, **result.summary()}
    landscape.save_checkpoint(out, problem, result.theta, seed=ck_b.seed, trajectory=trajectory,
                              meta={**ck_b.meta, "alignment": record})
    if as_json:
        echo_json({"file": str(out), "loss": float(problem.loss(result.theta)), **record})
        return
    click.echo(f"{moved} -> {out}: aligned to {reference} by {method} matching"
               f"{' with rescaling' if result.rescaled else ''} ({result.seconds:.2f} s)")
    rows = [[g.name, g.size, result.moved_units[g.name], "yes" if g.name in result.scales else "no"]
            for g in result.symmetry.groups]
    kinds = (result.info.get("method") or {}).get("groups") if isinstance(result.info.get("method"), dict) else None
    if rows and kinds:  # which group each layer was matched over (a transformer's: orthogonal maps, heads)
        rows = [row + [kinds.get(row[0], "permutation")] for row in rows]
    if rows:
        click.echo(table(rows, ["layer", "units", "moved", "rescaled"] + (["group"] if kinds else [])))
    else:
        click.echo("the network has no hidden layer: nothing to permute")
    click.echo(f"distance to reference: {result.distance_before:.6g} -> {result.distance_after:.6g}")
    click.echo(f"linear barrier: {barrier['before']:.6g} -> {barrier['after']:.6g}   (max loss "
               f"{barrier['max_loss_before']:.6g} -> {barrier['max_loss_after']:.6g}; endpoint losses "
               f"{paths[1].losses[0].item():.6g}, {paths[1].losses[-1].item():.6g})")
