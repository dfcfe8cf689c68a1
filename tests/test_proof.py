"""Proofs that a path stays below a level: sound bounds, and branch and bound that never claims too much.

Ground truths: networks whose loss along a segment is known in closed form (a narrow ReLU hat, a smooth
tanh bump with its maximum exactly at u), and dense evaluation of the embedded networks.
"""

import math

import pytest
import torch
from torch import nn

import landscape
from landscape.paths.proof import DEFAULT_BUDGET, PROOF_WORK, default_budget, prove_below
from landscape.problems.memory import point_bytes
from landscape.problems import Problem
from landscape.problems.layout import Layout

CASES = [("digits_mlp", {"width": 16, "depth": 2}), ("quadratic_regression", {}), ("moons_mlp", {}),
         ("teacher_student", {"activation": "relu"}), ("teacher_student", {"activation": "quadratic"}),
         ("deep_linear", {}), ("exp_linear", {"dim": 5, "n_train": 40})]


@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}-{'-'.join(map(str, p.values()))}" for n, p in CASES])
def test_bounds_hold_on_random_segments_and_tighten_as_they_shrink(name, params):
    problem = landscape.make_problem(name, **params)
    g = torch.Generator().manual_seed(1)
    thetas = problem.init(g, n=6).double() * 2
    t = torch.linspace(0, 1, 257, dtype=torch.float64)
    gaps = []
    for frac in (1.0, 0.1, 0.01):
        a, b = thetas[:3], thetas[:3] + frac * (thetas[3:] - thetas[:3])
        bounds = problem.segment_bounds(a, b)
        dense = torch.stack([problem.loss(a[k] + t[:, None] * (b[k] - a[k])) for k in range(3)]).max(1).values
        assert bounds.shape == (3,) and bool((bounds >= dense).all()), (frac, bounds, dense)
        gaps.append(float(((bounds - dense) / dense.abs().clamp_min(1e-12)).max()))
    assert gaps[2] < 1e-3 and gaps[2] <= gaps[0] + 1e-8  # second order in the length (1e-9: rounding guard)


def hat_problem(centre: float, width: float = 0.02, height: float = 9.0):
    """Linear–ReLU–Linear, one sample x = 1, y = 0, MSE; along the segment from ``start`` to ``end`` the loss
    is a hat of the given height and width (in t) centred at ``centre``, 0 elsewhere: both ends are minima."""
    delta = width / 2
    slope = math.sqrt(height) / delta
    model = nn.Sequential(nn.Linear(1, 3), nn.ReLU(), nn.Linear(3, 1))
    problem = landscape.from_module(model, (torch.ones(1, 1), torch.zeros(1, 1)), "mse")
    offsets = torch.tensor([0.0, delta, 2 * delta]) + centre - delta
    ends = []
    for t in (0.0, 1.0):
        params = {"0.weight": torch.zeros(3, 1), "0.bias": slope * (t - offsets),
                  "2.weight": torch.tensor([[1.0, -2.0, 1.0]]), "2.bias": torch.zeros(1)}
        ends.append(problem.layout.flatten({k: params[k] for k in problem.layout.names}))
    return problem, ends[0], ends[1]


@pytest.mark.parametrize("centre", [0.05 + 0.09 * k for k in range(11)])
def test_a_narrow_relu_hat_is_never_proven_below_it(centre):
    problem, a, b = hat_problem(centre)
    assert problem.loss(torch.stack([a, a + centre * (b - a), b])).tolist() == pytest.approx([0, 9, 0], abs=1e-4)
    proof = prove_below(problem, torch.stack([a, b]), 1.0)
    assert proof.status == "refuted" and proof.witness["loss"] > 1.0
    assert abs(proof.witness["t"] - centre) < 0.01
    assert prove_below(problem, torch.stack([a, b]), 9.5).status == "proven"


def bump_problem(gap: float = 0.4, steep: float = 3.0):
    """Linear–tanh–Linear, x = 1, y = 0, MSE: along the segment f(t) = tanh(s(t − c₁)) − tanh(s(t − c₂)),
    a smooth bump whose maximum is at t = (c₁ + c₂)/2, the loss 4·tanh²(s·gap/2) exactly there."""
    model = nn.Sequential(nn.Linear(1, 2), nn.Tanh(), nn.Linear(2, 1))
    problem = landscape.from_module(model, (torch.ones(1, 1), torch.zeros(1, 1)), "mse")
    centres = torch.tensor([0.5 - gap / 2, 0.5 + gap / 2], dtype=torch.float64)
    ends = []
    for t in (0.0, 1.0):
        params = {"0.weight": torch.zeros(2, 1, dtype=torch.float64), "0.bias": steep * (t - centres),
                  "2.weight": torch.tensor([[1.0, -1.0]], dtype=torch.float64),
                  "2.bias": torch.zeros(1, dtype=torch.float64)}
        ends.append(problem.layout.flatten({k: params[k] for k in problem.layout.names}))
    peak = 4 * math.tanh(steep * gap / 2) ** 2
    return problem, torch.stack(ends), peak


