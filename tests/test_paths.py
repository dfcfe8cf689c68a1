"""Path methods against closed-form landscapes: one validator for every method, mountain passes, the ring's arc."""

import math
from dataclasses import replace

import pytest
import torch

import landscape
import landscape.paths
from landscape import LandscapeError
from landscape.paths.certify import ZOOM_PASSES, dense_losses, segment_view

#: (problem, params, start minimum, end minimum, level, the minimax height between them or None).
#: The minimax ("mountain pass") height is the lowest level at which the two minima are connected:
#: above it a path exists, below it none does, and every path's max loss is at least it.
HIMMELBLAU_PASS = {(0, 3): 2, (0, 1): 0}  # pair of minima -> index of the saddle between them
CASES = [
    ("ring", {}, 0, 1, 0.25, "saddle0"),
    ("ring", {}, 0, 1, 0.15, None),  # below the ring's saddles (0.19): two valleys
    ("double_well", {}, 0, 1, 1.2, "saddle0"),
    ("double_well", {}, 0, 1, None, None),  # default level: 10% above the spurious minimum, far below the saddle
    ("himmelblau", {}, 0, 3, 20.0, "saddle2"),
    ("himmelblau", {}, 0, 3, 10.0, None),
    ("himmelblau", {}, 0, 1, 80.0, "saddle0"),
]


def independent_dense(problem, points, resolution):
    """Losses along every segment, interpolated here without the library's helpers."""
    out = []
    for a, b in zip(points[:-1], points[1:]):
        s = torch.linspace(0, 1, resolution + 1, dtype=points.dtype)[:, None]
        out.append(problem.loss((1 - s) * a + s * b))
    return torch.cat(out)


def validate(problem, path, start, end, level):
    """What every method's result must satisfy, whatever the method."""
    n, d = path.points.shape
    assert d == problem.dim and n >= 2
    assert path.losses.shape == (n,) and path.t.shape == (n,)
    assert torch.equal(path.points[0], start) and torch.equal(path.points[-1], end)
    assert torch.isfinite(path.points).all() and torch.isfinite(path.losses).all()
    torch.testing.assert_close(path.losses, problem.loss(path.points), rtol=1e-9, atol=1e-12)
    assert path.t[0] == 0 and path.t[-1] == pytest.approx(1.0) and (path.t[1:] >= path.t[:-1]).all()
    assert path.level == pytest.approx(level) and path.resolution == landscape.paths.DEFAULT_RESOLUTION
    assert path.evaluations > 0 and path.seconds > 0
    # an independent re-evaluation, 4x denser than the certification
    dense = independent_dense(problem, path.points, 4 * path.resolution)
    scale = 1e-9 * max(1.0, abs(level))
    assert float(dense.max()) <= path.max_loss + scale  # the certification found the max (to its zoom)
    if path.status == "connected":
        assert float(dense.max()) <= level + scale
    else:
        assert path.status == "not_found" and path.max_loss > level
        # the witness: the loss at the reported argmax, re-evaluated here, is above the level
        seg = int((path.t < path.dense_argmax).sum()) - 1
        seg = min(max(seg, 0), n - 2)
        f = (path.dense_argmax - float(path.t[seg])) / float(path.t[seg + 1] - path.t[seg])
        witness = problem.loss((1 - f) * path.points[seg] + f * path.points[seg + 1])
        assert float(witness) == pytest.approx(path.max_loss, rel=1e-6)


@pytest.mark.parametrize("method", sorted(landscape.METHODS))
@pytest.mark.parametrize("name, params, i, j, level, passage", CASES)
def test_every_method_on_closed_form_landscapes(method, name, params, i, j, level, passage):
    problem = landscape.make_problem(name, **params)
    start, end = problem.minima[i], problem.minima[j]
    path = landscape.connect(problem, start, end, method=method, level=level,
                             generator=torch.Generator().manual_seed(0))
    level = landscape.paths.default_level(*problem.loss(torch.stack([start, end]))) if level is None else level
    validate(problem, path, start, end, level)
    assert path.method == method and path.info["linear_max_loss"] >= path.info["linear_barrier"]
    if passage is None:  # the minima lie in different valleys at this level: no method may claim a path
        assert path.status == "not_found"
    else:  # every path between them crosses the saddle's height (the mountain pass)
        height = float(problem.loss(problem.saddles[int(passage[-1])]))
        assert path.max_loss >= height * (1 - 1e-6)
        if method in ("string", "neb", "bezier"):
            assert path.status == "connected", path.summary()


