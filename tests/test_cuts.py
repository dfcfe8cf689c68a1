"""Level steps against a bead's last few linearisations (landscape.paths.beads.Cuts): closed forms on
polyhedral functions, the fall-back to Polyak's step, and what the default does to strings."""

import math

import pytest
import torch

import landscape
from landscape import LandscapeError
from landscape.paths._common import Counted, polyak_step
from landscape.paths.beads import Cuts, descend

from test_paths import annulus_geodesic


def wedge(p, s=10.0):
    """f(x, y) = s·|y| − x: a valley along the x axis whose walls rise s times faster than its floor falls."""
    value = s * p[:, 1].abs() - p[:, 0]
    grad = torch.stack([-torch.ones_like(value), s * torch.sign(p[:, 1])], 1)
    return value, grad


def level_steps(cuts: int, start, aim: float, steps: int = 200):
    """Points visited by level steps on the wedge from ``start`` until f ≤ aim (to 10⁻¹⁰; no cap)."""
    model = Cuts(1, 2, cuts, torch.zeros(1, 2, dtype=torch.float64))
    x, seen = torch.tensor([start], dtype=torch.float64), []
    inf = torch.full((1, 1), math.inf, dtype=torch.float64)
    for _ in range(steps):
        value, grad = wedge(x)
        seen.append(x[0].clone())
        if float(value) <= aim + 1e-10:
            break
        x = x - model.step(torch.tensor([0]), value, grad, aim, inf, inf)
    return torch.stack(seen), model


def test_one_cut_is_polyaks_step():
    gen = torch.Generator().manual_seed(0)
    value = torch.rand(4, generator=gen, dtype=torch.float64) + 1
    grad = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    cap = torch.full((4, 1), math.inf, dtype=torch.float64)
    model = Cuts(4, 6, 1, grad)
    for _ in range(3):  # with one slot every step forgets the last cut
        move = model.step(torch.arange(4), value, grad, 0.25, cap, cap)
        assert torch.allclose(move, polyak_step(value, grad, 0.25, cap), atol=1e-12)
        value, grad = value * 1.5, grad.flip(1)


def test_two_cuts_pin_the_floor_of_a_polyhedral_valley():
    # On the wedge from (0, 1) aiming at −1, Polyak's step lands on the far wall each time (the plane of
    # one wall reaches the aim there) and closes a fixed fraction of its distance to the apex a step:
    # aiming exactly at the level it never gets there (after 200 steps f ≈ −0.966). With
    # two cuts, the second step projects onto the intersection of both walls' planes, {x ≥ 1 + 10|y|}, whose
    # nearest point to where the first step went is its apex (1, 0): f = −1 exactly, on the third point.
    two, _ = level_steps(2, [0.0, 1.0], -1.0)
    assert len(two) == 3
    assert two[-1].tolist() == pytest.approx([1.0, 0.0], abs=1e-9)
    one, _ = level_steps(1, [0.0, 1.0], -1.0)
    assert len(one) == 200 and float(wedge(one[-1:])[0]) > -0.97
    # each Polyak point lies on the opposite wall from the last: the zigzag the cuts remove
    signs = torch.sign(one[1:-1, 1])
    assert (signs[1:] * signs[:-1] < 0).all()


