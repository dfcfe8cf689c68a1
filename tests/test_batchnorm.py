"""BatchNorm along paths: statistics recomputed at every point from the training data, or frozen."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import landscape
from landscape import LandscapeError


def bn_problem(bn=None):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    y = x[:, :1] * x[:, 1:2] + 0.5 * x[:, 2:]
    xt = torch.randn(32, 3, generator=g) * 2 + 1  # a test split with other statistics
    yt = xt[:, :1] * xt[:, 1:2] + 0.5 * xt[:, 2:]
    model = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 1))
    with torch.no_grad():  # running statistics that are not those of any θ
        model[1].running_mean.fill_(0.3)
        model[1].running_var.fill_(2.0)
    return landscape.from_module(model, (x, y), "mse", test_data=(xt, yt), bn=bn), model, (x, y), (xt, yt)


def reference(model, problem, theta, data, train, policy):
    """torch itself: load θ; for "recompute" reset the running statistics and run the training data once
    in training mode with cumulative averaging (momentum=None); then evaluation mode."""
    m = copy.deepcopy(model).double()
    with torch.no_grad():
        for name, value in problem.layout.unflatten(theta).items():
            m.get_parameter(name).copy_(value)
        if policy == "recompute":
            for layer in m.modules():
                if isinstance(layer, nn.BatchNorm1d):
                    layer.reset_running_stats()
                    layer.momentum = None
            m.train()
            m(train[0].double())
        m.eval()
        return F.mse_loss(m(data[0].double()), data[1].double())


@pytest.mark.parametrize("policy", landscape.BN_POLICIES)
@pytest.mark.parametrize("split", ["train", "test"])
def test_losses_match_torch(policy, split, gen):
    problem, model, train, test = bn_problem(policy)
    thetas = problem.init(gen, n=4, dtype=torch.float64)
    got = problem.loss(thetas, split=split)
    want = torch.stack([reference(model, problem, t, train if split == "train" else test, train, policy)
                        for t in thetas])
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_recompute_and_frozen_differ_and_gradients_are_exact(gen):
    problem, model, train, _ = bn_problem()
    assert problem.bn == "recompute"  # the default for a model with BatchNorm (Garipov et al. 2018)
    thetas = problem.init(gen, n=3, dtype=torch.float64)
    recomputed = problem.loss(thetas)
    problem.bn = "frozen"
    frozen = problem.loss(thetas)
    assert (recomputed - frozen).abs().min() > 1e-3
    problem.bn = "recompute"
    loss, grad = problem.loss_and_grad(thetas)
    for i, t in enumerate(thetas):
        t = t.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(problem.loss(t[None])[0], t)
        torch.testing.assert_close(grad[i], g, rtol=1e-9, atol=1e-12)


def test_to_module_carries_the_recomputed_statistics(gen):
    problem, model, train, _ = bn_problem()
    theta = problem.init(gen, dtype=torch.float64)
    m = problem.to_module(theta).double().eval()
    with torch.no_grad():
        assert float(F.mse_loss(m(train[0].double()), train[1].double())) == pytest.approx(
            float(problem.loss(theta)), rel=1e-5)
        h = m[0](train[0].double())
    torch.testing.assert_close(m[1].running_mean, h.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m[1].running_var, h.var(0, unbiased=True), rtol=1e-5, atol=1e-6)


def test_a_path_of_a_batchnorm_network_reports_its_policy(gen):
    problem, *_ = bn_problem()
    a, b = problem.init(gen, n=2, dtype=torch.float64)
    path = landscape.connect(problem, a, b, method="linear", level=10.0)
    assert path.info["bn"] == "recompute"
    torch.testing.assert_close(path.losses, problem.loss(path.points))
    problem.bn = "frozen"
    frozen = landscape.connect(problem, a, b, method="linear", level=10.0)
    assert frozen.info["bn"] == "frozen" and frozen.max_loss != pytest.approx(path.max_loss)


def test_policy_errors():
    with pytest.raises(LandscapeError, match="unknown BatchNorm policy"):
        bn_problem("running")
    plain = landscape.make_problem("moons_mlp", width=4, n_train=20, n_test=10)
    assert plain.bn is None
    with pytest.raises(LandscapeError, match="has no BatchNorm layers"):
        plain.bn = "frozen"
