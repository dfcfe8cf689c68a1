"""Linear barrier between independently trained minima, before and after alignment, as width grows.

    python -m landscape_cli.barrier_vs_width --widths 16,64,256 --seeds 0,1,2 -o runs/barrier_vs_width

Trains ``digits_mlp`` (or ``--problem``) minima with ``landscape.train`` (all seeds of a width as one
batch; resumable: finished checkpoints in ``OUT/w<W>/`` are kept), to the same training loss (``--until-loss``) or
to checked minima (``--to-minima``), then, for every pair of seeds,
certifies the straight path a → b and a → align(a, b) for each alignment method, with and without
the rescaling canonical form. Ainsworth et al. (ICLR 2023) and Entezari et al. (ICLR 2022) report
that the barrier after alignment shrinks as the network widens. Writes ``OUT/barriers.json``.

A width W sets the problem's ``width`` parameter, or each ``--scale NAME=F`` parameter to F·W — for the
transformer, ``--scale d_model=1 --scale d_mlp=4`` widens the residual stream and the MLP together:

    python -m landscape_cli.barrier_vs_width --problem modadd_transformer --widths 32,64,128 --scale d_model=1 \
        --scale d_mlp=4 --seeds 0,1,2 --to-minima -o runs/transformer_width
"""

from __future__ import annotations

import itertools
import json
import statistics

import click
import torch

import landscape
from landscape.minima import train_checkpoints

from ._common import POSITIVE, RESOLUTION, Real, UserError, count, echo_json, parse_params, parse_seeds, table

VARIANTS = [("none", False), ("weight", False), ("weight", True), ("activation", False), ("activation", True)]


@click.command()
@click.option("--problem", "problem_name", default="digits_mlp", show_default=True)
@click.option("--widths", default="16,64,256", show_default=True, help="Comma-separated hidden widths.")
@click.option("--seeds", default="0,1,2", show_default=True, help="Seeds per width; every pair is compared.")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="Other problem parameters.")
@click.option("--steps", type=count(1), default=5000, show_default=True)
@click.option("--lr", type=POSITIVE, default=None, help="Learning rate [default: the problem's, as train's].")
@click.option("--until-loss", type=Real(0), default=2e-3, show_default=True,
              help="Train every minimum to the same training loss (Freeman & Bruna's protocol).")
@click.option("--to-minima", is_flag=True, help="Train to checked minima instead (polished; ignores --until-loss).")
@click.option("--scale", "scales", multiple=True, metavar="NAME=F",
              help="Set parameter NAME to F x width (repeatable; default: width=1).")
@click.option("--resolution", type=RESOLUTION, default=64, show_default=True,
              help="Sub-intervals of each straight path's certified check.")
@click.option("--threads", type=count(1, 1024), default=None, help="torch threads (default: torch's choice).")
@click.option("-o", "--out", "out_dir", default="runs/barrier_vs_width", show_default=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True)
def main(problem_name, widths, seeds, params, steps, lr, until_loss, to_minima, scales, resolution, threads, out_dir,
         as_json):
    """Barrier before/after weight and activation matching, per width (mean ± std over seed pairs)."""
    before = torch.get_num_threads()
    try:
        _run(problem_name, widths, seeds, params, steps, lr, None if to_minima else until_loss, _scales(scales),
             resolution, threads, out_dir, as_json)
    except landscape.LandscapeError as err:
        raise UserError(str(err)) from None
    finally:
        torch.set_num_threads(before)


def _scales(specs) -> dict[str, float]:
    out = {}
    for spec in specs or ("width=1",):
        name, sep, factor = spec.partition("=")
        try:
            out[name.strip()] = float(factor)
        except ValueError:
            raise UserError(f"--scale {spec!r}: expected NAME=FACTOR, e.g. --scale d_mlp=4") from None
        if not sep or not name.strip() or not out[name.strip()] > 0:
            raise UserError(f"--scale {spec!r}: expected NAME=FACTOR with a positive factor, e.g. --scale d_mlp=4")
    return out


def _run(problem_name, widths, seeds, params, steps, lr, until_loss, scales, resolution, threads, out_dir, as_json):
    from pathlib import Path

    if threads:
        torch.set_num_threads(threads)
    rows = []
    for width in [int(w) for w in widths.split(",")]:
        sized = {name: max(1, round(factor * width)) for name, factor in scales.items()}
        problem = landscape.make_problem(problem_name, **{**parse_params(params), **sized})
        files = train_checkpoints(problem, parse_seeds(seeds), Path(out_dir) / f"w{width}", steps=steps, lr=lr,
                                  until_loss=until_loss, trajectory=False, progress=True)
        minima = [landscape.load_checkpoint(f["file"]) for f in files]
        for ca, cb in itertools.combinations(minima, 2):
            endpoint_loss = float(problem.loss(torch.stack([ca.theta, cb.theta])).max())  # alignment keeps b's loss
            for method, rescale in VARIANTS:
                result = landscape.align(problem, ca.theta, cb.theta, method=method, rescale=rescale,
                                         generator=torch.Generator().manual_seed(0))
                test = (landscape.barrier(problem, ca.theta, result.theta, resolution=resolution, split="test")
                        if "test" in problem.splits else None)
                rows.append({"width": width, "dim": problem.dim, "seeds": [ca.seed, cb.seed], "method": method,
                             "rescale": rescale, "endpoint_loss": endpoint_loss, "test_barrier": test,
                             "barrier": landscape.barrier(problem, ca.theta, result.theta, resolution=resolution),
                             "distance": result.distance_after, "seconds": result.seconds})
    _write_json(Path(out_dir) / "barriers.json", rows)
    summary = _summarize(rows)
    if as_json:
        echo_json(summary)
        return
    columns = [f"{m}{'+rescale' if s else ''}" for m, s in VARIANTS] + ["none (test)", "weight (test)"]
    click.echo(table([[r["width"], r["dim"], r["pairs"], f"{r['endpoint_loss']:.2g}"] + [r[c] for c in columns]
                      for r in summary], ["width", "D", "pairs", "L(endpoints)"] + columns))


def _summarize(rows):
    out = []
    for width in sorted({r["width"] for r in rows}):
        mine = [r for r in rows if r["width"] == width]
        row = {"width": width, "dim": mine[0]["dim"], "pairs": len({tuple(r["seeds"]) for r in mine}),
               "endpoint_loss": max(r["endpoint_loss"] for r in mine)}
        for method, rescale in VARIANTS:
            values = [r["barrier"] for r in mine if r["method"] == method and r["rescale"] == rescale]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            row[f"{method}{'+rescale' if rescale else ''}"] = f"{statistics.mean(values):.3f} ± {spread:.3f}"
        for method in ("none", "weight"):
            values = [r["test_barrier"] for r in mine if r["method"] == method and not r["rescale"]
                      and r["test_barrier"] is not None]
            row[f"{method} (test)"] = f"{statistics.mean(values):.3f}" if values else "-"
        out.append(row)
    return out


def _write_json(path, rows):
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(rows, fh, indent=1)
    os.replace(tmp, path)


if __name__ == "__main__":  # pragma: no cover
    main()
