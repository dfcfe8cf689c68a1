"""Studies: files, ids, the store, resuming, failures, reports — run in this process (fast)."""

import csv
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import landscape
from landscape.studies.store import Store
from landscape.studies.study import task_id

#: A tiny real study: gradient descent on the tilted double well, whose minima are known in closed form.
WELLS = """
[study]
name = "wells"
task = "train_minima"
description = "minima of the double well"

[problem]
name = "double_well"

[grid]
problem.tilt = [0.0, 0.3]
seed = {{ start = 0, stop = {seeds} }}

[task]
optimizer = "gd"
lr = {lr}
steps = {steps}
float64 = true

[report]
group = ["problem.tilt"]
figures = ["loss", "minimum_distance"]

[[report.plot]]
x = "seed"
y = ["loss"]
by = "problem.tilt"
"""


def wells(tmp_path, seeds=3, lr=0.1, steps=300, name="wells.toml"):
    path = tmp_path / name
    path.write_text(WELLS.format(seeds=seeds, lr=lr, steps=steps))
    return path


def test_a_study_file_expands_to_its_grid(tmp_path):
    study = landscape.load_study(wells(tmp_path, seeds=4))
    tasks = study.tasks()
    assert study.axes == ["problem.tilt", "seed"] and len(tasks) == 8
    first = tasks[0].params
    assert first == {"optimizer": "gd", "lr": 0.1, "steps": 300, "float64": True, "seed": 0,
                     "problem": {"name": "double_well", "params": {"tilt": 0.0}}}
    assert [t.point for t in tasks[:2]] == [{"problem.tilt": 0.0, "seed": 0}, {"problem.tilt": 0.0, "seed": 1}]
    assert len({t.id for t in tasks}) == 8 and tasks[0].id == task_id("train_minima", first)


def test_task_ids_are_stable_when_a_study_grows_or_is_reordered(tmp_path):
    small = {t.id for t in landscape.load_study(wells(tmp_path, seeds=2)).tasks()}
    grown = {t.id for t in landscape.load_study(wells(tmp_path, seeds=5, name="b.toml")).tasks()}
    assert small < grown and len(grown) == 10
    text = wells(tmp_path, seeds=2).read_text()
    reordered = text.replace('optimizer = "gd"\nlr = 0.1', 'lr = 0.1\noptimizer = "gd"')
    assert reordered != text
    (tmp_path / "c.toml").write_text(reordered)
    assert {t.id for t in landscape.load_study(tmp_path / "c.toml").tasks()} == small


def test_grid_union_and_duplicates():
    study = landscape.load_study({
        "study": {"name": "u", "task": "implicit_bias"}, "problem": {"name": "exp_linear", "dim": 5},
        "grid": [{"dynamics": ["gd", "normalized_gd"], "lr": [1.0]}, {"dynamics": ["weight_norm"], "lr": [0.1, 0.2]},
                 {"dynamics": ["gd"], "lr": [1.0]}]})
    assert [(t.params["dynamics"], t.params["lr"]) for t in study.tasks()] == [
        ("gd", 1.0), ("normalized_gd", 1.0), ("weight_norm", 0.1), ("weight_norm", 0.2)]


