"""Study 4 from a script, through the Python API: implicit regularization on separable data.

The same study as ``landscape study run implicit_regularization``, with the knobs a reader of
Soudry et al. (2018) or Poggio, Banburski & Liao (2020) turns first::

    python -m landscape_cli.implicit_regularization --steps 1000000 --dim 100 --workers 2
    python -m landscape_cli.implicit_regularization --scheduler tcp://host:8786

A changed study gets its own name (and store), so its results never mix with the built-in one's.
"""

from __future__ import annotations

import argparse

import landscape


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m landscape_cli.implicit_regularization", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, help="gradient steps per run (default: the study file's)")
    ap.add_argument("--dim", type=int, help="input dimension d of exp_linear (default: the study file's)")
    ap.add_argument("--workers", type=int, default=None, help="local worker processes")
    ap.add_argument("--scheduler", default=None, help="a Dask scheduler, tcp://host:8786")
    ap.add_argument("--store", default=None, help="SQLite results store")
    ap.add_argument("--out", default=None, help="report folder")
    args = ap.parse_args(argv)

    study = landscape.load_study("implicit_regularization")
    if args.steps is not None:
        study.fixed["steps"] = args.steps
        study.name += f"_steps{args.steps}"
    if args.dim is not None:
        study.problem["dim"] = args.dim
        study.name += f"_d{args.dim}"
    summary = landscape.run_study(study, store=args.store, workers=args.workers, scheduler=args.scheduler)
    report = landscape.write_report(study, store=summary["store"], out=args.out)
    for name in ("summary", "series_0"):
        table = report["tables"][name]
        print(f"\n{table.title}\n\n{table.markdown()}")
    print(f"{summary['done']}/{summary['tasks']} done; report in {report['folder']}/")
    return summary


if __name__ == "__main__":
    main()
