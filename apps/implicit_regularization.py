"""Study 4 from a script, through the Python API: implicit regularization on separable data.

The same study as ``landscape study run implicit_regularization``, with the knobs a reader of
Soudry et al. (2018) or Poggio, Banburski & Liao (2020) turns first::

    python -m landscape_cli.implicit_regularization --steps 1000000 --dim 100 --workers 2
    python -m landscape_cli.implicit_regularization --scheduler tcp://host:8786

A changed study gets its own name (and store), so its results never mix with the built-in one's.
"""

from __future__ import annotations

import click

import landscape

from ._common import Command


@click.command(cls=Command)
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Gradient steps per run (default: the study file's).")
@click.option("--dim", type=click.IntRange(min=1), default=None,
              help="Input dimension d of exp_linear (default: the study file's).")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="Local worker processes.")
@click.option("--scheduler", default=None, help="A Dask scheduler, tcp://host:8786.")
@click.option("--store", default=None, help="SQLite results store.")
@click.option("--out", default=None, help="Report folder.")
def main(steps, dim, workers, scheduler, store, out) -> dict:
    """Study 4 (implicit regularization) through the Python API, with its steps and dimension as options."""
    study = landscape.load_study("implicit_regularization")
    if steps is not None:
        study.fixed["steps"] = steps
        study.name += f"_steps{steps}"
    if dim is not None:
        study.problem["dim"] = dim
        study.name += f"_d{dim}"
    summary = landscape.run_study(study, store=store, workers=workers, scheduler=scheduler)
    report = landscape.write_report(study, store=summary["store"], out=out)
    for name in ("summary", "series_0"):
        table = report["tables"][name]
        click.echo(f"\n{table.title}\n\n{table.markdown()}")
    click.echo(f"{summary['done']}/{summary['tasks']} done; report in {report['folder']}/")
    return summary


if __name__ == "__main__":
    main()
