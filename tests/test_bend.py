"""Where a new DSS bead starts across its segment: the curve through the chain's knots (closed forms on a
circle and a line), and the option's reach through ``connect``."""

import math

import pytest
import torch

import landscape
from landscape import LandscapeError
from landscape.paths.string import curve_points

from test_paths import annulus_geodesic


def arc(degrees):
    angles = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([angles.cos(), angles.sin()], 1)


def test_the_curve_through_knots_on_a_circle_stays_near_the_circle_where_the_chord_cuts_inside():
    chain = arc([0, 60, 120, 180])  # four knots, three equal chords of a unit circle
    points = curve_points(chain, torch.tensor([0, 1, 2]), torch.full((3,), 0.5, dtype=torch.float64))
    # the middle segment has knots on both sides: the mean of the two quadratics is Catmull-Rom's
    # (−P0 + 9 P1 + 9 P2 − P3)/16 = (0, 9√3/16); an end segment has one quadratic: (13/16, 5√3/16)
    assert points[1].tolist() == pytest.approx([0.0, 9 * math.sqrt(3) / 16], abs=1e-12)
    assert points[0].tolist() == pytest.approx([13 / 16, 5 * math.sqrt(3) / 16], abs=1e-12)
    assert points[2].tolist() == pytest.approx([-13 / 16, 5 * math.sqrt(3) / 16], abs=1e-12)
    assert (points.norm(dim=1) - 1).abs().max() < 0.03  # the chords' midpoints are at cos 30° = 0.866


def test_the_curve_through_collinear_knots_is_the_chord_whatever_their_spacing():
    t = torch.tensor([0.0, 0.1, 0.5, 1.7, 2.0], dtype=torch.float64)
    chain = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + t[:, None] * torch.tensor([0.3, 1.0, -2.0],
                                                                                           dtype=torch.float64)
    split = torch.arange(4)
    f = torch.tensor([0.2, 0.5, 0.9, 0.37], dtype=torch.float64)
    chord = chain[split] + f[:, None] * (chain[split + 1] - chain[split])
    assert torch.allclose(curve_points(chain, split, f), chord, atol=1e-12)
    # only the segment's two ends: no curve, the chord's point
    assert torch.allclose(curve_points(arc([0, 90]), torch.tensor([0]), torch.tensor([0.5], dtype=torch.float64)),
                          arc([0, 90]).mean(0, keepdim=True), atol=1e-15)


def test_a_bent_start_still_connects_the_ring_above_its_closed_form_bound():
    problem = landscape.make_problem("ring")
    for bend in (0.5, 1.0):
        path = landscape.connect(problem, *problem.minima, level=0.3, bend=bend)
        assert path.status == "connected"
        assert annulus_geodesic(0.3) <= path.normalized_length <= 1.5


@pytest.mark.parametrize("bend", [-0.1, 1.5, "curve", True])
def test_a_bad_bend_is_one_clear_error(bend):
    problem = landscape.make_problem("ring")
    with pytest.raises(LandscapeError, match="option bend must be a number from 0"):
        landscape.connect(problem, *problem.minima, level=0.3, bend=bend)
