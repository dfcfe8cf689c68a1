"""What a valley count is backed by: certified joins (proven by a bound, or checked on a grid of known spacing),
pairs no path joined (the count is then an upper bound), and separations the problem proves (an exact count).
Closed-form landscapes first, then the theorems: deep linear networks (one valley) and Venturi et al.'s
construction (a spurious valley, proven apart below the derived level)."""

import json

import pytest
import torch
from click.testing import CliRunner

import landscape
from landscape import ValleyGraph, find_valleys, grid_valleys
from landscape.valleys import proven_separations, read_graph, write_graph
from landscape_cli.cli import main

ALPHA, BETA = 2.0, 3.0  # venturi_relu's defaults
U_STAR = BETA**2 / 4 + 0.3073354  # its derived merge level (tests/test_venturi.py checks the derivation)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def double_well():
    problem = landscape.make_problem("double_well", tilt=0.3)
    shallow = problem.loss(problem.minima)[1].item()
    saddle = problem.loss(problem.saddles).item()
    return problem, 0.5 * (shallow + saddle), 1.05 * saddle


def test_double_well_below_its_saddle_the_count_is_an_upper_bound_above_it_exact(double_well):
    problem, between, above = double_well
    assert [grid_valleys(problem, u).n_valleys for u in (between, above)] == [2, 1]  # the truth
    graph, report = find_valleys(problem, problem.minima, names=["deep", "shallow"], levels=[between, above],
                                 attempts=1, generator=gen())
    low, high = report["levels"]
    # below the saddle: two components, not joined, and nothing proves them apart: at most 2, at least 1
    assert (low["n_valleys"], low["count_is_upper_bound"], low["separation_proven"]) == (2, True, False)
    assert (low["n_valleys_at_least"], low["pairs_not_joined"], low["pairs_separated"]) == (1, 1, 0)
    assert low["not_found"] == report["failed"] == 1  # the one refinement tried at that level found no path
    assert low["joins"] == {"bound": 0, "grid": 0, "grid_spacing": None}
    # above it: one valley, joined by one path checked on a grid (the closed form has no bound)
    assert (high["n_valleys"], high["count_is_upper_bound"], high["separation_proven"]) == (1, False, True)
    assert high["n_valleys_at_least"] == 1 and high["pairs_not_joined"] == 0
    (merge,) = report["merges"]
    assert merge["certificate"] == "grid" and merge["spacing"] > 0
    assert high["joins"] == {"bound": 0, "grid": 1, "grid_spacing": merge["spacing"]}
    assert report["separations"] == []


def test_himmelblau_merge_tree_counts_are_upper_bounds_until_one_valley_is_left():
    problem = landscape.make_problem("himmelblau")
    _, report = find_valleys(problem, problem.minima, levels="auto", bisect=0, generator=gen())
    rows = report["levels"]
    assert [r["n_valleys"] for r in rows] == [4, 3, 2, 1]  # three saddles between four minima
    assert [r["count_is_upper_bound"] for r in rows] == [True, True, True, False]
    assert [r["pairs_not_joined"] for r in rows] == [6, 3, 1, 0]
    assert [r["joins"]["grid"] for r in rows] == [0, 1, 2, 3] and all(r["joins"]["bound"] == 0 for r in rows)
    assert all(r["not_found"] == 0 for r in rows)  # the merge tree tries no pair at these levels


def test_the_command_says_at_most_where_no_path_joined_and_not_where_all_are_certified(double_well, tmp_path):
    problem, between, above = double_well
    files = [str(landscape.save_checkpoint(tmp_path / f"{n}.pt", problem, m.float(), seed=i))
             for i, (n, m) in enumerate(zip(["deep", "shallow"], problem.minima))]
    levels = ["--level", str(between), "--level", str(above), "--attempts", "1"]
    text = CliRunner().invoke(main, ["valleys", *files, *levels, "-q"])
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    rows = {line.split()[0]: line.split()[1:4] for line in lines if line[:1].isdigit()}
    assert rows[f"{between:.6g}"][:2] == ["2", "at"] and rows[f"{between:.6g}"][2] == "most"
    assert rows[f"{above:.6g}"][:2] == ["1", "0"]  # one valley, no spurious one: no "at most"
    assert (f"at {between:.6g}: 2 valleys at most, at least 1 (1 pair not joined: no path found by 1 refinement, "
            "separation not proven)") in lines
    assert any(line.startswith(f"at {above:.6g}: 1 valley; joined by 1 certified path (1 checked on a grid, spacing <= ")
               for line in lines)
    assert "a count 'at most' is an upper bound" in text.stdout
    # the shallow minimum's valley: spurious only if apart from the deep one, which nothing proves
    assert [line.split()[4:7] for line in lines if line.startswith(f"{between:.6g} ")] == [["1", "at", "most"]]
    assert ("  spurious: 1 at most, at least 0 (1 valley not joined to a global minimum: no path found, 0 proven "
            "apart)") in lines
    alone = CliRunner().invoke(main, ["valleys", *files, "--level", str(above), "-q"])
    assert alone.exit_code == 0 and "at most" not in alone.stdout and "upper bound" not in alone.stdout
    as_json = CliRunner().invoke(main, ["valleys", *files, *levels, "--json", "-q"])
    low, high = json.loads(as_json.stdout)["levels"]
    assert (low["n_valleys"], low["count_is_upper_bound"], high["count_is_upper_bound"]) == (2, True, False)