def test_double_well_every_method_above_the_saddle_and_the_best_within_2_percent():
    problem = landscape.make_problem("double_well")
    saddle = float(problem.loss(problem.saddles[0]))
    maxima = {}
    for method in landscape.METHODS:
        path = landscape.connect(problem, problem.minima[0], problem.minima[1], method=method, level=1.2)
        assert path.status == "connected"
        assert path.max_loss >= saddle * (1 - 1e-6)
        maxima[method] = path.max_loss
    assert min(maxima.values()) <= saddle * 1.02
    assert maxima["neb"] <= saddle * 1.02  # the climbing image sits on the saddle


def test_neb_climbing_image_finds_the_himmelblau_saddle():
    problem = landscape.make_problem("himmelblau")
    path = landscape.connect(problem, problem.minima[0], problem.minima[3], method="neb", level=20.0, saddle=True)
    climber = path.points[path.info["climbing"]]
    torch.testing.assert_close(climber, problem.saddles[2], atol=2e-2, rtol=0)
    assert path.max_loss == pytest.approx(float(problem.loss(problem.saddles[2])), rel=1e-3)


def test_ring_straight_path_crosses_the_hill_and_string_goes_round():
    problem = landscape.make_problem("ring")  # hill f(0, 0) = 1, saddles at 0.19
    a, b = problem.minima
    straight = landscape.connect(problem, a, b, method="linear", level=0.5)
    assert straight.status == "not_found" and straight.max_loss == pytest.approx(1.0, abs=1e-9)
    found = landscape.connect(problem, a, b, method="string", level=0.5)
    assert found.status == "connected" and found.max_loss <= 0.5
    assert found.info["linear_status"] == "not_found" and found.info["linear_max_loss"] == pytest.approx(1.0)


def annulus_geodesic(level):
    """Shortest path from (-1, 0) to (1, 0) avoiding the disk r < ρ = √(1 − √u), over the chord 2.

    The ring's loss is ≥ (r² − 1)², so that disk lies above u: every path below u avoids it, and
    this (two tangents and an arc) is a lower bound on its normalized length.
    """
    rho = math.sqrt(1 - math.sqrt(level))
    return (2 * math.sqrt(1 - rho**2) + rho * (math.pi - 2 * math.acos(rho))) / 2


@pytest.mark.parametrize("bump, level, tol", [(0.2, 0.3, 0.2), (0.01, 0.02, 0.05), (1e-4, 2e-4, 0.005)])
def test_ring_normalized_length_approaches_the_half_circle(bump, level, tol):
    # as the valley narrows (bump, level -> 0), the certified string tends to the half circle: π/2
    problem = landscape.make_problem("ring", bump=bump)
    path = landscape.connect(problem, *problem.minima, method="string", level=level)
    assert path.status == "connected"
    assert annulus_geodesic(level) <= path.normalized_length <= math.pi / 2 * (1 + 1e-3)
    assert path.normalized_length == pytest.approx(math.pi / 2, rel=tol)


def test_status_is_stable_under_halving_and_doubling_the_resolution():
    problem = landscape.make_problem("himmelblau")
    for i, j, level in [(0, 3, 20.0), (0, 1, 80.0), (0, 3, 10.0)]:
        path = landscape.connect(problem, problem.minima[i], problem.minima[j], method="string", level=level)
        for r in (16, 64):
            again = landscape.certify(problem, path, level, resolution=r)
            assert again.status == path.status
            assert again.max_loss == pytest.approx(path.max_loss, rel=1e-4)


def test_string_descends_all_beads_of_a_round_in_one_batched_call():
    problem = landscape.make_problem("ring", bump=1e-4)
    path = landscape.connect(problem, *problem.minima, method="string", level=2e-4)
    rounds = path.info["rounds"]
    refined = [r for r in rounds if "beads_added" in r]
    assert max(r["beads_descended"] for r in refined) > 4  # rounds with many beads ...
    # ... cost one loss_and_grad per step (plus the final check of the beads), one check per round,
    # one call for the endpoints' losses, and one a pass of each zoom before stopping (the certificate's),
    # plus two for its peaks' neighbours and their parabola's vertex
    zooms = 1 + sum(bool(r.get("zoomed")) for r in rounds)
    calls = sum(r["descent_steps"] + 1 for r in refined) + len(rounds) + 1 + (ZOOM_PASSES + 2) * zooms
    assert path.info["batched_calls"] == calls
    assert path.info["beads_added"] == path.n_beads
    assert sum(r["beads_added"] for r in refined) == path.n_beads


def test_constrained_string_keeps_beads_near_their_chord():
    problem = landscape.make_problem("ring")
    a, b = problem.minima
    greedy = landscape.connect(problem, a, b, level=0.21, alpha=0.5)
    held = landscape.connect(problem, a, b, level=0.21, alpha=0.5, penalty=1.0)
    assert held.status == "connected"
    # greedy beads slide down the valley away from the top and bunch up; the penalty spreads them
    assert held.segment_lengths.max() < greedy.segment_lengths.max()