@pytest.mark.parametrize("text, message", [
    ("[study]\nname = 'x'\ntask = 'nope'\n", "unknown task 'nope'"),
    ("[study]\nname = 'x'\ntask = 'train_minima'\n[problem]\nname = 'ring'\n[task]\nstpes = 3\n",
     "has no parameter(s) ['stpes']"),
    ("[study]\nname = 'x'\ntask = 'train_minima'\n", "needs parameter(s) ['problem']"),
    ("[study]\nname = 'x'\ntask = 'train_minima'\n[problem]\nname = 'nope'\n", "unknown problem 'nope'"),
    ("[study]\nname = 'x'\ntask = 'train_minima'\n[problem]\nname = 'ring'\n[grid]\nproblem.colour = [1]\n",
     "has no parameter(s) ['colour']"),
    ("[study]\nname = 'x'\ntask = 'train_minima'\n[problem]\nname = 'ring'\n[grid]\nseed = 3\n",
     "must be a non-empty list"),
    ("[study]\nname = 'x'\ntask = 'train_minima'\n[problem]\nname = 'ring'\n[grid]\nseed = []\n",
     "must be a non-empty list"),
    ("[study]\nname = 'x'\ntask = 'train_minima'\n[problme]\nname = 'ring'\n", "unknown section(s) ['problme']"),
    ("[study]\nname = 'x'\n", "needs a [study] table"),
    ("[study\nname = 'x'\n", "not valid TOML"),
])
def test_bad_study_files_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(landscape.LandscapeError) as err:
        landscape.load_study(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_study_names_the_built_in_ones():
    with pytest.raises(landscape.LandscapeError, match="implicit_regularization"):
        landscape.load_study("no_such_study")


def test_built_in_studies_parse():
    studies = landscape.builtin_studies()
    assert "implicit_regularization" in studies
    for path in studies.values():
        study = landscape.load_study(path)
        assert study.tasks() and study.task in landscape.TASKS


def test_built_in_studies_ship_in_the_wheel(tmp_path):
    # an installed (non-editable) package has no source tree: the TOML files are package data
    root = Path(landscape.__file__).resolve().parents[1]
    source = tmp_path / "source"  # setuptools builds in its source folder: a copy keeps the checkout clean
    for name in ("landscape", "apps", "data/studies"):
        shutil.copytree(root / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(source)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("landscape-*.whl")
    names = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("landscape_studies/")}
    assert names == {f"landscape_studies/{name}.toml" for name in landscape.builtin_studies()}
    assert {"geodesic_length", "spurious_valleys", "deep_linear_valleys", "implicit_regularization"} <= {
        Path(n).stem for n in names}


def test_run_in_process_matches_the_closed_form_minima(tmp_path):
    study = landscape.load_study(wells(tmp_path))
    store = tmp_path / "w.sqlite"
    summary = landscape.run_study(study, store=store, workers=0, progress=False)
    assert (summary["tasks"], summary["ran"], summary["done"], summary["failed"]) == (6, 6, 6, 0)
    rows = landscape.study_results(study, store=store)
    assert len(rows) == 6
    for row in rows:
        problem = landscape.make_problem("double_well", **row["params"]["problem"]["params"])
        fig = row["figures"]
        minimum = problem.minima[fig["minimum"]]
        assert fig["minimum_distance"] < 1e-9
        assert fig["loss"] == pytest.approx(float(problem.loss(minimum)), abs=1e-12)
        assert row["status"] == "done" and row["attempts"] == 1 and row["seconds"] > 0
        assert row["versions"]["torch"] == torch.__version__ and row["device"] == "cpu"
    # the tilted well: gradient descent ends in the global minimum (index 0) or the spurious one (1)
    tilted = [r["figures"] for r in rows if r["point"]["problem.tilt"] == 0.3]
    assert {f["minimum"] for f in tilted} <= {0, 1}


def test_rerun_runs_nothing_and_keeps_results(tmp_path):
    study = landscape.load_study(wells(tmp_path, seeds=2))
    store = tmp_path / "w.sqlite"
    landscape.run_study(study, store=store, workers=0, progress=False)
    before = landscape.study_results(study, store=store)
    again = landscape.run_study(study, store=store, workers=0, progress=False)
    assert again["ran"] == 0 and again["done"] == 4
    assert landscape.study_results(study, store=store) == before
    grown = landscape.load_study(wells(tmp_path, seeds=3))  # one more seed per tilt
    summary = landscape.run_study(grown, store=store, workers=0, progress=False)
    assert summary["ran"] == 2 and summary["done"] == 6
    after = {r["id"]: r for r in landscape.study_results(grown, store=store)}
    for row in before:  # same figures, same timestamps: not recomputed (only the grid position moved)
        assert {**after[row["id"]], "idx": None} == {**row, "idx": None}


def test_a_failing_task_is_recorded_and_retried(tmp_path):
    path = tmp_path / "mixed.toml"
    path.write_text(WELLS.format(seeds=1, lr=0.1, steps=50).replace("lr = 0.1", "").replace(
        "[grid]", "[grid]\nlr = [0.1, 1e300]"))  # a valid rate on which training diverges: the task fails as it runs
    study = landscape.load_study(path)
    store = tmp_path / "m.sqlite"
    summary = landscape.run_study(study, store=store, workers=0, progress=False)
    assert (summary["done"], summary["failed"]) == (2, 2)
    assert all("diverged" in e["error"] for e in summary["errors"])
    failed = [r for r in landscape.study_results(study, store=store) if r["status"] == "failed"]
    assert {r["point"]["lr"] for r in failed} == {1e300} and all(r["figures"] is None for r in failed)
    assert landscape.run_study(study, store=store, workers=0, progress=False, retry_failed=False)["ran"] == 0
    again = landscape.run_study(study, store=store, workers=0, progress=False)
    assert again["ran"] == 2 and again["failed"] == 2
    assert {r["attempts"] for r in landscape.study_results(study, store=store) if r["status"] == "failed"} == {2}
    status = landscape.study_status(store=store)
    assert (status["done"], status["failed"], status["pending"], status["running"]) == (2, 2, 0, None)


def test_status_of_a_study_never_run_and_of_a_grown_one(tmp_path):
    study = landscape.load_study(wells(tmp_path, seeds=1))
    store = tmp_path / "w.sqlite"
    with pytest.raises(landscape.LandscapeError, match="no such study store"):
        landscape.study_status(study, store=store)
    landscape.run_study(study, store=store, workers=0, progress=False)
    grown = landscape.load_study(wells(tmp_path, seeds=2))
    status = landscape.study_status(grown, store=store)
    assert (status["tasks"], status["done"], status["pending"], status["other"]) == (4, 2, 2, 0)
    shrunk = landscape.load_study(wells(tmp_path, seeds=1).parent / "wells.toml")
    shrunk.grids = [{"problem.tilt": [0.0], "seed": [0]}]
    assert landscape.study_status(shrunk, store=store)["other"] == 1


# ---------------------------------------------------------------- the store
def test_corrupt_foreign_and_other_study_stores_are_clear_errors(tmp_path):
    study = landscape.load_study(wells(tmp_path, seeds=1))
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(landscape.LandscapeError, match="not a study store"):
        landscape.run_study(study, store=garbage, workers=0, progress=False)
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(landscape.LandscapeError, match="another program"):
        landscape.run_study(study, store=foreign, workers=0, progress=False)
    good = tmp_path / "good.sqlite"
    landscape.run_study(study, store=good, workers=0, progress=False)
    other = landscape.load_study(wells(tmp_path, seeds=1, name="other.toml"))
    other.name = "not_wells"
    with pytest.raises(landscape.LandscapeError, match="holds study 'wells'"):
        landscape.run_study(other, store=good, workers=0, progress=False)
    truncated = tmp_path / "truncated.sqlite"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2] + b"\x00" * 100)
    with pytest.raises(landscape.LandscapeError) as err:
        landscape.run_study(study, store=truncated, workers=0, progress=False)
    assert "truncated.sqlite" in str(err.value) and "\n" not in str(err.value)
    for read in (landscape.study_status, landscape.study_results, landscape.write_report):
        with pytest.raises(landscape.LandscapeError, match="truncated.sqlite"):
            read(store=truncated)
    with sqlite3.connect(good) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(landscape.LandscapeError, match="upgrade landscape"):
        landscape.study_status(store=good)