def test_trained_deep_linear_minima_are_one_valley_at_the_default_level(tmp_path):
    """Venturi, Bandeira & Bruna (JMLR 2019): with weight decay and hidden width n1 > min(n, m) (here 4 > 2) a deep
    linear network has one valley at every level. ``landscape valleys`` used to report the minima where they appear,
    at the largest of their losses, where no path can join them yet (every path it found tops out a little above):
    N "valleys" of copies of one minimum; it now reports them where those copies have merged."""
    params = ["-w", "4", "-p", "input_dim=3", "-p", "output_dim=2", "-p", "n_train=50"]
    trained = CliRunner().invoke(main, ["train", "deep_linear", *params, "--seeds", "0..3", "-o", str(tmp_path),
                                        "--json", "-q"])
    assert trained.exit_code == 0, trained.output
    rows = json.loads(trained.stdout)
    assert all(r["converged"] for r in rows)
    files = [r["file"] for r in rows]
    run = CliRunner().invoke(main, ["valleys", *files, "--json", "-q", "-o", str(tmp_path / "g.json")])
    assert run.exit_code == 0, run.output
    report = json.loads(run.stdout)
    (row,) = report["levels"]
    assert (row["n_valleys"], len(row["valleys"][0]), row["count_is_upper_bound"]) == (1, 4, False)
    assert row["joins"]["bound"] + row["joins"]["grid"] == 3  # N - 1 certified paths
    highest = max(report["minima"].values())
    assert highest < row["level"] <= highest + report["tolerance"]  # just above L*, where the copies have met
    # the root cause, kept in view: at the largest of the minima's losses no path joins any two of them
    problem = landscape.load_checkpoint(files[0]).problem
    thetas = torch.stack([landscape.load_checkpoint(f).theta for f in files])
    graph = read_graph(tmp_path / "g.json", problem, thetas, files)
    before = graph.known(highest)
    assert len(graph.valleys(highest)) == 4 and before["count_is_upper_bound"] and before["pairs_not_joined"] == 6


@pytest.fixture(scope="module")
def venturi():
    problem = landscape.make_problem("venturi_relu", population=True)
    made = problem.constructions()
    # every output weight > 0 (the spurious minimum, loss β²/4) and one output weight -β (loss α²/4, lower)
    return problem, torch.stack([made["drop_alpha"], made["spurious"]]).double()


def test_venturi_valleys_are_proven_apart_below_the_derived_level(venturi):
    problem, thetas = venturi
    (sep,) = proven_separations(problem, thetas)
    assert (sep.i, sep.j) == (0, 1) and sep.below == pytest.approx(U_STAR, abs=1e-5) and "derived" in sep.how
    graph = ValleyGraph.of(problem, thetas, ["lower", "spurious"])
    graph.separations = [sep]
    below, above = 2.4, U_STAR + 0.01  # both minima are in Ω_u at both levels; no path was searched
    low, high = graph.report([below, above])["levels"]
    assert (low["n_valleys"], low["count_is_upper_bound"], low["separation_proven"]) == (2, False, True)
    assert (low["n_valleys_at_least"], low["pairs_separated"], low["pairs_not_joined"]) == (2, 1, 0)
    # above u* the argument says nothing: the same two components are only "not joined"
    assert (high["n_valleys"], high["count_is_upper_bound"], high["n_valleys_at_least"]) == (2, True, 1)
    from landscape_cli.valleys import _known

    assert _known(low) == "2 valleys, separation proven"
    assert _known(high).startswith("2 valleys at most, at least 1 (1 pair not joined")


