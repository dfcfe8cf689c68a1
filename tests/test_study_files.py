"""A study file is checked whole when it is read: every task parameter (with the command line's ranges), how deep
it nests and how many tasks its grid makes; nothing runs, and nothing waits for minutes, before a refusal."""

import time

import pytest
from click.testing import CliRunner

import landscape
from landscape import LandscapeError
from landscape.studies.limits import MAX_DEPTH, MAX_TASKS
from landscape.studies.checks import PARAM_CHECKS
from landscape.studies.tasks import TASKS
from landscape_cli.cli import main

STUDY = """
[study]
name = "s"
task = "{task}"

[problem]
name = "double_well"

[grid]
{grid}

[task]
{fixed}
"""


def write(tmp_path, grid="seed = [0]", fixed="steps = 10", task="train_minima", name="s.toml"):
    path = tmp_path / name
    path.write_text(STUDY.format(task=task, grid=grid, fixed=fixed))
    return path


BAD_PARAMETERS = [
    ("steps = 1e12", "steps = 1000000000000.0 is not a whole number in [1, 1,000,000,000]"),
    ("steps = 1_000_000_001", "steps = 1000000001 is not a whole number in [1, 1,000,000,000]"),
    ('steps = "many"', "steps = 'many' is not a whole number"),
    ("steps = -5", "steps = -5 is not a whole number"),
    ("steps = 10.0", "steps = 10.0 is not a whole number"),
    ('lr = "fast"', "lr = 'fast' is not a finite number > 0"),
    ("lr = 0", "lr = 0 is not a finite number > 0"),
    ("batch_size = -1", "batch_size = -1 is not a whole number in [1, 1,000,000,000], or left out"),
    ('optimizer = "teleport"', "optimizer = 'teleport' is not one of ['adam', 'gd']"),
    ('float64 = "yes"', "float64 = 'yes' is not true or false"),
    ("momentum = 1", "momentum = 1 is not a finite number >= 0 and < 1"),
    ("until_loss = true", "until_loss = True is not a finite number, or left out"),
    ("seeds = []", "seeds = [] is not a list of 1 to 10,000 values"),
    ("seeds = [0, -1]", "seeds = [0, -1] is not a list of 1 to 10,000 values, each a whole number"),
    ("seeds = [true]", "seeds = [True] is not a list"),
]


@pytest.mark.parametrize("fixed,message", BAD_PARAMETERS)
def test_a_bad_task_parameter_is_refused_when_the_study_is_read(tmp_path, fixed, message):
    path = write(tmp_path, fixed=fixed)
    with pytest.raises(LandscapeError, match="s.toml: task seed=0: " + _escaped(message)):
        landscape.load_study(path)


@pytest.mark.parametrize("grid,message", [
    ('seed = ["a"]', "task seed='a': seed = 'a' is not a whole number in [0, 9,223,372,036,854,775,807]"),
    ("seed = [0.5]", "task seed=0.5: seed = 0.5 is not a whole number"),
    ("seed = [0, -1]", "task seed=-1: seed = -1 is not a whole number"),
    ('seed = [0]\nlr = [0.1, "fast"]', "task seed=0, lr='fast': lr = 'fast' is not a finite number > 0"),
])
def test_a_bad_value_of_a_swept_axis_names_its_grid_point(tmp_path, grid, message):
    with pytest.raises(LandscapeError, match=_escaped(message)):
        landscape.load_study(write(tmp_path, grid=grid))


@pytest.mark.parametrize("task,fixed,message", [
    ("geodesic_length", 'level = 0.05\nmethod = "teleport"', "method = 'teleport' is not one of"),
    ("geodesic_length", 'level = 0.05\nprotocol = "mine"', "protocol = 'mine' is not one of ['fixed_minima'"),
    ("geodesic_length", 'level = "low"', "level = 'low' is not a finite number"),
    ("geodesic_length", "level = 0.05\noptions = { no_such = 1 }", "options: path method 'string' has no option"),
    ("count_valleys", "levels = [0.1, -1]", "levels = [0.1, -1] is not a list of 1 to 10,000 values, each a finite "
                                           "number >= 0"),
    ("count_valleys", 'level_scale = "max"', "level_scale = 'max' is not one of ['best', 'zero']"),
    ("count_valleys", "attempts = 0", "attempts = 0 is not a whole number in [1, 100]"),
    ("count_valleys", 'align = "magic"', "align = 'magic' is not one of"),
    ("implicit_bias", 'dynamics = "fly"', "dynamics = 'fly' is not one of"),
    ("implicit_bias", "records = 1", "records = 1 is not a whole number in [2, 1,000,000]"),
])
def test_every_task_s_parameters_are_checked(tmp_path, task, fixed, message):
    with pytest.raises(LandscapeError, match="s.toml: task problem.tilt=0.0: " + _escaped(message)):
        landscape.load_study(write(tmp_path, grid="problem.tilt = [0.0]", fixed=fixed, task=task))