def test_a_smooth_saddle_is_proven_just_above_it_and_never_at_or_below():
    problem, points, peak = bump_problem()
    assert float(problem.loss(points.mean(0))) == pytest.approx(peak, rel=1e-12)
    above = prove_below(problem, points, peak * (1 + 1e-3))
    assert above.status == "proven" and peak <= above.bound <= peak * (1 + 1e-3)
    assert prove_below(problem, points, peak * (1 - 1e-4)).status == "refuted"
    assert prove_below(problem, points, peak, budget=2000).status in ("undecided", "refuted")


def test_the_default_budget_shrinks_with_the_cost_of_a_point_and_the_proof_says_it():
    ring, cnn = landscape.make_problem("ring"), landscape.make_problem("digits_cnn")
    assert default_budget(ring) == DEFAULT_BUDGET  # 32 bytes a point: the full budget
    need, _ = point_bytes(cnn)
    assert default_budget(cnn) == PROOF_WORK // need < DEFAULT_BUDGET
    problem, points, peak = bump_problem()
    tight = prove_below(problem, points, peak * (1 + 1e-9))  # too close to settle: the budget runs out
    assert tight.status == "undecided" and tight.budget == default_budget(problem) and tight.pieces <= tight.budget
    assert tight.summary()["budget"] == tight.budget


class StripProblem(Problem):
    """L(θ) = θ₀² + θ₁², except NaN on the strip 0.50 < θ₀ < 0.51; bounds that are honest about the strip."""

    def __init__(self):
        super().__init__("strip", {}, Layout(("theta",), ((2,),)))

    def _evaluate(self, thetas, data):
        loss = thetas.pow(2).sum(-1)
        inside = (thetas[:, 0] > 0.50) & (thetas[:, 0] < 0.51)
        return torch.where(inside, torch.full_like(loss, float("nan")), loss)

    def _init_one(self, generator):
        return torch.zeros(2)

    def segment_bounds(self, start, end, *, split="train"):
        lo, hi = torch.minimum(start[:, 0], end[:, 0]), torch.maximum(start[:, 0], end[:, 0])
        touches = (hi > 0.50) & (lo < 0.51)
        top = torch.maximum(start.pow(2).sum(-1), end.pow(2).sum(-1))  # convex: the max is at an end
        return torch.where(touches, torch.full_like(top, float("nan")), top)


def test_a_non_finite_strip_between_checks_refutes_the_path():
    problem = StripProblem()
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    proof = prove_below(problem, points, 2.0)
    assert proof.status == "refuted" and math.isnan(proof.witness["loss"])
    assert 0.50 < proof.witness["t"] < 0.51
    ok = prove_below(problem, torch.tensor([[0.0, 0.0], [0.4, 0.3]], dtype=torch.float64), 0.3)
    assert ok.status == "proven" and ok.bound == pytest.approx(0.25, rel=1e-6)


def test_problems_without_bounds_say_so():
    problem = landscape.make_problem("himmelblau")
    proof = prove_below(problem, torch.tensor([[3.0, 2.0], [-2.805118, 3.131312]]), 200.0)
    assert proof.status == "unsupported" and proof.pieces == 0


def dense_max(problem, points, per_segment=20_000):
    s = torch.linspace(0, 1, per_segment + 1, dtype=torch.float64)[:, None]
    return max(float(problem.loss(a + s * (b - a)).max()) for a, b in zip(points[:-1], points[1:]))


@pytest.mark.parametrize("method", ["linear", "string"])
def test_connect_never_claims_a_path_through_a_narrow_hat(method):
    """The straight path between two zero-loss minima crosses a ReLU hat 2% of the chord wide and 9 high; at
    u = 1 nothing may come back ``connected`` unless it truly stays below 1 (checked 20,000 points a segment)."""
    for centre in (0.05 + 0.09 * k for k in range(11)):
        problem, a, b = hat_problem(centre)
        path = landscape.connect(problem, a, b, method=method, level=1.0)
        assert path.certificate in ("bound", "grid")
        if path.status == "connected":
            assert path.certificate == "bound" and dense_max(problem, path.points) <= 1.0
        else:
            assert path.max_loss > 1.0  # the point that refutes it was evaluated
        grid = landscape.certify(problem, landscape.paths.linear_path(problem, a, b), 1.0, certificate="grid")
        assert grid.certificate == "grid" and grid.spacing == pytest.approx(float((b - a).norm()) / 32)


