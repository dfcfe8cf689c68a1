"""2-D charts: merge trees against brute force, path profiles, length tables, normalized weights."""

import math

import networkx as nx
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import landscape
import landscape.valleys
from landscape import LandscapeError

viz = pytest.importorskip("landscape.viz")
pytest.importorskip("matplotlib")

MINIMA = {"A": 0.0, "B": 0.1, "C": 0.05, "D": 0.5}
MERGES = [("A", "B", 0.3), {"pair": ["C", "D"], "level": 0.8}, (("A", "C"), 1.0), ("B", "D", 1.2)]


def test_merge_tree_counts_valleys_and_spurious_ones():
    tree = viz.merge_tree(MINIMA, MERGES)
    assert [m[:2] for m in tree.merges] == [("A", "B"), ("C", "D"), ("A", "C")]  # B-D adds nothing
    counts = {u: len(tree.valleys_at(u)) for u in (0.0, 0.05, 0.2, 0.3, 0.6, 0.8, 1.0, 2.0)}
    assert counts == {0.0: 1, 0.05: 2, 0.2: 3, 0.3: 2, 0.6: 3, 0.8: 2, 1.0: 1, 2.0: 1}
    assert tree.spurious_at(0.6, tol=0.01) == [["C"], ["D"]]
    assert tree.spurious_at(0.8, tol=0.01) == [["C", "D"]]
    assert tree.spurious_at(0.6, tol=0.06) == [["D"]]
    assert tree.spurious_at(1.0) == []
    # the root sits at the last merge; every minimum has a leaf at its loss
    assert max(n["level"] for n in tree.nodes) == 1.0
    assert sorted(n["level"] for n in tree.nodes if len(n["members"]) == 1) == sorted(MINIMA.values())


def test_merge_tree_refuses_impossible_merges():
    with pytest.raises(LandscapeError, match="below the loss"):
        viz.merge_tree(MINIMA, [("A", "D", 0.2)])
    with pytest.raises(LandscapeError, match="not among the minima"):
        viz.merge_tree(MINIMA, [("A", "Z", 2.0)])
    with pytest.raises(LandscapeError, match="must be"):
        viz.merge_tree(MINIMA, [("A",)])


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 9).flatmap(lambda m: st.tuples(
    st.lists(st.floats(0, 1), min_size=m, max_size=m),
    st.lists(st.tuples(st.integers(0, m - 1), st.integers(0, m - 1), st.floats(0, 1)), max_size=3 * m),
    st.floats(0, 1.5))))
def test_merge_tree_matches_connected_components(data):
    losses, raw, u = data
    names = [f"m{i}" for i in range(len(losses))]
    minima = dict(zip(names, losses))
    merges = [(names[a], names[b], max(lvl, losses[a], losses[b]) + 0.01) for a, b, lvl in raw if a != b]
    tree = viz.merge_tree(minima, merges)
    g = nx.Graph()
    g.add_nodes_from(n for n in names if minima[n] <= u)
    g.add_edges_from((a, b) for a, b, lvl in merges if lvl <= u and a in g and b in g)
    expected = sorted(sorted(c) for c in nx.connected_components(g))
    assert sorted(sorted(v) for v in tree.valleys_at(u)) == expected
    # leaves are a permutation of 0..M-1 and every valley occupies a contiguous run of them
    assert sorted(tree.x.values()) == list(range(len(names)))
    for valley in tree.valleys_at(max(losses) + 2):
        xs = sorted(tree.x[m] for m in valley)
        assert xs == list(range(int(xs[0]), int(xs[0]) + len(xs)))


