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
    path.write_text(wells(tmp_path, seeds=1).read_text().replace("lr = 0.1", "lr = 1e300"))  # training diverges
    result = CliRunner().invoke(main, ["study", "run", str(path), "--workers", "0", "--quiet"])
    assert result.exit_code == 1
    assert "2 task(s) failed" in result.stderr and "diverged" in result.stderr
    status = invoke("study", "status", path)
    assert "lower the learning rate" in status.stdout


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


def test_set_overrides_make_a_smaller_study_with_the_same_task_ids(tmp_path):
    """--set replaces a grid axis (a list or one value), a task parameter or a problem parameter; a task of
    the smaller study is the very task of the full one (same id), so the store shares its results."""
    from landscape.studies import override_study

    full = landscape.load_study(wells(tmp_path, seeds=4))
    small = override_study(full, {"seed": [0, 1], "problem.tilt": 0.3})
    assert len(small.tasks()) == 2 and {t.id for t in small.tasks()} <= {t.id for t in full.tasks()}
    assert [t.point for t in small.tasks()] == [{"problem.tilt": 0.3, "seed": 0}, {"problem.tilt": 0.3, "seed": 1}]
    longer = override_study(full, {"task.steps": 50, "grid.seed": {"start": 0, "stop": 3}})
    assert len(longer.tasks()) == 6 and all(t.params["steps"] == 50 for t in longer.tasks())
    assert override_study(full, {"lr": 0.05}).tasks()[0].params["lr"] == 0.05  # a bare task parameter
    assert override_study(full, {}) is full
    for sets, says in [({"width": 3}, "has no grid axis or task parameter 'width'"),
                       ({"grid.nothing": [1]}, "has no grid axis 'nothing'"),
                       ({"task.nothing": 1}, "no parameter(s) ['nothing']"),
                       ({"seed": []}, "must be a non-empty list")]:
        with pytest.raises(landscape.LandscapeError) as err:
            override_study(full, sets)
        assert says in str(err.value) and "--set" in str(err.value)


def test_study_run_with_set_on_the_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = wells(tmp_path, seeds=4)
    result = invoke("study", "run", path, "--set", "seed=[0]", "--set", "problem.tilt=[0.0]", "--set", "steps=100",
                    "--workers", 0, "--quiet", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["tasks"], out["done"], out["ran"]) == (1, 1, 1)
    bad = CliRunner().invoke(main, ["study", "run", str(path), "--set", "width=3"])
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1 and "width" in bad.stderr
    bad = CliRunner().invoke(main, ["study", "run", str(path), "--set", "seed"])
    assert bad.exit_code == 2 and "must look like key=value" in bad.stderr


def test_the_quick_built_in_study_is_small():
    study = landscape.load_study("quick_valleys")
    assert len(study.tasks()) == 2 and study.task == "count_valleys"
