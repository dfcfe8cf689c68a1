"""``landscape study``: run, status, report, list; user errors are one line with exit status 2."""

import json
import sqlite3

import pytest
from click.testing import CliRunner
from test_study import wells

import landscape
from landscape_cli.cli import main


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_run_status_report_on_the_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = wells(tmp_path, seeds=2)
    result = invoke("study", "run", path, "--workers", 0, "--quiet", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["tasks"], out["done"], out["failed"], out["ran"]) == (4, 4, 0, 4)
    assert out["store"] == "wells.sqlite" and out["report"]["folder"] == "wells_report"
    assert sorted(out["report"]["tables"]) == ["results", "summary"]
    assert (tmp_path / "wells_report" / "plot_0.png").exists()

    human = invoke("study", "run", path, "--workers", 0, "--quiet")  # resumes: nothing left
    assert human.exit_code == 0
    assert "study wells: 4/4 done, 0 failed, 0 pending; ran 0 task(s)" in human.stdout
    assert "| problem.tilt | n | loss |" in human.stdout  # the summary table is printed

    status = json.loads(invoke("study", "status", path, "--json").stdout)
    assert (status["done"], status["pending"], status["running"]) == (4, 0, None)
    by_store = invoke("study", "status", "wells.sqlite")  # a store stands for its study
    assert by_store.exit_code == 0 and "study wells (task train_minima)" in by_store.stdout

    rep = invoke("study", "report", "--store", "wells.sqlite", "-o", "md_only", "--format", "md", "--json")
    assert rep.exit_code == 0
    files = json.loads(rep.stdout)["files"]
    assert sorted(f.split("/")[-1] for f in files) == ["results.md", "summary.md"]


def test_failures_exit_1_with_the_first_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bad_lr.toml"
    path.write_text(wells(tmp_path, seeds=1).read_text().replace("lr = 0.1", "lr = -1.0"))
    result = CliRunner().invoke(main, ["study", "run", str(path), "--workers", "0", "--quiet"])
    assert result.exit_code == 1
    assert "2 task(s) failed" in result.stderr and "learning rate must be a positive number" in result.stderr
    status = invoke("study", "status", path)
    assert "learning rate must be a positive number" in status.stdout


def test_list_shows_the_built_in_studies():
    result = invoke("study", "list", "--json")
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["implicit_regularization"]["task"] == "implicit_bias"
    assert rows["implicit_regularization"]["tasks"] == 9


@pytest.mark.parametrize("make, args, message", [
    (None, ["study", "run", "missing.toml"], "missing.toml: no such study file"),
    (None, ["study", "status"], "name a study"),
    (None, ["study", "status", "wells.toml"], "no such study store"),
    ("garbage", ["study", "run", "wells.toml", "--store", "bad.sqlite"], "not a study store"),
    ("foreign", ["study", "status", "--store", "bad.sqlite"], "another program"),
    (None, ["study", "run", "wells.toml", "--workers", "-1"], "Invalid value for '--workers'"),
    (None, ["study", "run", "wells.toml", "--scheduler", "tcp://127.0.0.1:9"], "cannot reach the Dask scheduler"),
    (None, ["study", "report", "wells.toml", "--format", "pdf"], "unknown report format"),
])
def test_study_user_errors_are_one_line_exit_2(tmp_path, monkeypatch, make, args, message):
    monkeypatch.chdir(tmp_path)
    wells(tmp_path, seeds=1)
    if make == "garbage":
        (tmp_path / "bad.sqlite").write_bytes(b"\x00garbage" * 64)
    elif make == "foreign":
        with sqlite3.connect(tmp_path / "bad.sqlite") as db:
            db.execute("CREATE TABLE other (x)")
    if args[1] == "report":
        invoke("study", "run", "wells.toml", "--workers", 0, "--quiet", "--no-report")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.output


def test_the_study_4_script_runs_through_the_python_api(tmp_path, monkeypatch, capsys):
    from landscape_cli.implicit_regularization import main as script

    monkeypatch.chdir(tmp_path)
    summary = script.main(["--steps", "30", "--dim", "8", "--workers", "0"], standalone_mode=False)
    assert summary["study"] == "implicit_regularization_steps30_d8" and summary["done"] == 9
    out = capsys.readouterr().out
    assert "| step | cosine (gd) | cosine (normalized_gd) | cosine (weight_norm) |" in out
    rows = landscape.study_results(store=summary["store"])
    assert {r["params"]["problem"]["params"]["dim"] for r in rows} == {8}