@pytest.mark.parametrize("where,value", [("task", "lr = nan"), ("task", "lr = -inf"), ("grid", "seed = [0, inf]")])
def test_a_number_that_is_not_finite_is_named(tmp_path, where, value):
    path = write(tmp_path, **{"grid" if where == "grid" else "fixed": value})
    key = value.split(" = ")[0] + ("[1]" if where == "grid" else "")
    with pytest.raises(LandscapeError, match=_escaped(f"s.toml: {where}.{key} = ") + ".* is not a finite number"):
        landscape.load_study(path)


def test_every_declared_parameter_has_a_check_and_every_default_passes_it():
    for name in TASKS:
        declared = TASKS.options(name)
        assert set(declared) - {"problem"} <= set(PARAM_CHECKS), name
        for key, default in declared.items():
            if key != "problem" and default is not landscape.studies.task_params.REQUIRED:
                assert PARAM_CHECKS[key].ok(default), (name, key, default)


def test_the_built_in_studies_pass_their_checks():
    for name in landscape.studies.study.builtin_studies():
        assert landscape.load_study(name).tasks()


@pytest.mark.parametrize("grid,message", [
    ("seed = { start = 0, stop = 1000000000 }", "grid.seed: the range holds 1,000,000,000 values"),
    ("seed = { start = 0, stop = 99999999999999999999 }", "grid.seed: the range holds more than 2**63 values"),
    ("seed = { start = 0, stop = 1000 }\nlr = { start = 1, stop = 1001 }\nsteps = { start = 1, stop = 1001 }",
     "the grid makes 1,000,000,000 tasks (seed 1,000 x lr 1,000 x steps 1,000); a study runs at most 10,000"),
])
def test_a_huge_grid_is_refused_at_once_with_its_size(tmp_path, grid, message):
    path = write(tmp_path, grid=grid, fixed="")
    clock = time.perf_counter()
    with pytest.raises(LandscapeError, match=_escaped(message)):
        landscape.load_study(path)
    assert time.perf_counter() - clock < 30  # nothing expanded (it took minutes, or memory ran out)


def test_a_grid_at_the_cap_is_accepted(tmp_path):
    study = landscape.load_study(write(tmp_path, grid=f"seed = {{ start = 0, stop = {MAX_TASKS} }}"))
    assert len(study.tasks()) == MAX_TASKS


@pytest.mark.parametrize("grid,message", [
    ("x = " + "[" * 5000 + "]" * 5000, "values nested too deeply to read"),
    ("seed = [0]\n" + "a." * 5000 + "b = [1]", f"grid is nested more than {MAX_DEPTH} levels deep"),
    ("seed = [0]\n" + "a." * 40 + "b = [1]", f"grid is nested more than {MAX_DEPTH} levels deep"),
])
def test_deep_nesting_is_one_line(tmp_path, grid, message):
    path = write(tmp_path, grid=grid)
    with pytest.raises(LandscapeError, match=_escaped(message)):
        landscape.load_study(path)
    result = CliRunner().invoke(main, ["study", "run", str(path), "--workers", "0"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output


def test_set_values_are_checked_as_the_file_s(tmp_path):
    path = write(tmp_path)
    for value, message in [("1e12", "steps = 1000000000000.0 is not a whole number"),
                           ("[" * 5000 + "]" * 5000, "--set steps=...: the value is nested too deeply")]:
        result = CliRunner().invoke(main, ["study", "run", str(path), "--set", f"steps={value}", "--workers", "0"])
        assert result.exit_code == 2 and message in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s.sqlite").exists()


def test_a_refused_study_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, grid="seed = [0, 1]", fixed='steps = 10\noptimizer = "teleport"')
    result = CliRunner().invoke(main, ["study", "run", str(path), "--workers", "0", "--quiet"])
    assert result.exit_code == 2 and "optimizer = 'teleport'" in result.stderr
    assert not (tmp_path / "s.sqlite").exists()


def _escaped(text: str) -> str:
    import re

    return re.escape(text)


@pytest.mark.parametrize("command", ["status", "report"])
def test_a_store_row_whose_figures_are_not_json_is_one_line_naming_it(tmp_path, monkeypatch, command):
    import sqlite3

    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, grid="seed = [0, 1]", fixed='optimizer = "gd"\nlr = 0.1\nsteps = 20\nfloat64 = true')
    assert CliRunner().invoke(main, ["study", "run", str(path), "--workers", "0", "--no-report", "-q"]).exit_code == 0
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        (tid,) = db.execute("SELECT id FROM tasks WHERE idx = 1").fetchone()
        db.execute("UPDATE tasks SET figures = '{not json' WHERE idx = 1")
    result = CliRunner().invoke(main, ["study", command, str(path)])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
    assert tid in result.stderr and "figures" in result.stderr and "Traceback" not in result.output