def test_the_step_is_the_projection_onto_the_cuts_intersection():
    # KKT of min ‖y − x‖² s.t. n_j·y ≤ n_j·x − r_j: y feasible, x − y = Σ λ_j n_j with λ ≥ 0, λ_j > 0 only on
    # active cuts; checked on random affine cuts in 5 dimensions, 4 of them held, from a common start
    gen = torch.Generator().manual_seed(3)
    d, k = 5, 4
    model = Cuts(1, d, k, torch.zeros(1, d, dtype=torch.float64))
    x = torch.zeros(1, d, dtype=torch.float64)
    inf = torch.full((1, 1), math.inf, dtype=torch.float64)
    grads = torch.randn(k, d, generator=gen, dtype=torch.float64)
    values = torch.rand(k, generator=gen, dtype=torch.float64) + 0.5
    for j in range(k):  # the same point each time: undo each move so every cut is made at x
        move = model.step(torch.tensor([0]), values[j:j + 1], grads[j:j + 1], 0.0, inf, inf)
        if j < k - 1:
            model.distances[0] += (model.normals[0] @ move[0]).double()  # back to x
    y = x - move
    unit = grads / grads.norm(dim=1, keepdim=True)
    slack = (values / grads.norm(dim=1)) + unit @ (y[0] - x[0])  # signed distance of y past each cut
    assert slack.max() <= 1e-9
    lam = torch.linalg.lstsq(unit.T, move[0]).solution  # x − y = Σ λ_j n_j
    assert torch.allclose(unit.T @ lam, move[0], atol=1e-9)
    assert lam.min() >= -1e-9
    assert (lam * slack).abs().max() <= 1e-9  # complementary slackness


def test_contradicting_cuts_fall_back_to_polyaks_step():
    # f(x) = |x| aimed at −1: the two cuts x ≤ −1 and −x ≤ −1 have no common point; the model is dropped to
    # its newest cut, whose step (Polyak's) is then capped
    model = Cuts(1, 1, 4, torch.zeros(1, 1, dtype=torch.float64))
    cap, limit = torch.full((1, 1), 0.5, dtype=torch.float64), torch.full((1, 1), 10.0, dtype=torch.float64)
    x = torch.tensor([[0.25]], dtype=torch.float64)
    first = model.step(torch.tensor([0]), x.abs()[:, 0], torch.sign(x), -1.0, cap, limit)
    assert first.tolist() == [[0.5]] and model.dropped == 0  # Polyak's 1.25, capped
    x = x - first
    second = model.step(torch.tensor([0]), x.abs()[:, 0], torch.sign(x), -1.0, cap, limit)
    assert model.dropped == 1 and int(model.held[0]) == 1
    assert second.tolist() == [[-0.5]]  # Polyak's step from −0.25 (−1.25), capped
    x = x - second  # −0.75, then 0.5 (Polyak's 1.75, capped), ...: one cut held from now on
    for _ in range(3):
        move = model.step(torch.tensor([0]), x.abs()[:, 0], torch.sign(x), -1.0, cap, limit)
        assert int(model.held[0]) == 1 and move.tolist() == [[0.5 * float(torch.sign(x))]]
        x = x - move


def test_beads_on_the_wedge_and_the_double_well():
    # descend() with cuts reaches a target on an analytic problem in fewer steps than Polyak's step, and a
    # bead whose target lies below the global minimum still settles at the minimum
    problem = landscape.make_problem("double_well")
    low = problem.minima[0]
    chain = torch.tensor([[-2.0, 1.0], [-0.6, 0.5], [0.0, -1.0]], dtype=torch.float64)
    beads, figures = descend(Counted(problem), chain, torch.tensor([1]), chain[1:2].clone(), -1.0, steps=5000,
                             patience=30, cuts=10)
    assert figures["reached"] == 0
    assert float(problem.loss(beads)[0]) == pytest.approx(float(problem.loss(low[None])[0]), abs=1e-5)


def test_strings_with_cuts_stay_above_the_rings_bound_and_report_them():
    problem = landscape.make_problem("ring")
    for cuts in (1, 10):
        path = landscape.connect(problem, *problem.minima, level=0.3, cuts=cuts)
        assert path.status == "connected" and path.info["cuts"] == cuts
        assert annulus_geodesic(0.3) <= path.normalized_length <= 1.5


@pytest.mark.parametrize("cuts", [0, -1, 1.5, True])
def test_bad_cuts_are_one_line_errors(cuts):
    problem = landscape.make_problem("ring")
    with pytest.raises(LandscapeError, match="cuts"):
        landscape.connect(problem, *problem.minima, level=0.3, cuts=cuts)
