"""Symmetries derived from the module: every group element keeps the network's function.

Ground truths: a permutation of hidden units, and a positive rescaling of units followed by
positively homogeneous operations, leave the outputs unchanged; the least-norm representative of
a rescaling orbit balances every unit (‖in‖² = k‖out‖²) and does not depend on where in the orbit
one starts.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

import landscape
from landscape import LandscapeError, NetworkProblem

from conftest import SMALL

NETWORKS = [n for n in landscape.PROBLEMS if isinstance(landscape.make_problem(n, **SMALL[n]), NetworkProblem)]

#: Hidden layers and degree of homogeneity of the embedded networks, known from their definitions.
EXPECTED = {
    "quadratic_regression": ([4, 4], None), "digits_mlp": ([16, 16], 1), "moons_mlp": ([8, 8], 1),
    "teacher_student": ([5], 1), "deep_linear": ([8, 8], 1), "venturi_relu": ([3], 1), "exp_linear": ([], None),
    "digits_cnn": ([2, 4], 1),
    # the residual streams (stem + conv2, then projection + conv2) are tied by their skips: permutations only
    "digits_resnet": ([2, 2, 4, 4], [None, 1, None, 1]),
}


def outputs(problem, theta, x=None):
    x = problem.data("train")[0] if x is None else x
    with torch.no_grad():
        return problem.to_module(theta)(x)


def conv_net():
    """Conv → BatchNorm → ReLU → pool → flatten → Linear → square → Linear → log-softmax."""
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 3 * 3, 5), landscape.problems.Square(), nn.Linear(5, 3), nn.LogSoftmax(-1))
    x = torch.randn(40, 1, 8, 8, generator=g)
    return landscape.from_module(model, (x, torch.randint(0, 3, (40,), generator=g)), "cross_entropy")


class Functional(nn.Module):
    """A module written with functions and methods, traced by torch.fx."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 3)
        self.fc = nn.Linear(3 * 4, 6)
        self.norm = nn.LayerNorm(6)
        self.act = nn.PReLU(6)
        self.out = nn.Linear(6, 2)

    def forward(self, x):
        h = F.relu(self.conv(x)).view(x.shape[0], -1)
        h = self.act(self.norm(self.fc(h)))
        return self.out(torch.tanh(h) * 2.0)


def functional_net():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(30, 2, 6, generator=g)
    return landscape.from_module(Functional(), (x, torch.randn(30, 2, generator=g)), "mse")


@pytest.mark.parametrize("name", [n for n in NETWORKS if n != "modadd_transformer"])  # tests/test_transformer_symmetry.py
def test_groups_of_the_embedded_networks(name):
    problem = landscape.make_problem(name, **SMALL[name])
    sym = landscape.symmetry(problem)
    sizes, degree = EXPECTED[name]
    if name == "teacher_student":
        sizes = [SMALL[name]["width"]]
    assert [g.size for g in sym.groups] == sizes
    degrees = degree if isinstance(degree, list) else [degree] * len(sizes)
    assert [g.degree for g in sym.groups] == degrees
    for g in sym.groups:  # the producing rows and the consuming columns, sized as the layout says
        shapes = dict(zip(problem.layout.names, problem.layout.shapes))
        producers = {a.name for a in g.axes if a.role in ("head", "passive") and a.axis == 0}
        tails = [a for a in g.axes if a.role == "tail"]
        assert {f"{name}.weight" for name in g.name.split("+")} <= producers and tails
        assert len(tails) == 1 or g.degree is None  # read twice: no rescaling
        assert all(shapes[a.name][a.axis] == g.size * a.block for a in g.axes)


def test_groups_of_a_conv_net_and_a_functional_module():
    problem = conv_net()
    sym = landscape.symmetry(problem)
    first, second = sym.groups
    assert (first.size, first.degree, second.size, second.degree) == (4, 1, 5, 2)
    roles = {(a.name, a.role): a for a in first.axes}
    assert roles[("1.weight", "head")] and roles[("0.weight", "passive")]  # BatchNorm's affine is the head
    # statistics recomputed from θ (the default policy) are not a constraint; stored ones are
    assert roles[("5.weight", "tail")].block == 9 and ("1.running_mean", "buffer") not in roles
    problem.bn = "frozen"
    assert ("1.running_mean", "buffer") in {(a.name, a.role) for a in landscape.symmetry(problem).groups[0].axes}
    sym = landscape.symmetry(functional_net())
    assert [(g.name, g.size, g.degree) for g in sym.groups] == [("conv", 3, 1), ("fc", 6, None)]
    assert {(a.name, a.role) for a in sym.groups[1].axes} >= {("norm.weight", "head"), ("act.weight", "passive"),
                                                               ("fc.weight", "passive"), ("out.weight", "tail")}


