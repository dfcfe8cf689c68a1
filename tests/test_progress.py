"""Long work says what it is doing: the valley search's stages with their counts, what the alignment did, and
the row ``bench`` measures — on stderr, with stdout (``--json``) unchanged and ``--quiet`` silent."""

import json

import pytest
import torch
from click.testing import CliRunner

import landscape
from landscape.bench import BenchRows
from landscape_cli.cli import main


@pytest.fixture(scope="module")
def permuted_minima(tmp_path_factory):
    """A trained minimum of a tiny teacher-student network and three permuted copies: four files, one function."""
    problem = landscape.make_problem("teacher_student", width=5, n_train=200, n_test=50)
    theta = landscape.train(problem, seeds=[0], steps=300, lr=0.02).thetas[0]
    sym = landscape.symmetry(problem)
    out = tmp_path_factory.mktemp("permuted")
    files = [out / "m0.pt"]
    landscape.save_checkpoint(files[0], problem, theta, seed=0)
    for s in (1, 2, 3):
        perms, _ = sym.random(generator=torch.Generator().manual_seed(s))
        files.append(out / f"m{s}.pt")
        landscape.save_checkpoint(files[-1], problem, sym.transform(theta, perms, {}), seed=s)
    return files


def test_valleys_with_alignment_shows_each_stage_and_says_what_it_aligned(permuted_minima):
    files = [str(f) for f in permuted_minima]
    args = ["valleys", *files, "--align", "weight", "--merge-method", "linear", "--polish"]  # copies: no probes
    loud = CliRunner().invoke(main, args)
    assert loud.exit_code == 0, loud.output
    err = loud.stderr
    for stage in ("valleys of 4 minima: aligning (weight) onto", "aligning (weight) onto m", " 3/3",
                  "straight segments 0/", "merge tree (linear): 0/3 merged"):
        assert stage in err, (stage, err)
    assert "loss evaluations" in err
    line = next(x for x in loud.stdout.splitlines() if x.startswith("aligned by weight onto"))
    assert "3 of 3 moved" in line and "(the lowest)" in line
    as_json = CliRunner().invoke(main, [*args, "--json", "-q"])
    assert as_json.exit_code == 0 and as_json.stderr == ""
    report = json.loads(as_json.stdout)  # stdout holds the JSON alone
    a = report["alignment"]
    assert a["method"] == "weight" and a["aligned"] == 3 and len(a["moved"]) == 3
    ref = a["reference_index"]
    assert a["distance_before"][ref] == 0.0
    # permuted copies of one network come back onto it: every distance shrinks to (nearly) nothing
    assert a["mean_distance_before"] > 1.0 and a["mean_distance_after"] < 1e-3 * a["mean_distance_before"]
    assert report["levels"][-1]["n_valleys"] == 1


def test_valleys_at_a_level_counts_the_pairs_it_connects(tmp_path):
    """Himmelblau's four minima at a level below their saddles: the straight segments and each refinement are
    counted on the line ("connecting pair k/n at most"), and the JSON on stdout is unchanged by the line."""
    problem = landscape.make_problem("himmelblau")
    files = []
    for i in range(4):
        files.append(str(tmp_path / f"h{i}.pt"))
        landscape.save_checkpoint(files[-1], problem, problem.minima[i], seed=i)
    args = ["valleys", *files, "--level", "50", "--attempts", "1", "--json", "--memory", "1GiB"]
    loud, quiet = CliRunner().invoke(main, args), CliRunner().invoke(main, [*args, "-q"])
    assert loud.exit_code == 0 and quiet.exit_code == 0, loud.output
    assert "valleys of 4 minima: level 50" in loud.stderr and "straight segments 0/6" in loud.stderr
    assert "level 50: proving straight segment" in loud.stderr  # one segment lies below 50: it joins two minima
    assert "connecting pair 1/3 at most (3 valleys left)" in loud.stderr and "connecting pair 3/3" in loud.stderr
    assert quiet.stderr == ""
    drop = ("seconds", "memory")
    same = [{k: v for k, v in json.loads(r.stdout).items() if k not in drop} for r in (loud, quiet)]
    assert same[0] == same[1] and same[0]["alignment"] is None
    tree = CliRunner().invoke(main, ["valleys", *files, "--merge-method", "linear", "--bisect", "1", "--json"])
    assert tree.exit_code == 0 and "proving merge levels (string) 0/3" in tree.stderr
    assert "merge tree (linear): 2/3 merged" in tree.stderr and json.loads(tree.stdout)["merges"]


def test_bench_rows_name_the_row_and_count(capsys):
    with BenchRows(True, 2) as shown:
        shown("digits_mlp K=64 batched loss+grad")
        shown("digits_mlp 51x51 plane")
    err = capsys.readouterr().err
    assert "bench: digits_mlp K=64 batched loss+grad (row 1/2)" in err
    assert "bench: digits_mlp 51x51 plane (row 2/2)" in err and "loss evaluations" not in err
    with BenchRows(False, 1) as shown:
        shown("silent")
    assert capsys.readouterr().err == ""


def test_bench_shows_each_row_on_stderr_and_quiet_silences_it():
    args = ["bench", "-k", "2", "--seconds", "0.001", "--beads", "2", "--bead-steps", "1", "--json"]
    loud = CliRunner().invoke(main, args)
    assert loud.exit_code == 0, loud.output
    assert "(row 1/10)" in loud.stderr and "(row 10/10)" in loud.stderr and "batched loss+grad" in loud.stderr
    assert set(json.loads(loud.stdout)) >= {"evaluator", "path_refinement", "planes"}
    quiet = CliRunner().invoke(main, [*args, "-q"])
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_training_shows_the_polish_as_it_goes(capsys):
    """The polish after the optimiser's steps says how far it is, how many seeds still move and how far the worst
    is from the criterion; quiet training prints nothing."""
    problem = landscape.make_problem("himmelblau")
    result = landscape.train(problem, range(8), steps=50, progress=True)
    err = capsys.readouterr().err
    assert int(result.polish_steps.max()) > 0 and result.converged.all()
    assert "train himmelblau: polish, 8 of 8 moving, worst |grad L|" in err and "x its tolerance, 0/2000" in err
    landscape.train(problem, range(8), steps=50)
    assert capsys.readouterr().err == ""


def test_into_a_pipe_a_stage_that_counts_on_is_a_line_or_two_not_one_a_step(capsys):
    """Into a file or a pipe every redraw is a line of the log: a stage is shown as it starts and as it ended (its
    last count), and in between at most every PIPE_INTERVAL seconds — 500 steps of a polish are not 500 lines."""
    import re

    from landscape._progress import Progress

    shown = Progress(True, "work")
    for i in range(500):
        shown.stage("polish, worst |grad L| 1.5x its tolerance", i, 500)
        shown.count(1)
    shown.stage("merge tree", 0, 3)
    shown.stage("merge tree", 3, 3)
    shown.close()
    err = capsys.readouterr().err
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip()]
    assert len(lines) <= 8, lines
    assert "polish, worst |grad L| 1.5x its tolerance 0/500" in err  # as it started
    assert "polish, worst |grad L| 1.5x its tolerance 499/500" in err  # as it ended
    assert "merge tree 0/3" in err and "merge tree 3/3" in err
