"""A level within float32 rounding of a path's maximum is decided in float64, and the result says so.

Ground truths: a hill whose float32 rounding is exact arithmetic (L = (1 + q) − 1 with q = h·(1 − x²), h a
float32 number near 0.25, so float32 rounds 1 + h to a multiple of 2⁻²³ and float64 does not round it), and
a tanh network whose maximum sits at a grid point (the bump of ``test_proof``), searched for both directions
of its rounding.
"""

import math

import pytest
import torch

import landscape
from landscape.paths._rounding import ROUNDING_ABSOLUTE, ROUNDING_RELATIVE, rounding_margin
from landscape.paths.certify import dense_losses, refine_maximum
from landscape.paths.proof import prove_below
from landscape.problems import Problem
from landscape.problems.layout import Layout
from landscape.problems.losses import check_targets

ULP = 2.0 ** -23  # float32's spacing on [1, 2): 1 + q is rounded to it
#: h = 1/4 + 3·2⁻²⁵ rounds up in float32 (to 1/4 + 2⁻²³); h = 1/4 + 2⁻²⁵ rounds down (to 1/4).
UP, DOWN = 0.25 + 3 * 2.0 ** -25, 0.25 + 2.0 ** -25


class RoundedHill(Problem):
    """L(x) = (1 + h·(1 − x²)) − 1 on R: a hill of height h at x = 0, evaluated in the input's dtype.

    In float64 L(0) = h exactly; in float32 the sum 1 + h is rounded to a multiple of 2⁻²³ first. Bounds over
    a piece: h·(1 − min x²) + ``slack`` (sound; with a slack the pieces at the top never settle, so the proof
    evaluates the midpoint x = 0).
    """

    def __init__(self, height: float, slack: float = 2.0 ** -20):
        super().__init__("rounded_hill", {"height": height}, Layout(("theta",), ((1,),)))
        self.height, self.slack = height, slack

    def _evaluate(self, thetas, data):
        x = thetas[:, 0]
        return (1 + self.height * (1 - x * x)) - 1

    def _init_one(self, generator):
        return torch.zeros(1)

    def segment_bounds(self, start, end, *, split="train"):
        lo, hi = torch.minimum(start[:, 0], end[:, 0]), torch.maximum(start[:, 0], end[:, 0])
        low = torch.where((lo <= 0) & (hi >= 0), torch.zeros_like(lo), torch.minimum(lo * lo, hi * hi))
        return self.height * (1 - low) + self.slack


def hill_path(problem, ends=(-1.0, 1.0)):
    points = torch.tensor(ends, dtype=torch.float32)[:, None]
    return landscape.Path(points, problem.loss(points))


def test_the_hill_rounds_as_constructed():
    top = torch.zeros(1, 1)
    assert float(RoundedHill(UP).loss(top)) == 0.25 + ULP and float(RoundedHill(UP).loss(top.double())) == UP
    assert float(RoundedHill(DOWN).loss(top)) == 0.25 and float(RoundedHill(DOWN).loss(top.double())) == DOWN


def test_the_margin_is_the_documented_multiple_of_epsilon():
    assert rounding_margin(1.0, torch.float32) == ULP * (ROUNDING_RELATIVE + ROUNDING_ABSOLUTE) == ULP * 260
    assert rounding_margin(-2.0, torch.float32) == ULP * (2 * 256 + 4)
    assert rounding_margin(1.0, torch.float64) == 0.0


def test_a_float32_maximum_above_u_whose_float64_maximum_is_u_is_connected_in_float64():
    problem = RoundedHill(UP)
    path = landscape.certify(problem, hill_path(problem), UP, certificate="grid")
    assert path.status == "connected" and path.certificate == "grid" and path.info["decided_in"] == "float64"
    assert path.max_loss == UP and path.dense_argmax == pytest.approx(0.5, abs=1e-3)
    rounding = path.info["rounding"]
    assert rounding["max_loss_before"] == 0.25 + ULP > UP  # what float32 alone said: not_found
    assert ULP / 4 <= rounding["largest_change"] <= ULP / 2  # the top rounded up by ¼ ulp, the others by ½ at most
    # the grid (33), the zoom (2 passes × 16 around the one maximum, then its 2 neighbours and their parabola's
    # vertex), then the few points near u in float64
    assert 1 <= rounding["points"] <= 19
    assert path.evaluations == 33 + 2 * 16 + 3 + rounding["points"]


