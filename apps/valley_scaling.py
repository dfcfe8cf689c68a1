"""How the cost of counting valleys grows with the number of minima N.

    python -m landscape_cli.valley_scaling [--sizes 8,16,32] [--problem deep_linear] [--factor 1.1] [--json]

Trains N minima (all seeds one batch), counts the valleys of {L <= u} at u = factor x the worst
minimum's loss, and prints N, valleys, straight-segment checks, path refinements (and how many
found nothing), the N(N-1)/2 pairs an all-pairs method would refine, loss evaluations and seconds.
When all minima connect, union-find needs at most N - 1 refinements plus the failed attempts.
"""

from __future__ import annotations

import time

import click
import torch

import landscape

from ._common import Command, POSITIVE, SEED, count, echo_json, json_option, parse_params, table


@click.command(cls=Command)
@click.option("--sizes", default="8,16,32", show_default=True, help="Numbers of minima N, comma-separated.")
@click.option("--problem", "name", default="deep_linear", show_default=True)
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE", help="A problem parameter.")
@click.option("--factor", type=POSITIVE, default=1.1, show_default=True, help="u = factor x the worst loss.")
@click.option("--steps", type=count(1), default=1500, show_default=True, help="Training steps of the minima.")
@click.option("--lr", type=POSITIVE, default=0.01, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@json_option
def main(sizes, name, params, factor, steps, lr, seed, as_json):
    """Valley-counting cost against the number of minima."""
    problem = landscape.make_problem(name, **parse_params(params))
    rows = []
    for n in [int(v) for v in sizes.split(",")]:
        began = time.perf_counter()
        minima = landscape.train(problem, range(n), lr=lr, steps=steps, dtype=torch.float64)
        trained = time.perf_counter() - began
        level = factor * minima.losses.max().item()
        _, report = landscape.find_valleys(problem, minima.thetas, levels=[level],
                                           generator=torch.Generator().manual_seed(seed))
        rows.append({"n": n, "level": level, "n_valleys": report["levels"][0]["n_valleys"],
                     "straight_checks": report["straight_checks"], "refinements": report["refinements"],
                     "failed": report["failed"], "all_pairs": n * (n - 1) // 2,
                     "evaluations": report["evaluations"], "seconds": report["seconds"], "train_seconds": trained})
    if as_json:
        echo_json(rows)
        return
    click.echo(f"{problem!r}; u = {factor:g} x the worst minimum's loss")
    click.echo(table([[r["n"], f"{r['level']:.5g}", r["n_valleys"], r["straight_checks"], r["refinements"],
                       r["failed"], r["all_pairs"], f"{r['evaluations']:,}", f"{r['seconds']:.1f}"] for r in rows],
                     ["N", "level", "valleys", "straight checks", "refinements", "failed", "N(N-1)/2",
                      "evaluations", "seconds"]))


if __name__ == "__main__":  # pragma: no cover
    main()
