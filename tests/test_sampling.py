"""Sublevel-set sampling: stays in Ω_u, stays in its valley, is uniform where that is checkable."""

import pytest
import torch

import landscape
from landscape.problems.analytic import AnalyticProblem
from landscape.valleys.sampling import sample_sublevel_set


def bowl():
    return AnalyticProblem("bowl", {}, lambda x, y: x * x + y * y, minima=[(0.0, 0.0)], saddles=[],
                           box=((-2.0, 2.0), (-2.0, 2.0)))


def test_uniform_on_a_disk(gen):
    # Ω_u of x² + y² is the disk of radius √u; uniform on it: E r² = u / 2, P(r < √u / 2) = 1/4
    u = 1.0
    starts = torch.zeros(64, 2, dtype=torch.float64)
    s = sample_sublevel_set(bowl(), starts, u, n_samples=200, thin=2, radius=0.3, generator=gen)
    r2 = s.points[:, 50:].pow(2).sum(-1)
    assert (s.losses <= u).all()
    assert r2.mean().item() == pytest.approx(u / 2, rel=0.04)
    assert (r2 < u / 4).double().mean().item() == pytest.approx(0.25, abs=0.03)


def test_chains_stay_in_their_valley_below_the_saddle(gen):
    problem = landscape.make_problem("ring", bump=0.2)  # saddles at height 0.19, hill at 1
    starts = problem.minima.repeat_interleave(8, 0)  # 8 chains in each minimum, (-1, 0) then (1, 0)
    below = sample_sublevel_set(problem, starts, 0.15, n_samples=150, generator=gen)
    side = torch.sign(below.points[..., 0])
    assert (side[:8] < 0).all() and (side[8:] > 0).all()  # never crossed to the other minimum
    above = sample_sublevel_set(problem, starts, 0.5, n_samples=150, generator=gen)
    assert (above.losses <= 0.5).all()
    crossed = (torch.sign(above.points[:8, :, 0]) > 0).any(1)  # the annulus is one valley at u = 0.5
    assert crossed.any()
    extent = below.extent()
    # the valley of (1, 0) below u = 0.15 is a crescent reaching φ = ±60° on the ring (0.2 sin²φ ≤ 0.15),
    # about 1 away from the minimum; the saddles at distance 1.38 are not in it
    assert all(0.2 < e["mean_distance"] and e["max_distance"] < 1.3 for e in extent)


def test_double_well_shallow_minimum_is_its_own_valley(gen):
    problem = landscape.make_problem("double_well", tilt=0.3)
    shallow = problem.minima[1:]
    level = 0.5 * (problem.loss(shallow).item() + problem.loss(problem.saddles).item())
    s = sample_sublevel_set(problem, shallow.repeat(16, 1), level, n_samples=200, generator=gen)
    assert (s.points[..., 0] > problem.saddles[0, 0]).all()


def test_start_above_the_level_is_an_error():
    problem = landscape.make_problem("ring")
    with pytest.raises(landscape.LandscapeError, match="above the level"):
        sample_sublevel_set(problem, torch.zeros(1, 2), 0.5)


def test_descending_from_samples_finds_the_other_minima(gen):
    problem = landscape.make_problem("himmelblau")
    start = problem.minima[:1]  # only (3, 2) is known
    samples = sample_sublevel_set(problem, start.repeat(8, 1), 150.0, n_samples=10, generator=gen)
    from landscape.valleys.sampling import seed_minima

    found = seed_minima(problem, samples.points.reshape(-1, 2), known=start, steps=3000, lr=0.05)
    # at u = 150 (above three saddles, below the fourth) the valley of (3, 2) holds all four minima
    dist = torch.cdist(found, problem.minima[1:])
    assert found.shape[0] == 3 and (dist.min(0).values < 1e-3).all()


def test_a_chain_stays_in_its_valley_where_the_search_spacing_resolves_the_gap(gen):
    """1% below the double well's pass the valleys are apart by a gap 0.15 wide along y = 0 (wider elsewhere:
    f = g(x) + y²). The line search's spacing grew to 0.5 and 41% of a chain's samples were in the other
    valley; the spacing is now reported, and ``max_spacing`` below the gap keeps every chain in its valley."""
    problem = landscape.make_problem("double_well", tilt=0.3)
    saddle = problem.saddles[0, 0].item()
    x = torch.linspace(saddle - 0.2, saddle + 0.2, 40001, dtype=torch.float64)
    u = 0.99 * problem.loss(problem.saddles.double()).item()
    gap = (x[(x * x - 1) ** 2 + 0.3 * x > u].max() - x[(x * x - 1) ** 2 + 0.3 * x > u].min()).item()
    assert 0.1 < gap < 0.2  # the closed form: where g(x) > u, no y is below u
    fine = sample_sublevel_set(problem, problem.minima, u, n_samples=400, max_spacing=0.5 * gap, generator=gen)
    assert (fine.spacing <= 0.5 * gap + 1e-12).all()
    assert (fine.points[0, :, 0] < saddle).all() and (fine.points[1, :, 0] > saddle).all()
    coarse = sample_sublevel_set(problem, problem.minima, u, n_samples=400, generator=gen)
    left = torch.cat([coarse.points[0, :, 0] > saddle, coarse.points[1, :, 0] < saddle])
    assert left.any() and (coarse.spacing > gap).all()  # it left its valley, and its spacing says it could
    assert [e["spacing"] for e in coarse.extent()] == coarse.spacing.tolist()
