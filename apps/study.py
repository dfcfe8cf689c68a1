"""``landscape study``: run a study file (locally or on a Dask cluster), see where it stands, report it."""

from __future__ import annotations

import sys
from pathlib import Path

import click

import landscape

from ._common import UserError, count, echo_json, json_option, parse_params, quiet_option, table


def _is_store(arg: str) -> bool:
    path = Path(arg)
    if not path.is_file():
        return False
    with open(path, "rb") as fh:
        return fh.read(16) == b"SQLite format 3\x00"


def _study_and_store(arg, store):
    """STUDY may be a study file, a built-in study's name, or a store (then the study is the one it keeps)."""
    if arg is None and store is None:
        raise UserError("name a study (a TOML file or a built-in study) or a --store")
    if arg is not None and _is_store(arg):
        if store is not None:
            raise UserError(f"{arg} is a study store; give either it or --store, not both")
        return None, arg
    return arg, store


@click.group()
def study():
    """Scripted sweeps: a study file names a problem, a grid and a task; results go to SQLite.

    \b
      landscape study list
      landscape study run implicit_regularization --workers 2
      landscape study run my_study.toml --scheduler tcp://host:8786
      landscape study status implicit_regularization
      landscape study report implicit_regularization -o report/
    """


@study.command("list")
@json_option
def list_(as_json):
    """The built-in studies (data/studies/*.toml)."""
    rows = []
    for name, path in landscape.builtin_studies().items():
        s = landscape.load_study(path)
        rows.append({"name": name, "task": s.task, "tasks": len(s.tasks()), "file": str(path),
                     "description": s.description})
    if as_json:
        echo_json(rows)
        return
    click.echo(table([[r["name"], r["task"], r["tasks"], r["description"]] for r in rows],
                     ["study", "task", "tasks", "description"]))


@study.command()
@click.argument("study_file", metavar="STUDY")
@click.option("--store", type=click.Path(dir_okay=False), default=None,
              help="SQLite results store [default: STUDY_NAME.sqlite in the working folder].")
@click.option("--workers", type=count(0, 1024), default=None,
              help="Local worker processes [default: one per GPU on CUDA, else one per core]; 0 runs in this process.")
@click.option("--scheduler", default=None, metavar="ADDRESS", help="Run on a Dask cluster: tcp://host:8786.")
@click.option("--scheduler-file", type=click.Path(dir_okay=False), default=None,
              help="Run on the Dask cluster of this scheduler file (dask-mpi, dask-jobqueue).")
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda",
              help="Resolved by each worker; auto uses its GPU when it has one.")
@click.option("--threads", type=count(1, 1024), default=None, help="Torch threads per task [default: cores / workers].")
@click.option("--resources", multiple=True, metavar="KEY=N",
              help="Dask resources each task holds (repeatable), e.g. GPU=1 [default: GPU=1 on GPU clusters].")
@click.option("--no-retry", is_flag=True, help="Do not rerun tasks that failed before.")
@click.option("-o", "--report", "report_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the report [default: STUDY_NAME_report].")
@click.option("--no-report", is_flag=True, help="Do not write the report (CSV, Markdown, PNG) at the end.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Change a value of the study (repeatable): grid.AXIS=[...], task.KEY=V, problem.KEY=V, or a bare "
                   "axis or task parameter; e.g. --set problem.width=[2,8] --set steps=500.")