def test_a_method_s_own_grid_and_zoom_are_reused_and_the_zoom_is_run_again_only_near_u():
    """A string hands the certificate its last grid and zoomed peak (not the zoom's points): near u the zoom runs
    again to find the points within rounding; far from u nothing is evaluated."""
    problem = RoundedHill(UP)
    path = hill_path(problem)
    values = dense_losses(problem, path.points, 32)
    peak, where, _ = (float(v[0]) for v in refine_maximum(problem.loss, path.points[None], values[None], 32))
    near = landscape.certify(problem, path, UP, certificate="grid", values=values, zoomed=(peak, where))
    assert near.status == "connected" and near.info["decided_in"] == "float64" and near.max_loss == UP
    assert near.evaluations == 2 * 16 + 3 + near.info["rounding"]["points"]
    far = landscape.certify(problem, path, 0.3, certificate="grid", values=values, zoomed=(peak, where))
    assert far.status == "connected" and far.info["decided_in"] == "float32" and far.evaluations == 0


def test_a_float32_maximum_at_u_whose_float64_maximum_is_above_u_is_not_found_in_float64():
    problem = RoundedHill(DOWN)
    path = landscape.certify(problem, hill_path(problem), 0.25, certificate="grid")
    assert path.status == "not_found" and path.info["decided_in"] == "float64"
    assert path.max_loss == DOWN > 0.25 and path.info["rounding"]["max_loss_before"] == 0.25


def test_the_straight_segment_of_connect_is_decided_in_float64_too():
    """``connect``'s straight segment goes through ``settle`` without its grid: it is evaluated again there."""
    problem = RoundedHill(UP)
    ends = hill_path(problem).points
    path = landscape.connect(problem, ends[0], ends[1], method="linear", level=UP, certificate="grid")
    assert path.status == "connected" and path.info["decided_in"] == "float64" and path.max_loss == UP
    low = landscape.connect(problem, ends[0], ends[1], method="linear", level=0.25 + ULP / 8, certificate="grid")
    assert low.status == "not_found" and low.info["decided_in"] == "float64" and low.max_loss == UP


def test_far_from_u_float32_decides_and_nothing_is_evaluated_again():
    problem = RoundedHill(UP)
    for level, status in ((0.3, "connected"), (0.2, "not_found")):
        path = landscape.certify(problem, hill_path(problem), level, certificate="grid")
        assert path.status == status and path.info["decided_in"] == "float32" and "rounding" not in path.info
        assert path.max_loss == 0.25 + ULP and path.evaluations == 33 + 2 * 16 + 3
    exact = landscape.Path(hill_path(problem).points.double(), torch.tensor([0.0, 0.0], dtype=torch.float64))
    path = landscape.certify(problem, exact, UP, certificate="grid")  # float64 points: decided as evaluated
    assert path.status == "connected" and path.info["decided_in"] == "float64" and "rounding" not in path.info


def test_a_proof_is_not_refuted_by_a_midpoint_that_only_float32_puts_above_u():
    problem = RoundedHill(UP)
    points = torch.tensor([[-1.0], [3.0]])  # the first piece's midpoint (t = 1/4) is the top, x = 0
    proof = prove_below(problem, points, UP, budget=200)
    assert float(problem.loss(torch.zeros(1, 1))) > UP  # what float32 says there
    assert proof.status == "undecided" and proof.rechecked >= 1  # never settled (the slack), never refuted
    path = landscape.certify(problem, landscape.Path(points, problem.loss(points)), UP, budget=200)
    assert path.status == "connected" and path.certificate == "grid" and path.info["proof"]["status"] == "undecided"


def test_a_proof_is_refuted_in_float64_at_a_midpoint_float32_puts_below_u():
    problem = RoundedHill(DOWN)
    points = torch.tensor([[-1.0], [3.0]])
    level = 0.25 + 2.0 ** -26  # float32: 0.25 at the top, below; float64: DOWN, above
    proof = prove_below(problem, points, level, budget=200)
    assert proof.status == "refuted" and proof.rechecked >= 1 and proof.pieces == 2
    assert proof.witness == {"segment": 0, "t": 0.25, "loss": DOWN, "decided_in": "float64"}
    far = prove_below(problem, points, 0.2, budget=200)  # far below the top: float32 refutes
    assert far.status == "refuted" and far.witness["decided_in"] == "float32" and far.rechecked == 0