def test_a_second_driver_on_the_same_store_is_refused(tmp_path):
    study = landscape.load_study(wells(tmp_path, seeds=1))
    store = tmp_path / "w.sqlite"
    with Store(store, study=study, lock=True):
        with pytest.raises(landscape.LandscapeError, match="being written by a running study"):
            landscape.run_study(study, store=store, workers=0, progress=False)
        assert landscape.study_status(study, store=store)["running"].startswith("pid ")
    assert landscape.study_status(study, store=store)["running"] is None


# ---------------------------------------------------------------- reports
def test_report_tables_and_plots(tmp_path):
    study = landscape.load_study(wells(tmp_path))
    store = tmp_path / "w.sqlite"
    landscape.run_study(study, store=store, workers=0, progress=False)
    rep = landscape.write_report(study, store=store, out=tmp_path / "rep")
    names = sorted(p.split("/")[-1] for p in rep["files"])
    assert names == ["plot_0.png", "results.csv", "results.md", "summary.csv", "summary.md"]
    rows = list(csv.DictReader((tmp_path / "rep" / "results.csv").read_text().splitlines()))
    stored = landscape.study_results(study, store=store)
    assert len(rows) == 6
    for row, s in zip(rows, stored):
        assert float(row["loss"]) == s["figures"]["loss"] and int(row["seed"]) == s["point"]["seed"]
    summary = rep["tables"]["summary"].as_dicts()
    assert [r["problem.tilt"] for r in summary] == [0.0, 0.3] and all(r["n"] == 3 for r in summary)
    flat = [s["figures"]["loss"] for s in stored if s["point"]["problem.tilt"] == 0.0]
    assert summary[0]["loss"] == pytest.approx(sum(flat) / 3)
    md = (tmp_path / "rep" / "summary.md").read_text()
    assert "| problem.tilt | n | loss |" in md
    import matplotlib.image

    img = matplotlib.image.imread(tmp_path / "rep" / "plot_0.png")
    assert img.shape[0] > 200 and img.shape[1] > 300 and img[..., :3].std() > 0.01  # drawn, not blank


