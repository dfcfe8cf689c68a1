"""Grid components of Ω_u on the analytic landscapes, against their saddle heights."""

import pytest
import torch

import landscape
from landscape.valleys.grid import grid_valleys


def test_himmelblau_components_change_at_the_saddles():
    problem = landscape.make_problem("himmelblau")
    saddles = sorted(problem.loss(problem.saddles).tolist())  # 13.31, 67.72, 104.02, 178.34
    expected = {0.5 * saddles[0]: 4, 0.5 * (saddles[0] + saddles[1]): 3, 0.5 * (saddles[1] + saddles[2]): 2,
                0.5 * (saddles[2] + saddles[3]): 1, 179.0: 1}
    for level, count in expected.items():
        g = grid_valleys(problem, level)
        assert g.n_valleys == count, level
        assert g.n_components == count, level


def test_himmelblau_first_merge_joins_the_right_pair():
    problem = landscape.make_problem("himmelblau")
    g = grid_valleys(problem, 20.0)  # above the lowest saddle (13.31, at (3.39, 0.07)) only
    lab = g.minima_labels
    # minima (3, 2) and (3.58, -1.85), on either side of that saddle, share a valley; the other two do not
    assert lab[0] == lab[3] and len({lab[0], lab[1], lab[2]}) == 3


def test_double_well_has_two_valleys_below_the_saddle():
    problem = landscape.make_problem("double_well", tilt=0.3)
    saddle = problem.loss(problem.saddles).item()
    assert grid_valleys(problem, saddle - 0.01).n_valleys == 2
    assert grid_valleys(problem, saddle + 0.01).n_valleys == 1


def test_ring_is_one_valley_above_its_saddles_and_two_below():
    problem = landscape.make_problem("ring", bump=0.2)
    assert grid_valleys(problem, 0.18).n_valleys == 2  # saddles at 0.19
    assert grid_valleys(problem, 0.20).n_valleys == 1


def test_needs_a_2d_problem():
    problem = landscape.make_problem("deep_linear", n_train=10)
    with pytest.raises(landscape.LandscapeError, match="2-D problem"):
        grid_valleys(problem, 1.0, box=((0, 1), (0, 1)), minima=torch.zeros(1, 2))
