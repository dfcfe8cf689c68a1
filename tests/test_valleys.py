"""Valley counts, spurious valleys and merge trees against closed forms and theorems."""

import json

import networkx as nx
import pytest
import torch

import landscape
from landscape import ValleyGraph, find_valleys, grid_valleys


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_himmelblau_merge_levels_are_the_saddles():
    problem = landscape.make_problem("himmelblau")
    graph, report = find_valleys(problem, problem.minima, levels="auto", bisect=0, generator=gen())
    # mountain passes between the four minima: the three lowest of the four saddles
    # (13.3119, 67.7192, 104.0152; the fourth, 178.34, is not needed: see tests/test_problems.py)
    saddles = sorted(problem.loss(problem.saddles).tolist())[:3]
    merges = sorted(m["level"] for m in report["merges"])
    assert merges == pytest.approx(saddles, rel=0.01)
    assert all(m >= s * (1 - 1e-3) for m, s in zip(merges, saddles))  # certified levels sit at or above
    counts = {round(r["level"], 3): r["n_valleys"] for r in report["levels"]}
    assert list(counts.values()) == [4, 3, 2, 1]
    assert all(r["n_spurious"] == 0 for r in report["levels"])  # all four minima are global
    # the first merge joins (3, 2) and (3.58, -1.85), across the saddle at (3.39, 0.07)
    first = min(graph.merges(), key=lambda m: m.level)
    assert {first.i, first.j} == {0, 3}
    assert report["refinements"] == 3  # one per merge: nothing else was needed
    # DSS probes below the passes find nothing lower: the merge levels stand
    _, probed = find_valleys(problem, problem.minima, levels="auto", bisect=2, generator=gen())
    assert [m["level"] for m in probed["merges"]] == [m["level"] for m in report["merges"]]
    assert probed["refinements"] == 3 + 3 * 2


@pytest.mark.parametrize("level, count", [(5.0, 4), (40.0, 3), (80.0, 2), (120.0, 1)])
def test_himmelblau_counts_at_a_level_agree_with_the_grid(level, count):
    problem = landscape.make_problem("himmelblau")
    _, report = find_valleys(problem, problem.minima, levels=[level], generator=gen())
    assert report["levels"][0]["n_valleys"] == count == grid_valleys(problem, level).n_valleys
    assert report["refinements"] <= 3 + report["failed"]


def test_double_well_has_one_spurious_valley_below_the_saddle():
    problem = landscape.make_problem("double_well", tilt=0.3)
    global_min, shallow = problem.loss(problem.minima).tolist()
    saddle = problem.loss(problem.saddles).item()
    _, report = find_valleys(problem, problem.minima, names=["deep", "shallow"], levels="auto", generator=gen())
    rows = report["levels"]
    assert [r["level"] for r in rows] == pytest.approx([global_min, shallow, saddle], rel=0.01)
    assert [(r["n_valleys"], r["n_spurious"]) for r in rows] == [(1, 0), (2, 1), (1, 0)]
    assert rows[1]["spurious"] == [["shallow"]]
    between = 0.5 * (shallow + saddle)
    _, at = find_valleys(problem, problem.minima, levels=[between, saddle * 1.05], attempts=1, generator=gen())
    assert [(r["n_valleys"], r["n_spurious"]) for r in at["levels"]] == [(2, 1), (1, 0)]
    assert at["failed"] >= 1 and at["failures"][0]["level"] == pytest.approx(between)


def test_ring_two_valleys_below_the_saddles_one_above():
    problem = landscape.make_problem("ring", bump=0.2)  # saddles at 0.19, hill at 1
    _, report = find_valleys(problem, problem.minima, levels=[0.15, 0.3], attempts=1, generator=gen())
    assert [r["n_valleys"] for r in report["levels"]] == [2, 1]
    assert [grid_valleys(problem, u).n_valleys for u in (0.15, 0.3)] == [2, 1]