def random_element(problem, seed, rescale=True):
    sym = landscape.symmetry(problem)
    perms, scales = sym.random(generator=torch.Generator().manual_seed(seed), rescale=rescale)
    return sym, perms, scales


@pytest.mark.parametrize("make", [lambda: landscape.make_problem(n, **SMALL[n]) for n in NETWORKS]
                         + [conv_net, functional_net], ids=NETWORKS + ["conv", "functional"])
def test_every_group_element_keeps_the_function(make):
    problem = make()
    theta = problem.init(torch.Generator().manual_seed(5), dtype=torch.float64)
    sym, perms, scales = random_element(problem, 7, rescale=getattr(problem, "weight_decay", 0) == 0)
    moved = sym.transform(theta, perms, scales)
    if sym.groups:
        assert not torch.equal(moved, theta)
    torch.testing.assert_close(outputs(problem, moved.float()), outputs(problem, theta.float()), rtol=1e-5, atol=1e-5)
    assert float(problem.loss(moved)) == pytest.approx(float(problem.loss(theta)), rel=1e-10, abs=1e-12)
    back = sym.transform(moved, *sym.inverse(perms, scales))
    torch.testing.assert_close(back, theta, rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(["digits", "conv"]))
def test_loss_is_invariant_to_every_permutation(seed, which):
    problem = PROPERTY[which]
    theta = problem.init(torch.Generator().manual_seed(seed % 1000), n=3)
    sym, perms, _ = random_element(problem, seed, rescale=False)
    moved = sym.permute(theta, perms)
    torch.testing.assert_close(problem.loss(moved), problem.loss(theta), rtol=1e-5, atol=1e-7)
    # permutations compose: first p, then q is p[q]; the inverse undoes exactly
    _, other, _ = random_element(problem, seed + 1, rescale=False)
    assert torch.equal(sym.permute(moved, other), sym.permute(theta, {k: perms[k][other[k]] for k in perms}))
    assert torch.equal(sym.permute(moved, sym.inverse(perms)[0]), theta)


PROPERTY = {"digits": landscape.make_problem("digits_mlp", width=12, depth=3), "conv": conv_net()}


def test_batched_permutations_act_row_by_row():
    problem = landscape.make_problem("moons_mlp", width=6, depth=2)
    sym = landscape.symmetry(problem)
    thetas = problem.init(torch.Generator().manual_seed(0), n=3, dtype=torch.float64)
    rows = [random_element(problem, s) for s in range(3)]
    perms = {g.name: torch.stack([r[1][g.name] for r in rows]) for g in sym.groups}
    scales = {g.name: torch.stack([r[2][g.name] for r in rows]) for g in sym.groups}
    together = sym.transform(thetas, perms, scales)
    for i, (_, p, s) in enumerate(rows):
        torch.testing.assert_close(together[i], sym.transform(thetas[i], p, s), rtol=0, atol=0)


@pytest.mark.parametrize("name, params", [("digits_mlp", {"width": 16, "depth": 3}),
                                          ("teacher_student", {"activation": "quadratic", "n_train": 50})])