@quiet_option
@json_option
def run(study_file, store, workers, scheduler, scheduler_file, device, threads, resources, no_retry, report_dir,
        no_report, sets, quiet, as_json):
    """Run the unfinished tasks of STUDY (a TOML file or a built-in name), then print and write its report.

    Stop it at any moment (Ctrl-C, SIGTERM, even SIGKILL) and run the same command again: finished
    tasks are kept, the others run.
    """
    res = parse_params(resources, "--resources") or None
    if sets:  # the changed study runs and is reported; the store keeps it (`study status STORE` shows it)
        study_file = landscape.studies.override_study(landscape.load_study(study_file), parse_params(sets, "--set"))
    summary = landscape.run_study(study_file, store=store, workers=workers, scheduler=scheduler,
                                  scheduler_file=scheduler_file, device=device, threads=threads, resources=res,
                                  retry_failed=not no_retry, progress=not quiet)
    report = None
    if not no_report and summary["done"]:
        report = landscape.write_report(study_file, store=summary["store"], out=report_dir)
    if as_json:
        echo_json({**summary, "report": _json_report(report)})
    else:
        click.echo(f"study {summary['study']}: {summary['done']}/{summary['tasks']} done, {summary['failed']} failed, "
                   f"{summary['pending']} pending; ran {summary['ran']} task(s) in {summary['seconds']:.1f} s "
                   f"({summary['executor']}); store {summary['store']}")
        if report is not None:
            _echo_report(report)
    _warn_failures(summary)


@study.command()
@click.argument("study_file", metavar="[STUDY]", required=False)
@click.option("--store", type=click.Path(dir_okay=False), default=None,
              help="SQLite results store [default: STUDY_NAME.sqlite].")
@json_option
def status(study_file, store, as_json):
    """How far STUDY (or the study kept in a store) has got: done, failed, pending, timings."""
    study_file, store = _study_and_store(study_file, store)
    st = landscape.study_status(study_file, store=store)
    if as_json:
        echo_json(st)
        return
    running = f"running now ({st['running']})" if st["running"] else "not running"
    click.echo(f"study {st['study']} (task {st['task']}), store {st['store']}: {running}")
    mean = f"{st['mean_seconds']:.2f} s" if st["mean_seconds"] is not None else "-"
    click.echo(table([[st["tasks"], st["done"], st["failed"], st["pending"], f"{st['task_seconds']:.1f} s", mean,
                       st["workers"]]],
                     ["tasks", "done", "failed", "pending", "task time", "mean", "workers"]))
    if st["other"]:
        click.echo(f"{st['other']} stored result(s) belong to tasks no longer in the study file (kept, not reported)")
    for err in st["errors"]:
        click.echo(f"failed {err['id']} {err['point']}: {err['error']}")


@study.command()
@click.argument("study_file", metavar="[STUDY]", required=False)
@click.option("--store", type=click.Path(dir_okay=False), default=None,
              help="SQLite results store [default: STUDY_NAME.sqlite].")
@click.option("-o", "--out", type=click.Path(file_okay=False), default=None,
              help="Folder for the report [default: STUDY_NAME_report].")
@click.option("--format", "formats", default="csv,md,png", show_default=True,
              help="Comma-separated: csv, md, png.")
@json_option
def report(study_file, store, out, formats, as_json):
    """Write the tables (CSV, Markdown) and plots (PNG) of STUDY's results, and print the tables."""
    study_file, store = _study_and_store(study_file, store)
    rep = landscape.write_report(study_file, store=store, out=out,
                                 formats=tuple(f.strip() for f in formats.split(",") if f.strip()))
    if as_json:
        echo_json(_json_report(rep))
        return
    _echo_report(rep)


def _json_report(rep):
    if rep is None:
        return None
    return {"folder": rep["folder"], "files": rep["files"], "done": rep["done"], "tasks": rep["tasks"],
            "tables": {name: t.as_dicts() for name, t in rep["tables"].items()}}


def _echo_report(rep):
    for name, t in rep["tables"].items():
        if name == "results" and len(t.rows) > 20:
            continue  # long: it is in the files
        click.echo(f"\n{t.title}\n")
        click.echo(t.markdown(), nl=False)
    click.echo(f"\n{rep['done']}/{rep['tasks']} task(s) reported; wrote {len(rep['files'])} file(s) in "
               f"{rep['folder']}/")


def _warn_failures(summary):
    if summary["failed"]:
        first = summary["errors"][0] if summary["errors"] else {}
        click.echo(f"landscape: {summary['failed']} task(s) failed (rerun to retry; `landscape study status` lists "
                   f"them); first: {first.get('point')}: {first.get('error', '')}", err=True)
        sys.exit(1)