def test_disconnectivity_figure_writes(tmp_path):
    fig = viz.plot_disconnectivity(MINIMA, MERGES, level=0.6, tol=0.01)
    assert "3 valleys at most at u = 0.6, 2 spurious" in fig.axes[0].get_title()  # no separation proven
    out = viz.save_figure(fig, tmp_path / "tree.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(LandscapeError, match="suffix"):
        viz.save_figure(fig, tmp_path / "tree")


def test_path_profiles_are_dense_true_losses(tmp_path):
    ring = landscape.make_problem("ring")
    t = torch.linspace(0, math.pi, 9)
    arc = landscape.Path(torch.stack([-torch.cos(t), torch.sin(t)], 1), torch.zeros(9), method="string")
    arc.losses = ring.loss(arc.points)
    line = landscape.paths.linear_path(ring, ring.minima[0].float(), ring.minima[1].float())
    prof = viz.path_profiles({"arc": arc, "line": line}, ring, resolution=8)
    assert prof["line"]["loss"].max() == pytest.approx(1.0, abs=1e-6)  # the hill at the origin: R⁴
    assert prof["line"]["arc_over_chord"][-1] == pytest.approx(1.0)
    assert prof["arc"]["arc_over_chord"][-1] == pytest.approx(arc.normalized_length, rel=1e-6)
    pts = torch.stack([-torch.cos(torch.linspace(0, math.pi, 9)), torch.sin(torch.linspace(0, math.pi, 9))], 1)
    np.testing.assert_allclose(prof["arc"]["loss"][::8], ring.loss(pts), rtol=1e-5, atol=1e-7)
    knots_only = viz.path_profiles({"arc": arc})
    np.testing.assert_allclose(knots_only["arc"]["loss"], arc.losses)
    fig = viz.plot_path_losses({"arc": arc, "line": line}, ring, level=0.3, x="arc_over_chord")
    ax = fig.axes[0]
    assert len([ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]) == 2
    assert any("level u = 0.3" in t.get_text() for t in ax.get_legend().get_texts())
    assert ax.get_title() == "ring: loss along arc and line"  # the problem and what is drawn
    assert viz.plot_path_losses({"arc": arc}, log=True).axes[0].get_title() == "loss along arc (log scale)"
    viz.save_figure(fig, tmp_path / "p.svg")
    assert (tmp_path / "p.svg").read_text().lstrip().startswith("<?xml")
    with pytest.raises(LandscapeError, match="unknown x axis"):
        viz.plot_path_losses({"arc": arc}, x="time")


def test_length_table_pivots_means(tmp_path):
    rows = [{"level": 0.1, "width": 4, "normalized_length": 1.5}, {"level": 0.1, "width": 4, "normalized_length": 2.5},
            {"level": 0.2, "width": 4, "normalized_length": 1.2}, {"level": 0.1, "width": 8, "normalized_length": 1.1},
            {"level": 0.2, "width": 8, "normalized_length": None}]
    xs, ys, z = viz.length_table(rows)
    np.testing.assert_array_equal(xs, [0.1, 0.2])
    np.testing.assert_array_equal(ys, [4, 8])
    np.testing.assert_allclose(z, [[2.0, 1.1], [1.2, np.nan]])
    csv = tmp_path / "t.csv"
    csv.write_text("level,width,normalized_length\n0.1,4,1.5\n0.1,4,2.5\n0.2,4,1.2\n0.1,8,1.1\n0.2,8,\n")
    assert viz.read_rows(csv) == rows[:4] + [{"level": 0.2, "width": 8.0, "normalized_length": None}]
    viz.save_figure(viz.plot_length_surface(rows), tmp_path / "s.png")
    fig = viz.plot_lengths(rows, by="width")
    lines = [ln for ln in fig.axes[0].get_lines() if ln.get_marker() == "o"]
    np.testing.assert_allclose(lines[0].get_ydata(), [1.5, 2.5, 1.2])  # width 4: every row, sorted by level
    with pytest.raises(LandscapeError, match="at least two"):
        viz.plot_length_surface(rows[:1])


def test_normalized_weights_of_gradient_descent_on_the_exponential_loss():
    problem = landscape.make_problem("exp_linear", dim=10, n_train=40, n_test=20)
    result = landscape.train(problem, [0], optimizer="gd", lr=0.2, steps=2000, record_every=10, max_records=100)
    w = viz.normalized_weights(result.trajectories[0])
    # Soudry et al. / Poggio et al.: the norm keeps growing while the direction settles
    assert w.norms[-1] > 3 * w.norms[0] and np.all(np.diff(w.norms[len(w.norms) // 4:]) > 0)
    mid = len(w.norms) // 2
    assert w.angle_to_final[mid] < 0.2 * w.angle_to_final[0]
    np.testing.assert_allclose(np.linalg.norm(w.sphere, axis=1), 1.0, atol=1e-12)
    assert np.all(w.captured <= 1 + 1e-12) and w.captured.mean() > 0.9
    fig = viz.plot_normalized_weights(result.trajectories[0])
    norm_line = fig.axes[1].get_lines()[0]
    np.testing.assert_allclose(norm_line.get_ydata(), w.norms)


def test_normalized_weights_in_three_dimensions_are_exact():
    g = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(12, 3, generator=g, dtype=torch.float64))
    coeff = torch.randn(30, 3, generator=g, dtype=torch.float64)
    w = viz.normalized_weights({"step": torch.arange(30), "theta": coeff @ basis.T})
    np.testing.assert_allclose(w.captured, 1.0, atol=1e-12)
    # an isometry of the sphere: the angles between directions are kept
    n = (coeff / coeff.norm(dim=1, keepdim=True)).numpy()
    np.testing.assert_allclose(w.sphere @ w.sphere.T, n @ n.T, atol=1e-10)
    with pytest.raises(LandscapeError, match="no direction"):
        viz.normalized_weights(torch.zeros(3, 4))


def test_chart_tree_counts_the_spurious_valleys_of_the_valley_report(tmp_path):
    # Himmelblau's four minima are all global (losses 0 and ~1e-30, equal to rounding): no valley is
    # spurious at any level. The chart, fed the report's minima and merges, must agree level by level.
    import json

    from click.testing import CliRunner

    from landscape_cli.cli import main

    problem = landscape.make_problem("himmelblau")
    names = ["a", "b", "c", "d"]
    _, report = landscape.find_valleys(problem, problem.minima, names=names, levels=[5.0, 20.0, 200.0],
                                       attempts=1, generator=torch.Generator().manual_seed(0))
    assert [r["n_valleys"] for r in report["levels"]] == [4, 3, 1]  # the lowest saddle is at 13.3
    tree = viz.merge_tree(report["minima"], report["merges"])
    merges = tmp_path / "merges.json"
    merges.write_text(json.dumps({"minima": report["minima"], "merges": report["merges"]}))
    for row in report["levels"]:
        assert row["n_spurious"] == 0
        assert len(tree.spurious_at(row["level"])) == row["n_spurious"]
        assert len(tree.valleys_at(row["level"])) == row["n_valleys"]
        shown = CliRunner().invoke(main, ["chart", "tree", str(merges), "--level", str(row["level"]),
                                          "-o", str(tmp_path / "t.png"), "--json"])
        assert shown.exit_code == 0, shown.output
        assert len(json.loads(shown.stdout)["spurious"]) == row["n_spurious"]
    # one rule: a valley whose best loss is above L* by more than the tolerance is spurious in both
    assert landscape.valleys.spurious_tolerance(0.0) == pytest.approx(1e-6)
    assert viz.merge_tree({"a": 0.0, "b": 2e-6}, []).spurious_at(1.0) == [["b"]]
    assert viz.merge_tree({"a": 0.0, "b": 5e-7}, []).spurious_at(1.0) == []


@pytest.mark.parametrize("level", [None, 0.6])
def test_disconnectivity_figure_marks_spurious_valleys_over_their_whole_life(level):
    """D (0.5) is spurious from its loss until its valley meets A's at 1.0 — drawn red with or without a level; B (0.1)
    and C (0.05) are spurious at tol 0.01 too. A (the global minimum) and every valley holding it stay black."""
    fig = viz.plot_disconnectivity(MINIMA, MERGES, level=level, tol=0.01)
    ax = fig.axes[0]
    red = [ln for ln in ax.lines if ln.get_color() == "tab:red"]
    red_segments = sorted((round(float(min(ln.get_ydata())), 6), round(float(max(ln.get_ydata())), 6))
                          for ln in red if len(ln.get_xdata()) == 2)
    # C and D until they merge, then {C, D} until it meets A's valley at 1.0; B until it meets A at 0.3
    assert red_segments == [(0.05, 0.8), (0.1, 0.3), (0.5, 0.8), (0.8, 1.0)]
    markers = {round(float(ln.get_ydata()[0]), 6): ln.get_color() for ln in ax.lines if len(ln.get_xdata()) == 1}
    assert markers == {0.0: "tab:blue", 0.1: "tab:red", 0.05: "tab:red", 0.5: "tab:red"}
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    # no separation proven: "no global minimum ... spurious if apart", dotted, never "spurious valley"
    assert any(t.startswith("no global minimum") and t.endswith("spurious if apart") for t in labels)
    assert not any(t.startswith("spurious valley") for t in labels) and ("u = 0.6" in labels) == (level is not None)
    assert all(ln.get_linestyle() == ":" for ln in red if len(ln.get_xdata()) == 2)
    if level is not None:
        assert ax.get_title().endswith("3 valleys at most at u = 0.6, 2 spurious at most")  # {A, B}, C, D
    # B proven apart from A up to 0.3 (where they merge): solid, "spurious valley"; C, D not proven: still dotted
    proven = viz.plot_disconnectivity(MINIMA, MERGES, level=level, tol=0.01, separations=[("A", "B", 0.3)])
    pax = proven.axes[0]
    styles = {(round(float(min(ln.get_ydata())), 6), round(float(max(ln.get_ydata())), 6)): ln.get_linestyle()
              for ln in pax.lines if ln.get_color() == "tab:red" and len(ln.get_xdata()) == 2}
    assert styles == {(0.05, 0.8): ":", (0.1, 0.3): "-", (0.5, 0.8): ":", (0.8, 1.0): ":"}
    plabels = [t.get_text() for t in pax.get_legend().get_texts()]
    assert any(t.startswith("spurious valley") for t in plabels) and any(t.startswith("no global") for t in plabels)
    calm = viz.plot_disconnectivity({"A": 0.0, "B": 0.0}, [("A", "B", 1.0)], tol=0.01)
    assert not [ln for ln in calm.axes[0].lines if ln.get_color() == "tab:red"]