def test_venturi_spurious_valley_is_found():
    # Venturi, Bandeira & Bruna (JMLR 2019): with p <= n - 1 ReLU units the minimum that fits every
    # α·relu(x_i) term and misses −β·relu(x_n) lies in a valley without a global minimum
    problem = landscape.make_problem("venturi_relu", width=3, input_dim=4, n_train=2000, n_test=10)
    made = problem.constructions()
    start = torch.stack([made["drop_alpha"], made["spurious"]]).double()
    minima = landscape.train(problem, [0, 1], init=start, lr=1e-3, steps=400, dtype=torch.float64)
    spurious_loss = minima.losses[1].item()
    assert minima.losses[0] < spurious_loss  # the other minimum is lower
    graph, report = find_valleys(problem, minima.thetas, names=["descended", "spurious"],
                                 levels=[spurious_loss + 0.1, spurious_loss + 1.0], attempts=1, generator=gen())
    low, high = report["levels"]
    assert (low["n_valleys"], low["n_spurious"], low["spurious"]) == (2, 1, [["spurious"]])
    assert (high["n_valleys"], high["n_spurious"]) == (1, 0)
    # and a hit-and-run walk inside the spurious valley never finds the lower loss
    walk = landscape.sample_sublevel_set(problem, minima.thetas[1:].repeat(8, 1), spurious_loss + 0.1,
                                        n_samples=30, generator=gen())
    assert walk.losses.min() > minima.losses[0] + 1.0


def test_refinements_grow_like_n_when_all_connect():
    # eight minima on a ring: the circle itself, nearly flat along it (|grad L| <= 2e-6), so that every
    # point is a minimum by the stationarity criterion (points inside the circle, as before, are not)
    problem = landscape.make_problem("ring", bump=1e-6)
    angles = torch.linspace(0, 2 * torch.pi, 9, dtype=torch.float64)[:-1]
    points = torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    graph, report = find_valleys(problem, points, levels=[0.5], generator=gen())
    assert report["levels"][0]["n_valleys"] == 1
    assert report["refinements"] <= len(points) - 1 + report["failed"]
    assert nx.is_connected(graph.to_networkx())


def test_graph_files(tmp_path):
    problem = landscape.make_problem("himmelblau")
    graph, _ = find_valleys(problem, problem.minima, levels=[80.0], generator=gen())
    landscape.valleys.write_graph(graph, tmp_path / "g.json", tmp_path / "g.graphml")
    data = json.loads((tmp_path / "g.json").read_text())
    back = nx.node_link_graph(data, edges="edges")
    assert back.number_of_nodes() == 4 and nx.number_connected_components(back) == 2
    ml = nx.read_graphml(tmp_path / "g.graphml")
    assert ml.number_of_edges() == back.number_of_edges()
    assert sorted(d["max_loss"] for _, _, d in ml.edges(data=True)) == pytest.approx(
        sorted(d["max_loss"] for _, _, d in back.edges(data=True)))


def test_bad_minima_are_clear_errors():
    problem = landscape.make_problem("ring")
    with pytest.raises(landscape.LandscapeError, match="minima must have shape"):
        ValleyGraph.of(problem, torch.zeros(3, 5))
    with pytest.raises(landscape.LandscapeError, match="not finite at minima"):
        ValleyGraph.of(problem, torch.tensor([[0.0, float("nan")]]), names=["broken.pt"])


def test_valleys_command(tmp_path):
    from click.testing import CliRunner

    from landscape_cli.cli import main

    problem = landscape.make_problem("double_well")
    files = [str(landscape.save_checkpoint(tmp_path / f"{n}.pt", problem, m.float(), seed=i))
             for i, (n, m) in enumerate(zip(["deep", "shallow"], problem.minima))]
    saddle = problem.loss(problem.saddles).item()
    run = CliRunner().invoke(main, ["valleys", *files, "--json", "-o", str(tmp_path / "g.json"), "--graphml",
                                    str(tmp_path / "g.graphml"), "--plot", str(tmp_path / "tree.png")],
                             catch_exceptions=False)
    assert run.exit_code == 0, run.output
    report = json.loads(run.stdout)
    assert [(r["n_valleys"], r["n_spurious"]) for r in report["levels"]] == [(1, 0), (2, 1), (1, 0)]
    assert report["levels"][1]["spurious"] == [[files[1]]]
    assert report["merges"][0]["pair"] == files and report["merges"][0]["level"] == pytest.approx(saddle, rel=0.01)
    assert report["refinements"] >= 1 and set(report["minima"]) == set(files)
    assert (tmp_path / "g.json").exists() and (tmp_path / "g.graphml").exists()
    import matplotlib.image

    image = matplotlib.image.imread(tmp_path / "tree.png")
    assert image.shape[1] > 200 and image[..., :3].std() > 0.05  # a drawing, not a blank page
    human = CliRunner().invoke(main, ["valleys", *files, "--level", str(0.9 * saddle)])
    assert human.exit_code == 0 and "found no path below the level" in human.output
    bad = CliRunner().invoke(main, ["valleys", files[0], str(tmp_path / "missing.pt")])
    assert bad.exit_code == 2 and "missing.pt: no such file" in bad.stderr
    other = landscape.save_checkpoint(tmp_path / "ring.pt", landscape.make_problem("ring"), torch.zeros(2))
    mixed = CliRunner().invoke(main, ["valleys", files[0], str(other)])
    assert mixed.exit_code == 2 and "different problems" in mixed.stderr