def test_balance_is_the_least_norm_point_of_the_orbit(name, params):
    problem = landscape.make_problem(name, **params)
    sym = landscape.symmetry(problem)
    theta = problem.init(torch.Generator().manual_seed(2), dtype=torch.float64)
    balanced, scales, sweeps = sym.balance(theta)
    torch.testing.assert_close(balanced, sym.rescale(theta, scales))
    assert balanced.norm() <= theta.norm() and 1 < sweeps < 10_000
    named = problem.layout.unflatten(balanced)
    for g in sym.groups:  # stationarity: ‖in_j‖² = k ‖out_j‖² for every unit
        incoming = sum(named[a.name].movedim(a.axis, 0).reshape(g.size, -1).pow(2).sum(1)
                       for a in g.axes if a.role == "head")
        outgoing = sum(named[a.name].movedim(a.axis, 0).reshape(g.size, -1).pow(2).sum(1)
                       for a in g.axes if a.role == "tail")
        torch.testing.assert_close(incoming, g.degree * outgoing, rtol=1e-8, atol=0)
    # canonical: the same point from anywhere in the orbit
    _, _, random_scales = random_element(problem, 9)
    again, _, _ = sym.balance(sym.rescale(theta, random_scales))
    torch.testing.assert_close(again, balanced, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(outputs(problem, balanced.float()), outputs(problem, theta.float()), rtol=1e-5,
                               atol=1e-6)


def test_recomputed_batchnorm_statistics_follow_any_permutation():
    problem = conv_net()
    assert problem.bn == "recompute"
    sym = landscape.symmetry(problem)
    assert sym.exchangeable("0") is None
    theta = problem.init(torch.Generator().manual_seed(0))
    any_swap = sym.permute(theta, {"0": torch.tensor([1, 0, 2, 3])})
    torch.testing.assert_close(problem.loss(any_swap), problem.loss(theta), rtol=1e-5, atol=1e-6)


def test_frozen_batchnorm_statistics_restrict_the_permutations():
    problem = conv_net()
    problem.bn = "frozen"
    bn = problem.module().get_submodule("1")
    bn.running_mean.copy_(torch.tensor([0.0, 0.5, 0.0, 0.5]))  # units 0, 2 alike; 1, 3 alike
    sym = landscape.symmetry(problem)
    mask = sym.exchangeable("0")
    assert mask.tolist() == [[True, False, True, False], [False, True, False, True]] * 2
    theta = problem.init(torch.Generator().manual_seed(0))
    swapped = sym.permute(theta, {"0": torch.tensor([2, 3, 0, 1])})  # allowed: equal statistics trade
    torch.testing.assert_close(outputs(problem, swapped), outputs(problem, theta), rtol=1e-5, atol=1e-6)
    forbidden = sym.permute(theta, {"0": torch.tensor([1, 0, 2, 3])})  # θ cannot carry the statistics along
    assert (outputs(problem, forbidden) - outputs(problem, theta)).abs().max() > 1e-3
    for method in ("weight", "activation"):
        result = landscape.align(problem, theta, swapped, method=method)
        assert result.permutations["0"].tolist() == [2, 3, 0, 1]
        torch.testing.assert_close(result.theta, theta, rtol=1e-5, atol=1e-6)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 1)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)) + x)


class Concatenated(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(6, 1)

    def forward(self, x):
        return self.b(torch.cat([torch.relu(self.a(x)), x], 1))


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 1)

    def forward(self, x):
        return self.b(torch.relu(self.a(torch.relu(self.a(x)))))


class Direct(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.w = nn.Linear(3, 4), nn.Parameter(torch.ones(1, 4))

    def forward(self, x):
        return F.linear(torch.relu(self.a(x)), self.w)


class Softmaxed(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 1)

    def forward(self, x):
        return self.b(torch.cumsum(self.a(x), dim=1))


@pytest.mark.parametrize("model, message", [
    (Concatenated(), "other than an addition"), (Shared(), "called twice"),
    (Direct(), "reads a parameter"), (Softmaxed(), "not known to commute"),
])
def test_structures_that_are_not_understood_are_refused(model, message):
    problem = landscape.from_module(model, (torch.randn(10, 3), torch.randn(10, 1)), "mse")
    with pytest.raises(LandscapeError, match=message):
        landscape.symmetry(problem)


def test_units_added_to_the_input_cannot_move():
    """relu(a(x)) + x: a's units are tied to the input's coordinates by the skip, so no permutation is a symmetry."""
    problem = landscape.from_module(Residual(), (torch.randn(10, 3), torch.randn(10, 1)), "mse")
    assert landscape.symmetry(problem).groups == ()


def test_analytic_problems_have_no_network_symmetry():
    with pytest.raises(LandscapeError, match="not a network"):
        landscape.symmetry(landscape.make_problem("himmelblau"))
    with pytest.raises(LandscapeError, match="no rescaling symmetry"):
        sym = landscape.symmetry(landscape.make_problem("quadratic_regression", n_train=20))
        sym.rescale(torch.zeros(sym.layout.dim), {"0": torch.ones(4)})


@pytest.mark.parametrize("method", ["weight", "activation"])
@pytest.mark.parametrize("make", [conv_net, functional_net], ids=["conv", "functional"])
def test_copies_of_conv_and_functional_modules_are_recovered(make, method):
    problem = make()
    theta = problem.init(torch.Generator().manual_seed(3), dtype=torch.float64)
    sym, perms, scales = random_element(problem, 11)
    result = landscape.align(problem, theta, sym.transform(theta, perms, scales), method=method)
    inverse = sym.inverse(perms)[0]
    assert all(torch.equal(result.permutations[k], inverse[k]) for k in inverse)
    torch.testing.assert_close(result.theta, theta, rtol=1e-9, atol=1e-12)