def test_no_separation_without_the_argument(venturi):
    problem, thetas = venturi
    sampled = landscape.make_problem("venturi_relu", n_train=40, n_test=10)  # a sample mean: not the derivation's loss
    assert proven_separations(sampled, thetas) == []
    both_inside = torch.stack([thetas[1], thetas[1] * torch.where(torch.arange(thetas.shape[1]) < 12, 1.0, 2.0)])
    assert proven_separations(problem, both_inside) == []  # every output weight > 0 in both: nothing to prove
    assert proven_separations(landscape.make_problem("double_well"), torch.zeros(2, 2)) == []


def test_separations_and_certificates_survive_the_graph_file(venturi, double_well, tmp_path):
    problem, thetas = venturi
    graph = ValleyGraph.of(problem, thetas, ["lower", "spurious"])
    graph.separations = proven_separations(problem, thetas)
    write_graph(graph, tmp_path / "v.json", tmp_path / "v.graphml")
    back = read_graph(tmp_path / "v.json", problem, thetas.flip(0), ["spurious", "lower"])  # another order
    (sep,) = back.separations
    assert (sep.i, sep.j, sep.below) == (0, 1, graph.separations[0].below)
    assert back.known(2.4)["separation_proven"]
    dw, between, above = double_well
    g, _ = find_valleys(dw, dw.minima, names=["deep", "shallow"], levels=[above], generator=gen())
    write_graph(g, tmp_path / "d.json")
    again = read_graph(tmp_path / "d.json", dw, dw.minima, ["deep", "shallow"])
    assert again.known(above) == g.known(above) and again.separations == []
    assert json.loads((tmp_path / "d.json").read_text())["edges"][0]["certificate"] == "grid"


def test_the_explorer_and_the_merge_tree_say_at_most(venturi, double_well):
    viz = pytest.importorskip("landscape.viz")
    from landscape.views import Levels

    problem, between, above = double_well
    graph, report = find_valleys(problem, problem.minima, names=["deep", "shallow"], levels=[between, above],
                                 attempts=1, generator=gen())
    levels = Levels.of(graph)
    # the shallow valley was not joined to the deep one, nor proven apart: spurious "at most", none proven
    assert levels.at(between).text() == (f"valleys: 2, spurious: 1 at most at u = {between:.6g} (2 at most: 1 pair "
                                         "not joined, no path found, separation not proven)")
    row = report["levels"][0]
    assert (row["n_spurious"], row["n_spurious_at_least"], row["spurious_is_upper_bound"]) == (1, 0, True)
    assert row["spurious"] == [["shallow"]] and row["spurious_proven"] == []
    assert levels.at(above).text() == f"valleys: 1, spurious: 0 at u = {above:.6g}"
    fig = viz.plot_disconnectivity(report["minima"], report["merges"], level=between)
    assert "2 valleys at most at u = " in fig.axes[0].get_title()
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "merge: path checked on a dense grid" in legend and any(t.startswith("below a merge: no path") for t in legend)
    bars = [ln for ln in fig.axes[0].lines if len(ln.get_xdata()) == 2 and ln.get_ydata()[0] == ln.get_ydata()[1]]
    assert bars and all(ln.get_linestyle() == "--" for ln in bars if ln.get_color() == "black")  # grid: dashed
    # the Venturi pair: proven apart at 2.4, so the tree's count there is exact
    vp, thetas = venturi
    vgraph = ValleyGraph.of(vp, thetas, ["lower", "spurious"])
    vgraph.separations = proven_separations(vp, thetas)
    vreport = vgraph.report([2.4])
    exact = viz.plot_disconnectivity(vreport["minima"], [], level=2.4, separations=vreport["separations"])
    assert exact.axes[0].get_title().endswith("2 valleys at u = 2.4, 1 spurious")  # proven: no "at most"
    vrow = vreport["levels"][0]
    assert (vrow["n_spurious"], vrow["n_spurious_at_least"], vrow["spurious_is_upper_bound"]) == (1, 1, False)
    assert vrow["spurious_proven"] == [["spurious"]]
    assert Levels.of(vgraph).at(2.4).text() == "valleys: 2, spurious: 1 at u = 2.4"
    unproven = viz.plot_disconnectivity(vreport["minima"], [], level=2.4)
    assert "2 valleys at most at u = 2.4" in unproven.axes[0].get_title()
    tree = viz.merge_tree(vreport["minima"], [])
    assert tree.pairs_not_joined(2.4, vreport["separations"]) == 0 and tree.pairs_not_joined(2.4) == 1