def test_certify_proves_the_main_kind_of_path_and_says_so():
    """A trained pair of a small digits MLP: the string path is proven below the default level, its bound lies
    between the dense max and the level, and the path file and summary carry the certificate."""
    problem = landscape.make_problem("digits_mlp", width=16, depth=1)
    minima = landscape.train(problem, [0, 1], steps=600, lr=0.01)
    path = landscape.connect(problem, minima.thetas[0], minima.thetas[1])
    assert path.status == "connected" and path.certificate == "bound"
    assert path.max_loss <= path.bound <= path.level and path.info["proof"]["status"] == "proven"
    assert path.summary()["certificate"] == "bound" and path.summary()["bound"] == path.bound
    grid = landscape.certify(problem, path, path.level, certificate="grid")
    assert grid.certificate == "grid" and grid.bound is None and "proof" not in grid.info


def test_a_proof_is_asked_only_of_problems_that_can_give_one():
    ring = landscape.make_problem("ring")
    path = landscape.connect(ring, ring.minima[0], ring.minima[1], level=0.3)
    assert path.status == "connected" and path.certificate == "grid" and path.spacing > 0
    with pytest.raises(landscape.LandscapeError, match="cannot bound its loss"):
        landscape.connect(ring, ring.minima[0], ring.minima[1], level=0.3, certificate="bound")


def test_a_non_finite_strip_makes_the_path_not_found_not_an_error():
    problem = StripProblem()
    points = torch.tensor([[0.0, 0.0], [0.505, 0.0], [1.0, 0.0]], dtype=torch.float64)
    path = landscape.certify(problem, landscape.Path(points, problem.loss(points)), 2.0)
    assert path.status == "not_found" and math.isinf(path.max_loss) and path.info["non_finite_at"] > 0


class StripWells(Problem):
    """Two wells, L = (x − 0.2)²(x − 0.8)² + y², minima at (0.2, 0) and (0.8, 0); NaN on the strip 0.5 < x < 0.51,
    which every path between the wells crosses. No bounds: certified by the dense check."""

    def __init__(self):
        super().__init__("strip_wells", {}, Layout(("theta",), ((2,),)))

    def _evaluate(self, thetas, data):
        x, y = thetas[:, 0], thetas[:, 1]
        loss = (x - 0.2) ** 2 * (x - 0.8) ** 2 + y * y
        return torch.where((x > 0.50) & (x < 0.51), torch.full_like(loss, float("nan")), loss)

    def _init_one(self, generator):
        return torch.zeros(2)


def test_valleys_go_on_past_a_pair_whose_paths_meet_a_nan_region():
    """The wells are joined by no path (each crosses the NaN strip): two valleys, counted without an error."""
    problem = StripWells()
    minima = torch.tensor([[0.2, 0.0], [0.8, 0.0]], dtype=torch.float64)
    graph, report = landscape.find_valleys(problem, minima, levels=[1.0], attempts=1,
                                           generator=torch.Generator().manual_seed(0))
    (row,) = report["levels"]
    assert row["n_valleys"] == 2 and report["failed"] >= 1


@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_the_leaky_relu_relaxation_holds_every_value_it_can_take_and_is_the_parallel_chord(alpha):
    from landscape.problems.bounds import leaky_relu
    g = torch.Generator().manual_seed(0)
    zc = torch.randn(400, dtype=torch.float64, generator=g)
    zs = torch.randn(400, dtype=torch.float64, generator=g) * 0.5
    zr = torch.rand(400, dtype=torch.float64, generator=g) * 0.3
    # edges: a point (ρ = 0) at 0, above and below 0; an interval ending exactly at 0 from each side
    zc[:5], zs[:5], zr[:5] = torch.tensor([0.0, 1.0, -1.0, 0.5, -0.5]), 0.0, 0.0
    zs[3:5], zr[3:5] = torch.tensor([0.25, 0.25]), torch.tensor([0.25, 0.25])
    oc, os_, orr = leaky_relu(alpha)(zc, zs, zr)
    s = torch.linspace(-1, 1, 41, dtype=torch.float64)[:, None]
    e = torch.linspace(-1, 1, 11, dtype=torch.float64)[:, None, None] * zr
    z = zc + s * zs + e  # [11, 41, 400]: every value the first-order model allows
    value = torch.where(z > 0, z, alpha * z)
    model = oc + s * os_
    assert bool((value >= model - orr - 1e-12).all()) and bool((value <= model + orr + 1e-12).all())
    # where the sign can change, the chord through (l, σ(l)) and (u, σ(u)) and its parallel through 0
    rho = zs.abs() + zr
    lo, hi = zc - rho, zc + rho
    cross = (lo < 0) & (hi > 0)
    lam = alpha + (1 - alpha) * hi / (hi - lo)
    mu = (1 - alpha) * (-lo * hi / (hi - lo))
    assert torch.allclose(os_[cross], lam[cross] * zs[cross], atol=1e-14)
    assert torch.allclose(orr[cross], lam[cross] * zr[cross] + mu[cross] / 2, atol=1e-14)
    fixed = ~cross  # exact: slope 1 or α, no remainder added
    slope = torch.where(lo >= 0, torch.ones_like(lo), torch.full_like(lo, alpha))
    assert torch.allclose(orr[fixed], slope[fixed] * zr[fixed], atol=1e-15)