def test_deep_linear_has_one_valley_at_every_level():
    # Venturi, Bandeira & Bruna (JMLR 2019): deep linear networks with weight decay and hidden width
    # n1 > min(input_dim, output_dim) have N_u = 1 at every level u
    problem = landscape.make_problem("deep_linear", width=8, input_dim=4, output_dim=3, n_train=100)
    minima = landscape.train(problem, range(8), lr=0.01, steps=1500, dtype=torch.float64)
    best, worst = minima.losses.min().item(), minima.losses.max().item()
    assert worst - best < 1e-9  # all eight reached the same global minimum value
    straight = landscape.paths.straight_max_losses(problem, minima.thetas, [(0, i) for i in range(1, 8)])
    assert (straight > 5 * worst).all()  # yet they are far apart: straight segments climb high
    levels = [worst * 1.01, worst * 1.1, worst * 2.0]
    graph, report = find_valleys(problem, minima.thetas, levels=levels, generator=gen())
    assert [r["n_valleys"] for r in report["levels"]] == [1, 1, 1]
    assert report["failed"] == 0 and report["refinements"] == 7  # N - 1 refinements, as union-find promises


def test_valley_extents_grow_with_the_level():
    problem = landscape.make_problem("ring", bump=0.2)
    _, report = find_valleys(problem, problem.minima, levels=[0.05, 0.15, 0.5], attempts=1, extent=40,
                             generator=gen())
    low, mid, high = report["levels"]
    assert [len(r["extent"]) for r in report["levels"]] == [2, 2, 1]
    assert all(e["spread"] > 0 for r in report["levels"] for e in r["extent"])
    # the crescents lengthen as u rises; above the saddles one valley holds the whole annulus
    assert low["extent"][0]["max_distance"] < mid["extent"][0]["max_distance"] < high["extent"][0]["max_distance"]
    assert high["extent"][0]["max_distance"] > 1.5  # reaches across to the other side of the ring


def _himmelblau_saddles():
    """The saddles of Himmelblau's function from scratch: Newton's method on ∇f = 0 from nearby starts."""
    import numpy as np

    def grad(x, y):
        a, b = x * x + y - 11, x + y * y - 7
        return np.array([4 * x * a + 2 * b, 2 * a + 4 * y * b])

    def hess(x, y):
        return np.array([[12 * x * x + 4 * y - 42, 4 * x + 4 * y], [4 * x + 4 * y, 4 * x + 12 * y * y - 26]])

    values = []
    for start in [(0.1, 2.9), (-3.1, -0.1), (3.4, 0.1), (-0.1, -1.9)]:
        p = np.array(start, dtype=float)
        for _ in range(50):
            p = p - np.linalg.solve(hess(*p), grad(*p))
        assert np.abs(grad(*p)).max() < 1e-10 and np.linalg.det(hess(*p)) < 0  # an index-1 saddle
        x, y = p
        values.append((x * x + y - 11) ** 2 + (x + y * y - 7) ** 2)
    return sorted(values)