def test_bisector_beads_stay_equidistant_from_their_neighbours():
    problem = landscape.make_problem("ring")
    path = landscape.connect(problem, *problem.minima, level=0.25, bisector=True, insert="midpoint")
    assert path.status == "connected"
    first = path.points[path.n_points // 2]  # the first bead, descended in the bisector of the chord
    assert float(first[0]) == pytest.approx(0.0, abs=1e-9)


def test_paths_are_reproducible_with_a_generator_and_reversible():
    problem = landscape.make_problem("himmelblau")
    a, b = problem.minima[0], problem.minima[1]
    one = landscape.connect(problem, a, b, level=80.0, generator=torch.Generator().manual_seed(3))
    two = landscape.connect(problem, a, b, level=80.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(one.points, two.points)
    back = landscape.connect(problem, b, a, level=80.0)
    assert back.status == one.status == "connected"


def test_endpoint_above_the_level_is_not_found_without_running_the_method():
    problem = landscape.make_problem("himmelblau")
    start = torch.tensor([0.0, 0.0], dtype=torch.float64)  # f = 170
    path = landscape.connect(problem, start, problem.minima[0], method="string", level=50.0)
    assert path.status == "not_found" and "skipped" in path.info and path.n_points == 2


@pytest.mark.parametrize("call, message", [
    (lambda p, a, b: landscape.connect(p, a, b, method="spline"), "unknown path method 'spline'"),
    (lambda p, a, b: landscape.connect(p, a, b, alpha_=1), "has no option(s) ['alpha_']"),
    (lambda p, a, b: landscape.connect(p, a[:1], b), "start has shape (1,)"),
    (lambda p, a, b: landscape.connect(p, a, b.float()), "must share dtype"),
    (lambda p, a, b: landscape.connect(p, a, a), "same point"),
    (lambda p, a, b: landscape.connect(p, a, b * float("nan")), "NaN"),
    (lambda p, a, b: landscape.connect(p, a, b, level=float("inf")), "level must be finite"),
    (lambda p, a, b: landscape.connect(p, a, b, resolution=0), "resolution must be a positive integer"),
    (lambda p, a, b: landscape.connect(p, a, b, alpha=2.0), "0 < alpha <= 1"),
    (lambda p, a, b: landscape.connect(p, a, b, method="neb", steps=-1), "non-negative integer"),
    (lambda p, a, b: landscape.connect(p, a, b, method="string", insert="edge"), "unknown insert"),
])
def test_bad_input_is_one_clear_error(call, message):
    problem = landscape.make_problem("himmelblau")
    with pytest.raises(LandscapeError) as err:
        call(problem, problem.minima[0], problem.minima[1])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_registry_and_options():
    assert list(landscape.METHODS) == ["linear", "string", "bezier", "polychain", "neb"]
    assert all(name == f.__name__ for name, f in landscape.METHODS.items())
    assert all(f.__doc__ for f in landscape.METHODS.values())
    assert landscape.method_options("string")["alpha"] == 0.9
    assert "resolution" in landscape.method_options("neb")


@pytest.mark.parametrize("method", sorted(landscape.METHODS))
def test_reported_evaluations_are_the_evaluations_made(method):
    # every loss (or loss-and-gradient) evaluated during connect, counted at the problem, is reported:
    # the endpoints' losses once, the baseline, the method and the certification
    problem = landscape.make_problem("himmelblau")
    made = {"points": 0}
    loss, loss_and_grad = problem.loss, problem.loss_and_grad

    def counting(f):
        def wrapped(thetas, *args, **kwargs):
            made["points"] += int(thetas.shape[0])
            return f(thetas, *args, **kwargs)
        return wrapped

    problem.loss, problem.loss_and_grad = counting(loss), counting(loss_and_grad)
    path = landscape.connect(problem, problem.minima[0], problem.minima[3], method=method, level=20.0)
    assert path.evaluations == made["points"]
    made["points"] = 0
    straight = landscape.paths.straight_path(problem, problem.minima[0], problem.minima[3])
    assert straight.evaluations == made["points"]
    made["points"] = 0  # a straight segment passed in is neither measured nor counted again
    again = landscape.connect(problem, problem.minima[0], problem.minima[3], method=method, level=20.0,
                              straight=straight)
    assert again.evaluations == made["points"] and again.info["linear_max_loss"] == straight.max_loss


def test_the_certificate_reuses_the_methods_last_dense_check_of_the_same_path():
    # DSS's last round checks the final chain at the certificate's resolution: connect hands those losses
    # to certify instead of evaluating them again; the claim is the same as from a fresh evaluation
    problem = landscape.make_problem("himmelblau")
    a, b = problem.minima[0], problem.minima[3]
    path = landscape.connect(problem, a, b, level=20.0)
    found = replace(path, status="unchecked", certificate=None, bound=None, dense_max_loss=None, info={})
    fresh = landscape.certify(problem, found, 20.0)
    grid = dense_losses(problem, path.points, 32)
    reused = landscape.certify(problem, found, 20.0, values=grid)
    assert (reused.status, reused.certificate, reused.dense_max_loss) == (fresh.status, fresh.certificate,
                                                                          fresh.dense_max_loss)
    assert torch.equal(reused.losses, fresh.losses)
    assert fresh.evaluations - reused.evaluations == grid.numel() == (path.n_points - 1) * 32 + 1
    with pytest.raises(LandscapeError, match="values has shape"):
        landscape.certify(problem, found, 20.0, values=grid[:-1])


def test_a_strings_rounds_check_again_only_the_segments_they_changed(monkeypatch):
    import landscape.paths.string as string_module
    from landscape.paths._common import Counted, Endpoints
    problem = landscape.make_problem("ring")
    a, b = problem.minima[0], problem.minima[1]
    la, lb = problem.loss(torch.stack([a, b])).tolist()

    class Tally(Counted):  # the zoom before stopping (as the certificate's) is counted apart
        zoomed = 0

        def zoom(self, points, resolution):
            before = self.losses
            out = super().zoom(points, resolution)
            self.zoomed += self.losses - before
            return out

    def run():
        counted = Tally(problem)
        path = string_module.string(Endpoints(counted, a, b, la, lb, 0.25), generator=torch.Generator().manual_seed(0))
        return counted, path

    counted, path = run()
    monkeypatch.setattr(string_module, "unchanged", lambda seg, bad, stuck: None)  # check every segment
    every, again = run()
    assert torch.equal(path.points, again.points) and torch.equal(path.losses, again.losses)
    rounds = [r["points"] for r in path.info["rounds"]]
    assert every.losses - every.zoomed == sum((n - 1) * 32 + 1 for n in rounds)  # every segment, every round
    assert counted.zoomed == every.zoomed > 0 and counted.losses < every.losses  # here 297 against 356, and the zoom
    grid = counted.dense_of(path.points, 32)  # what the certificate takes: right for every segment
    expected = independent_dense(problem, path.points, 32).view(path.n_points - 1, 33)
    assert grid is not None and torch.allclose(segment_view(grid, 32), expected, rtol=1e-6, atol=1e-12)


def spike_problem():
    """A shallow valley from (−1, 0) to (1, 0) (at most 0.01 along the axis) with a spike of height 0.2 and
    width 0.005 at x = 1/32, half-way between two points of the straight segment's grid (spacing 1/16)."""
    from landscape.problems.analytic import AnalyticProblem

    def f(x, y):
        return 0.01 * (x * x - 1) ** 2 + y * y + 0.2 * torch.exp(-((x - 1 / 32) ** 2 + y ** 2) / 0.005 ** 2)

    return AnalyticProblem("spike", {}, f, minima=[(-1.0, 0.0), (1.0, 0.0)], saddles=[], box=((-2, 2), (-2, 2)))


def test_a_string_zooms_as_its_certificate_does_and_goes_round_a_spike_between_grid_points():
    problem = spike_problem()
    a, b = problem.minima
    straight = landscape.connect(problem, a, b, method="linear", level=0.05)
    assert straight.status == "not_found" and straight.max_loss > 0.19  # the certificate's zoom finds the spike
    path = landscape.connect(problem, a, b, method="string", level=0.05)
    assert path.info["rounds"][0].get("zoomed") and path.info["stop"] == "below_level"
    assert path.status == "connected" and path.max_loss <= 0.05
    dense = independent_dense(problem, path.points, 256)
    assert float(dense.max()) <= 0.05  # 8x finer than the certificate's grid, computed here: round the spike
    assert 1.0 < path.normalized_length < 1.01


def test_a_zoom_of_a_chain_not_yet_checked_checks_it_first():
    from landscape.paths._common import Counted
    problem = spike_problem()
    chain = torch.stack(list(problem.minima))
    fresh = Counted(problem)
    peak, where = fresh.zoom(chain, 32)  # no segments() call before: it makes one
    checked = Counted(problem)
    checked.segments(chain, 32)
    assert (peak, where) == checked.zoom(chain, 32) and peak > 0.19  # the spike, between grid points
    assert fresh.zoom_of(chain, 32) == (peak, where) and fresh.zoom_of(chain.flip(0), 32) is None
