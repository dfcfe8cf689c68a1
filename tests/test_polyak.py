"""DSS beads descending by Polyak steps: the step itself, the stop when stuck, and what it does to strings."""

import math

import pytest
import torch

import landscape
from landscape import LandscapeError
from landscape.paths._common import Counted, polyak_step
from landscape.paths.beads import descend

from test_paths import annulus_geodesic


def test_polyak_step_lands_on_the_aimed_level_of_a_linear_function_by_the_shortest_move():
    gen = torch.Generator().manual_seed(0)
    a, x = torch.randn(3, 7, generator=gen, dtype=torch.float64), torch.randn(3, 7, generator=gen, dtype=torch.float64)
    c = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    f = lambda p: (a * p).sum(1) + c  # noqa: E731
    aim = -30.0  # under every f(x)
    step = polyak_step(f(x), a, aim, torch.full((3, 1), math.inf, dtype=torch.float64))
    assert f(x - step).tolist() == pytest.approx([aim] * 3, abs=1e-12)
    # the distance from x to the hyperplane {f = aim}: no shorter move reaches it
    assert step.norm(dim=1).tolist() == pytest.approx(((f(x) - aim) / a.norm(dim=1)).tolist(), rel=1e-12)
    # within the hyperplane orthogonal to a normal it still lands on the aim, moving orthogonally to it
    normal = torch.randn(3, 7, generator=gen, dtype=torch.float64)
    normal = normal / normal.norm(dim=1, keepdim=True)
    held = polyak_step(f(x), a, aim, torch.full((3, 1), math.inf, dtype=torch.float64), normal)
    assert f(x - held).tolist() == pytest.approx([aim] * 3, abs=1e-12)
    assert (held * normal).sum(1).abs().max() < 1e-12
    # capped: the same direction, the cap's length; a point already at or under its aim stays
    capped = polyak_step(f(x), a, aim, torch.full((3, 1), 0.1, dtype=torch.float64))
    assert capped.norm(dim=1).tolist() == pytest.approx([0.1] * 3, rel=1e-12)
    assert torch.allclose(capped / 0.1, step / step.norm(dim=1, keepdim=True), atol=1e-12)
    assert polyak_step(f(x), a, float(f(x).max()) + 1, torch.ones(3, 1, dtype=torch.float64)).abs().max() == 0


def test_polyak_halves_the_loss_gap_of_a_quadratic_each_step():
    # f = ½‖θ‖² aimed at 0: θ − (½‖θ‖²/‖θ‖²) θ = θ/2, so the loss falls 4× a step (Polyak 1987, §5.3)
    theta = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    for _ in range(5):
        loss = 0.5 * theta.pow(2).sum(1)
        new = theta - polyak_step(loss, theta, 0.0, torch.full((1, 1), math.inf, dtype=torch.float64))
        assert float(0.5 * new.pow(2).sum()) == pytest.approx(float(loss) / 4, rel=1e-12)
        theta = new


def test_a_bead_with_an_unreachable_target_stops_when_stuck_at_the_minimum():
    # the double well's global minimum is −0.3054; a target of −1 lies below it. Polyak steps aim under
    # the target and would jump about the minimum; halving the step whenever the loss rises lets the
    # bead settle, and once its gap to the target stops closing it stops (patience), at its lowest point
    problem = landscape.make_problem("double_well")
    low = problem.minima[0]
    chain = torch.tensor([[-2.0, 1.0], [-0.6, 0.5], [0.0, -1.0]], dtype=torch.float64)
    counted = Counted(problem)
    beads, figures = descend(counted, chain, torch.tensor([1]), chain[1:2].clone(), -1.0, steps=5000, patience=30)
    assert figures["reached"] == 0 and figures["descent_steps"] < 1000
    assert float(problem.loss(beads)[0]) == pytest.approx(float(problem.loss(low[None])[0]), abs=1e-5)
    assert float((beads[0] - low).norm()) < 1e-2
    # without patience it spends every step
    _, every = descend(Counted(problem), chain, torch.tensor([1]), chain[1:2].clone(), -1.0, steps=300)
    assert every["descent_steps"] == 300


def test_both_descents_connect_the_ring_above_its_closed_form_bound():
    # the ring at u = 0.3: any path below u avoids the disk where (r² − 1)² > u, which bounds the
    # normalized length from below (annulus_geodesic). In the plane the first bead starts on the hill
    # top, where the gradient vanishes: Polyak's capped first step goes wherever the jitter points and
    # its string is 6% longer than Adam's here (1.389 vs 1.311), for 40% fewer evaluations.
    problem = landscape.make_problem("ring")
    paths = {d: landscape.connect(problem, *problem.minima, level=0.3, descent=d) for d in ("polyak", "adam")}
    for descent, path in paths.items():
        assert path.status == "connected" and path.info["descent"] == descent
        assert annulus_geodesic(0.3) <= path.normalized_length <= 1.5
    assert paths["polyak"].evaluations < paths["adam"].evaluations


@pytest.mark.parametrize("options, message", [
    ({"descent": "lbfgs"}, "unknown descent 'lbfgs'"),
    ({"aim": 1.5}, "0 <= aim <= 1"),
    ({"max_step": 0.0}, "max_step"),
    ({"patience": 0}, "patience"),
])
def test_bad_descent_options_are_one_clear_error(options, message):
    problem = landscape.make_problem("ring")
    with pytest.raises(LandscapeError) as err:
        landscape.connect(problem, *problem.minima, level=0.3, **options)
    assert message in str(err.value) and "\n" not in str(err.value)