def test_himmelblau_sixteen_default_seeds_are_its_four_minima_and_merge_at_its_saddles(tmp_path):
    """`landscape train himmelblau --seeds 0..15` then `landscape valleys`: 4 minima, merges at the 3 lowest saddles."""
    from click.testing import CliRunner

    from landscape_cli.cli import main

    trained = CliRunner().invoke(main, ["train", "himmelblau", "--seeds", "0..15", "-o", str(tmp_path), "--json"])
    assert trained.exit_code == 0, trained.output
    rows = json.loads(trained.stdout)
    assert all(r["converged"] and r["grad_norm"] <= 1e-4 and r["loss"] < 1e-8 for r in rows)
    problem = landscape.make_problem("himmelblau")
    points = torch.stack([landscape.load_checkpoint(r["file"]).theta for r in rows]).double()
    dist = torch.cdist(points, problem.minima)
    assert dist.min(1).values.max() < 1e-5 and set(dist.argmin(1).tolist()) == {0, 1, 2, 3}  # exactly the four
    run = CliRunner().invoke(main, ["valleys", *[r["file"] for r in rows], "--json"])
    assert run.exit_code == 0, run.output
    report = json.loads(run.stdout)
    assert report["polished"] == []
    saddles = _himmelblau_saddles()  # 13.3119, 67.7192, 104.0152, 178.3372
    barriers = sorted(m["level"] for m in report["merges"] if m["level"] > 1e-6)  # the rest join copies of a minimum
    assert barriers == pytest.approx(saddles[:3], rel=1e-3)
    assert [(r["n_valleys"], r["n_spurious"]) for r in report["levels"]] == [(4, 0), (3, 0), (2, 0), (1, 0)]
    assert [r["level"] for r in report["levels"]][1:] == pytest.approx(saddles[:3], rel=1e-3)


def test_deep_linear_default_minima_one_valley_just_above_the_minimum():
    # trained with the defaults, the minima agree to ~1e-5 of L* (Adam alone left them 2% apart: two valleys
    # just above L*), so a level 2% above L* holds all eight, in one valley (1.001 L* too: 2 minutes of DSS)
    problem = landscape.make_problem("deep_linear", width=8, input_dim=4, output_dim=3, n_train=100)
    minima = landscape.train(problem, range(8))
    assert minima.converged.all()
    best, worst = minima.losses.min().item(), minima.losses.max().item()
    assert (worst - best) / best < 1e-4
    _, report = find_valleys(problem, minima.thetas, levels=[1.02 * best, 2.0 * best], generator=gen())
    assert [(r["n_valleys"], len(r["valleys"][0])) for r in report["levels"]] == [(1, 8), (1, 8)]


def test_a_point_on_a_slope_is_refused_or_polished_never_counted(tmp_path):
    from click.testing import CliRunner

    from landscape_cli.cli import main

    problem = landscape.make_problem("himmelblau")
    slope = problem.minima[0] + torch.tensor([0.2, -0.1], dtype=torch.float64)  # L ≈ 1.34, |grad L| ≈ 14
    points = torch.cat([problem.minima, slope[None]])
    names = ["a", "b", "c", "d", "slope"]
    with pytest.raises(landscape.LandscapeError, match=r"^slope is not a minimum: .*pass --polish"):
        find_valleys(problem, points, names=names, levels=[5.0])
    _, report = find_valleys(problem, points, names=names, levels=[5.0], polish=True, generator=gen())
    (row,) = report["polished"]
    assert row["name"] == "slope" and row["grad_norm_before"] > 1 and row["grad_norm"] <= 1e-4
    assert row["loss"] < 1e-8 and row["distance"] == pytest.approx(0.2236, abs=1e-4)  # back onto minimum a
    assert report["levels"][0]["n_valleys"] == 4  # the slope joined a's valley, it did not become a fifth
    files = [str(landscape.save_checkpoint(tmp_path / f"{n}.pt", problem, p.float())) for n, p in zip(names, points)]
    refused = CliRunner().invoke(main, ["valleys", *files, "--level", "5"])
    assert refused.exit_code == 2 and "slope.pt is not a minimum" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "--polish" in refused.stderr
    fixed = CliRunner().invoke(main, ["valleys", *files, "--level", "5", "--polish", "--float64"])
    assert fixed.exit_code == 0, fixed.output
    assert "polished slope: loss 1.3357 -> " in fixed.stdout
    assert ["5", "4"] in [line.split()[:2] for line in fixed.stdout.splitlines()]  # level 5: four valleys
