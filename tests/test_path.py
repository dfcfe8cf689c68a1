"""Path metrics and the dense certification, against closed forms."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import landscape
from landscape import LandscapeError, Path, certify
from landscape.paths import linear_path


def test_straight_path_metrics():
    problem = landscape.make_problem("ring")
    a, b = problem.minima[0], problem.minima[1]
    path = linear_path(problem, a, b, n_points=5)
    assert path.length == pytest.approx(2.0) and path.chord == pytest.approx(2.0)
    assert path.normalized_length == pytest.approx(1.0)
    assert path.n_beads == 3 and path.max_loss == pytest.approx(1.0)  # the knot at the origin is the hill
    with pytest.raises(LandscapeError, match="not checked densely"):
        path.is_below(0.5)


def test_knots_alone_do_not_certify():
    # two knots in the ring's minima: the knots are at loss 0 but the segment crosses the hill (loss 1)
    problem = landscape.make_problem("ring")
    path = linear_path(problem, problem.minima[0], problem.minima[1])
    assert path.max_loss == 0.0
    checked = certify(problem, path, level=0.5)
    assert checked.status == "not_found"
    assert checked.dense_max_loss == pytest.approx(1.0, abs=1e-12)  # the midpoint is on the grid: the hill
    assert checked.dense_argmax == pytest.approx(0.5, abs=1e-12)
    # 33 grid points, then one local maximum (the hill) re-sampled 2 x 16 times by the zoom, then its two
    # neighbours and their parabola's vertex
    assert checked.evaluations == path.evaluations + 33 + 2 * 16 + 3
    assert not checked.is_below(0.5) and checked.is_below(1.01)


def test_half_circle_is_connected_and_has_length_pi_over_2():
    problem = landscape.make_problem("ring", bump=0.2)
    angles = torch.linspace(math.pi, 0, 201, dtype=torch.float64)
    points = torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    path = Path(points, problem.loss(points), method="linear")
    checked = certify(problem, path, level=0.21)
    assert checked.status == "connected"
    assert checked.max_loss == pytest.approx(0.2, rel=1e-6)  # bump·sin²(π/2) on the unit circle
    assert checked.normalized_length == pytest.approx(math.pi / 2, rel=1e-4)


def test_double_well_straight_barrier_is_at_least_the_saddle():
    problem = landscape.make_problem("double_well")
    a, b = problem.minima[0], problem.minima[1]
    checked = certify(problem, linear_path(problem, a, b), level=10.0, resolution=400)
    saddle = float(problem.loss(problem.saddles[0]))
    # the straight segment along y = 0 passes through the saddle: its max is the saddle height
    assert checked.max_loss == pytest.approx(saddle, rel=1e-4)
    assert checked.barrier == pytest.approx(saddle - float(problem.loss(b)), rel=1e-3)


def test_default_level():
    assert landscape.paths.default_level(0.5, 1.0) == pytest.approx(1.1)
    assert landscape.paths.default_level(0.0, 0.0) == pytest.approx(0.1)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 8), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_metrics_invariant_to_reversal(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    points = torch.randn(n, d, generator=g, dtype=torch.float64)
    losses = torch.rand(n, generator=g, dtype=torch.float64)
    path = Path(points, losses)
    back = path.reversed()
    assert back.length == pytest.approx(path.length)
    assert back.normalized_length == pytest.approx(path.normalized_length)
    assert back.max_loss == path.max_loss and back.barrier == path.barrier
    torch.testing.assert_close(back.t, 1 - path.t.flip(0))
    assert torch.equal(back.reversed().points, path.points)


def test_path_file_round_trip(tmp_path):
    problem = landscape.make_problem("himmelblau")
    path = certify(problem, linear_path(problem, problem.minima[0], problem.minima[1], n_points=4), level=100.0)
    landscape.save_path(tmp_path / "p.pt", problem, path, meta={"endpoints": ["a.pt", "b.pt"]})
    back, prob, meta = landscape.load_path(tmp_path / "p.pt")
    assert prob.spec == problem.spec and meta == {"endpoints": ["a.pt", "b.pt"]}
    assert torch.equal(back.points, path.points) and back.status == path.status
    rechecked = ("file_claim", "recheck", "rechecked")
    assert {k: v for k, v in back.summary().items() if k != "info"} == \
        {k: v for k, v in path.summary().items() if k != "info"}  # the re-checked claim is the one made
    assert {k: v for k, v in back.info.items() if k not in rechecked} == path.info
    assert back.info["recheck"]["agrees"] and back.info["file_claim"]["status"] == path.status
    with pytest.raises(LandscapeError, match="not a checkpoint of a minimum"):
        landscape.load_checkpoint(tmp_path / "p.pt")


def test_barrier_of_the_double_well_is_the_saddle_above_the_higher_minimum():
    # the straight segment between the double well's minima runs along y = 0 through its saddle, so
    # its barrier is L(saddle) − max(L(a), L(b)), known in closed form
    problem = landscape.make_problem("double_well")
    a, b = problem.minima
    saddle, la, lb = problem.loss(torch.stack([problem.saddles[0], a, b])).tolist()
    expected = saddle - max(la, lb)
    assert expected > 0.5
    assert landscape.barrier(problem, a, b) == pytest.approx(expected, rel=1e-5)
    assert landscape.barrier(problem, b, a) == pytest.approx(expected, rel=1e-5)  # the segment walked back
    # the same number as a path certified densely, the linear method of connect included
    assert landscape.barrier(problem, a, b, resolution=64) == pytest.approx(
        certify(problem, linear_path(problem, a, b), resolution=64).barrier, rel=1e-12)
    assert landscape.connect(problem, a, b, method="linear").barrier == pytest.approx(expected, rel=1e-5)


def test_barrier_of_the_ring_is_its_hill_and_zero_on_a_point():
    ring = landscape.make_problem("ring")  # minima at loss 0 on either side of the hill f(0, 0) = 1
    a, b = ring.minima
    assert landscape.barrier(ring, a, b) == pytest.approx(1.0, abs=1e-12)
    assert landscape.barrier(ring, a, a) == 0.0
    with pytest.raises(LandscapeError, match="shape"):
        landscape.barrier(ring, a, torch.zeros(3, dtype=a.dtype))


def test_straight_paths_in_one_batch_match_one_at_a_time():
    problem = landscape.make_problem("himmelblau")
    m = problem.minima
    starts, ends = m[[0, 0, 1, 2]], m[[1, 3, 2, 3]]
    batch = landscape.paths.straight_paths(problem, starts, ends, level=50.0)
    for a, b, path in zip(starts, ends, batch):
        alone = certify(problem, linear_path(problem, a, b), level=50.0)
        assert path.max_loss == pytest.approx(alone.max_loss, rel=1e-12) and path.status == alone.status
        assert path.dense_argmax == pytest.approx(alone.dense_argmax, abs=1e-12)
        assert path.evaluations == alone.evaluations - 2  # the knots alone cost linear_path its 2 evaluations