def test_a_proof_refutation_names_its_precision_in_the_path():
    problem = RoundedHill(DOWN, slack=0.0)
    points = torch.tensor([[-1.0], [3.0]])
    level = 0.25 + 2.0 ** -26
    path = landscape.certify(problem, landscape.Path(points, problem.loss(points)), level, budget=200)
    assert path.status == "not_found" and path.info["decided_in"] == "float64" and path.max_loss == DOWN


def bump(steep: float):
    """The tanh bump of ``test_proof`` (maximum 4·tanh²(steep·gap/2) at t = 1/2, a grid point), float32 knots."""
    from test_proof import bump_problem
    problem, points, peak = bump_problem(gap=0.4, steep=steep)
    points = points.float()
    top32 = dense_losses(problem, points, 32)[16]  # t = 1/2 in float32, as the grid evaluates it
    a, b = points.double()
    return problem, points, float(top32), float(problem.loss(a + 0.5 * (b - a)))


def float32_max(problem, points):
    values = dense_losses(problem, points, 32)
    return float(refine_maximum(problem.loss, points[None], values[None], 32)[0][0])


STEEPS = [3.0 + 0.037 * k for k in range(40)]


def test_a_network_whose_float32_top_rounds_above_u_is_connected_in_float64():
    for steep in STEEPS:
        problem, points, top32, top64 = bump(steep)
        if top32 > top64 * (1 + 1e-9):
            break
    else:
        pytest.fail("no steepness rounds the top up in float32")
    level = top64 * (1 + 1e-12)  # the float64 max, up to its position's rounding (~1e-14)
    path = landscape.certify(problem, landscape.Path(points, problem.loss(points)), level, certificate="grid")
    assert path.status == "connected" and path.info["decided_in"] == "float64"
    assert path.info["rounding"]["max_loss_before"] >= top32 > level >= path.max_loss >= top64
    assert path.info["rounding"]["largest_change"] < rounding_margin(level, torch.float32)


def test_a_network_whose_float32_top_rounds_below_u_is_not_found_in_float64():
    for steep in STEEPS:
        problem, points, top32, top64 = bump(steep)
        level = float32_max(problem, points)  # everything float32 evaluates is at or below it
        if level < top64 * (1 - 1e-9):
            break
    else:
        pytest.fail("no steepness keeps the float32 maximum below the float64 top")
    path = landscape.certify(problem, landscape.Path(points, problem.loss(points)), level, certificate="grid")
    assert path.status == "not_found" and path.info["decided_in"] == "float64"
    assert path.info["rounding"]["max_loss_before"] == level < top64 <= path.max_loss
    proven = landscape.certify(problem, landscape.Path(points, problem.loss(points)), top64 * (1 + 1e-3))
    assert proven.status == "connected" and proven.certificate == "bound" and proven.info["decided_in"] == "float64"


def test_the_exponential_loss_refuses_labels_other_than_plus_minus_one():
    with pytest.raises(landscape.LandscapeError) as err:
        check_targets("exponential", torch.tensor([0, 1, 1, 0]))
    message = str(err.value)
    assert "\n" not in message and "train targets hold 0;" in message and "y = 2 * y - 1" in message
    with pytest.raises(landscape.LandscapeError, match=r"test targets hold 0, 2, 3, 4, \.\.\.;"):
        check_targets("exponential", torch.arange(7.0) - 1, split="test")
    check_targets("exponential", torch.tensor([-1.0, 1.0, 1.0]))
    check_targets("mse", torch.tensor([0.0, 2.0]))  # labels of other losses are theirs
    check_targets(lambda out, y: out.sum(), torch.tensor([0.0]))  # a user's own loss is not checked
    problem = landscape.make_problem("exp_linear")
    for split in problem.splits:
        check_targets("exponential", problem.data(split)[1], split=split)
    assert math.isfinite(float(problem.loss(problem.init(torch.Generator().manual_seed(0)))))
