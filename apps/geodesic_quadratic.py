"""Freeman & Bruna's normalized geodesic length on the quadratic regression, against the level L0.

    python -m landscape_cli.geodesic_quadratic [--pairs 8] [--levels 0.05,0.025,0.01] [--json]

Trains 2·pairs minima of the 1-4-4-1 sigmoid regression to each level L0 (Adam until the loss first
reaches L0, all seeds one batch), connects consecutive seeds with Dynamic String Sampling at
u = L0, and prints: L0, pairs, connected, mean normalized length (± std, min-max), beads, seconds.
With ``--fixed-minima L`` the minima are trained once, to loss L, and the same pairs are connected
at every level.
"""

from __future__ import annotations

import click

import landscape

from ._common import Command, POSITIVE, count, echo_json, json_option, parse_params, table


@click.command(cls=Command)
@click.option("--levels", default="0.05,0.025,0.01", show_default=True, help="Levels L0, comma-separated.")
@click.option("--pairs", type=count(1, 10**4), default=8, show_default=True, help="Pairs of minima per level.")
@click.option("--n-train", type=count(1, 10**7), default=1000, show_default=True,
              help="Training samples of the regression.")
@click.option("--lr", type=POSITIVE, default=0.005, show_default=True, help="Adam learning rate of the minima.")
@click.option("--method", type=click.Choice(list(landscape.METHODS)), default="string", show_default=True)
@click.option("--level-factor", type=POSITIVE, default=1.0, show_default=True,
              help="Certify the paths at u = factor x L0.")
@click.option("--fixed-minima", type=POSITIVE, default=None, metavar="L",
              help="Train the minima once, to loss L, and connect the same pairs at every level.")
@click.option("--opt", "-O", "options", multiple=True, metavar="KEY=VALUE", help="A method option (repeatable).")
@json_option
def main(levels, pairs, n_train, lr, method, level_factor, fixed_minima, options, as_json):
    """Normalized geodesic length of the quadratic regression's level sets against L0."""
    problem = landscape.make_problem("quadratic_regression", n_train=n_train)
    rows = landscape.geodesic_lengths(problem, [float(v) for v in levels.split(",")], pairs=pairs, method=method,
                                      level_factor=level_factor, train_to=fixed_minima, lr=lr,
                                      options=parse_params(options, "-O"))
    if as_json:
        echo_json(rows)
        return
    trained = f"until {fixed_minima:g} (the same pairs at every L0)" if fixed_minima else "until L0"
    click.echo(f"{problem!r}, minima: Adam lr {lr} {trained}; paths: {method} at u = {level_factor:g} x L0")
    click.echo(_table(rows))


def _table(rows) -> str:
    return table([[f"{r['level']:g}", r["pairs"], r["connected"],
                   f"{r['normalized_length']:.3f} ± {r['normalized_length_std']:.3f}",
                   f"{r['normalized_length_min']:.2f}-{r['normalized_length_max']:.2f}", f"{r['beads']:.1f}",
                   f"{r['chord']:.2f}", f"{r['train_seconds']:.1f}", f"{r['seconds']:.1f}"] for r in rows],
                 ["L0", "pairs", "connected", "normalized length", "range", "beads", "chord", "train s",
                  "connect s"])


if __name__ == "__main__":  # pragma: no cover
    main()