def test_series_report_of_study_4(tmp_path):
    study = landscape.load_study("implicit_regularization")
    study.fixed = {**study.fixed, "steps": 200, "seeds": [0], "records": 10}
    study.grids = [{"dynamics": ["gd", "normalized_gd"], "lr": [1.0], "problem.data_seed": [0, 1]}]
    store = tmp_path / "s4.sqlite"
    landscape.run_study(study, store=store, workers=0, progress=False)
    rep = landscape.write_report(study, store=store, out=tmp_path / "rep")
    series = rep["tables"]["series_0"]
    assert series.header[:3] == ["step", "cosine (gd)", "cosine (normalized_gd)"]
    assert [r[0] for r in series.rows] == [1, 10, 100, 200]  # nearest recorded steps to `at`
    stored = [r for r in landscape.study_results(study, store=store) if r["point"]["dynamics"] == "gd"]
    mean_final = sum(r["figures"]["series"]["cosine"][-1] for r in stored) / 2
    assert series.rows[-1][1] == pytest.approx(mean_final)
    assert (tmp_path / "rep" / "series_0.png").stat().st_size > 10_000


def test_stored_parameters_are_canonical_json(tmp_path):
    study = landscape.load_study(wells(tmp_path, seeds=1))
    store = tmp_path / "w.sqlite"
    landscape.run_study(study, store=store, workers=0, progress=False)
    with sqlite3.connect(store) as db:
        raw = dict(db.execute("SELECT id, params FROM tasks"))
    for t in study.tasks():
        assert json.loads(raw[t.id]) == t.params
        assert raw[t.id] == json.dumps(t.params, sort_keys=True, separators=(",", ":"))


def test_a_study_changed_in_python_is_kept_in_its_store(tmp_path):
    study = landscape.load_study(wells(tmp_path, seeds=1))
    study.fixed["steps"] = 20
    study.name = "wells_short"
    store = tmp_path / "short.sqlite"
    landscape.run_study(study, store=store, workers=0, progress=False)
    status = landscape.study_status(store=store)  # the study comes from the store alone
    assert (status["study"], status["tasks"], status["done"], status["pending"]) == ("wells_short", 2, 2, 0)
    rows = landscape.study_results(store=store)
    assert [r["params"]["steps"] for r in rows] == [20, 20]


@pytest.mark.parametrize("report, message", [
    ({"group": ["width"]}, "report.group names ['width']"),
    ({"plot": [{"x": "seed"}]}, "needs y"),
    ({"series": [{"y": "cosine", "by": "nope"}]}, "report.series names ['nope']"),
    ({"colour": 1}, "unknown key(s) ['colour']"),
])
def test_bad_report_tables_are_refused_before_running(report, message):
    with pytest.raises(landscape.LandscapeError, match=re.escape(message)):
        landscape.load_study({"study": {"name": "r", "task": "train_minima"}, "problem": {"name": "ring"},
                              "grid": {"seed": [0, 1]}, "report": report})


def test_empty_or_half_created_stores_are_recognised_as_new(tmp_path):
    """A 0-byte store (touched, or cut by a full disk) and an SQLite file without tables (killed before its first
    commit) are refused by status in one line without being written, and taken as new by a run."""
    import sqlite3

    study = landscape.load_study(wells(tmp_path))
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    with pytest.raises(landscape.LandscapeError, match="an empty study store"):
        landscape.study_status(study, store=empty)
    assert empty.stat().st_size == 0
    half = tmp_path / "half.sqlite"
    sqlite3.connect(half).execute("PRAGMA user_version = 1").connection.close()
    size = half.stat().st_size
    with pytest.raises(landscape.LandscapeError, match="an empty study store"):
        landscape.study_status(study, store=half)
    assert half.stat().st_size == size
    for store in (empty, half):
        summary = landscape.run_study(study, store=store, workers=0, progress=False)
        assert summary["done"] == summary["tasks"] == 6


def test_fractions_get_wilson_intervals_inside_zero_one():
    from landscape.studies.report import _wilson

    assert _wilson(0.0, 8) == pytest.approx((0.0, 0.32440), abs=1e-5)  # the closed form at p = 0: z²/(n + z²)
    assert _wilson(1.0, 8) == pytest.approx((0.67560, 1.0), abs=1e-5)
    for p in (0.0, 0.1, 0.5, 0.9, 1.0):
        for n in (1, 3, 8, 100):
            lo, hi = _wilson(p, n)
            assert 0.0 <= lo <= p <= hi <= 1.0


@pytest.mark.parametrize("value, says", [(1e30, "must lie in [0, 256]"), (2.5, "must be a whole number")])
def test_a_grid_value_a_problem_refuses_is_caught_before_any_task_runs(value, says):
    with pytest.raises(landscape.LandscapeError) as err:
        landscape.load_study({"study": {"name": "deep", "task": "train_minima"},
                              "problem": {"name": "digits_mlp", "width": 4},
                              "grid": {"problem.depth": [1, value]}})
    assert says in str(err.value) and str(err.value).startswith("<dict>: problem 'digits_mlp' parameter depth=")
