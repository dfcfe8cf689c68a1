"""Implicit regularization (study 4): the max-margin SVM and the dynamics that converge to it."""

import math

import numpy as np
import pytest
import torch

import landscape
from landscape.minima.margin import log_clock
from landscape.studies.tasks import implicit_bias as implicit_bias_task


@pytest.fixture(scope="module")
def default_data():
    problem = landscape.make_problem("exp_linear")  # d = 50, 200 training points
    x, y = problem.data("train")
    return problem, x.double(), y.double()


def test_max_margin_closed_form():
    # z = y x: constraints w1 >= 1, w2 >= 1, 2 w1 + 2 w2 >= 1 -> w = (1, 1), gamma = 1/sqrt(2)
    x = np.array([[1.0, 0.0], [0.0, -1.0], [2.0, 2.0], [-3.0, -1.0]])
    y = np.array([1.0, -1.0, 1.0, -1.0])
    mm = landscape.max_margin(x, y)
    np.testing.assert_allclose(mm.w, [1.0, 1.0], atol=1e-12)
    assert mm.margin == pytest.approx(1 / math.sqrt(2), abs=1e-12)
    assert sorted(mm.support.tolist()) == [0, 1]
    np.testing.assert_allclose(mm.alpha[[0, 1]], [1.0, 1.0], atol=1e-12)  # w = α1 z1 + α2 z2
    assert mm.kkt_residual < 1e-12


def test_max_margin_agrees_with_two_independent_solvers(default_data):
    from scipy.optimize import minimize
    from sklearn.svm import LinearSVC

    _, x, y = default_data
    x, y = x.numpy(), y.numpy().ravel()
    mm = landscape.max_margin(x, y)
    z = y[:, None] * x
    assert (z @ mm.w).min() == pytest.approx(1.0, abs=1e-10)  # feasible, support vectors at margin 1
    assert mm.kkt_residual < 1e-10 and 1 <= mm.support.size <= x.shape[1]
    # the dual QP, max Σα − ½ αᵀQα over α ≥ 0, by L-BFGS-B
    q = z @ z.T
    res = minimize(lambda a: (0.5 * a @ q @ a - a.sum(), q @ a - 1), np.zeros(len(y)), jac=True, method="L-BFGS-B",
                   bounds=[(0, None)] * len(y), options={"maxiter": 10000, "ftol": 1e-15, "gtol": 1e-12})
    assert res.success
    w_dual = z.T @ res.x
    assert w_dual @ mm.direction / np.linalg.norm(w_dual) > 1 - 1e-9
    assert 1 / np.linalg.norm(w_dual) == pytest.approx(mm.margin, rel=1e-6)
    # liblinear's dual coordinate descent, hinge loss, no intercept, C large (hard margin)
    svc = LinearSVC(C=1e6, loss="hinge", fit_intercept=False, dual=True, tol=1e-10, max_iter=1_000_000).fit(x, y)
    assert svc.n_iter_ < 1_000_000  # converged
    w_svc = svc.coef_.ravel()
    assert w_svc @ mm.direction / np.linalg.norm(w_svc) > 1 - 1e-9
    assert 1 / np.linalg.norm(w_svc) == pytest.approx(mm.margin, rel=1e-6)


def test_max_margin_refuses_inseparable_data_and_bad_labels():
    x = np.array([[1.0, 0.0], [1.0, 0.0]])
    with pytest.raises(landscape.LandscapeError, match="not linearly separable"):
        landscape.max_margin(x, np.array([1.0, -1.0]))
    with pytest.raises(landscape.LandscapeError, match="labels"):
        landscape.max_margin(x, np.array([1.0, 0.0]))


def test_log_domain_steps_are_the_problem_s_gradient_steps(default_data):
    problem, x, y = default_data
    theta0 = problem.init(torch.Generator().manual_seed(3), n=2, dtype=torch.float64)
    out = landscape.implicit_bias(x, y, theta0, dynamics="gd", lr=0.5, steps=3, records=3)
    theta = theta0.clone()
    for _ in range(3):
        loss, grad = problem.loss_and_grad(theta)
        theta = theta - 0.5 * grad
    torch.testing.assert_close(out["theta"][-1], theta, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out["log_loss"][-1], torch.log(problem.loss(theta)), rtol=1e-12, atol=1e-12)
    # normalized GD: θ ← θ − η ∇L / L
    out = landscape.implicit_bias(x, y, theta0, dynamics="normalized_gd", lr=0.5, steps=2, records=2)
    theta = theta0.clone()
    for _ in range(2):
        loss, grad = problem.loss_and_grad(theta)
        theta = theta - 0.5 * grad / loss[:, None]
    torch.testing.assert_close(out["theta"][-1], theta, rtol=1e-12, atol=1e-12)


def test_weight_norm_is_gradient_descent_on_scale_and_direction(default_data):
    problem, x, y = default_data
    theta0 = problem.init(torch.Generator().manual_seed(4), n=1, dtype=torch.float64)
    out = landscape.implicit_bias(x, y, theta0, dynamics="weight_norm", lr=0.1, steps=2, records=2)
    rho = theta0.norm().clone().requires_grad_(True)
    v = theta0[0].clone().requires_grad_(True)
    for _ in range(2):  # autograd through θ = ρ v/‖v‖
        loss = problem.loss(rho * v / v.norm())
        g_rho, g_v = torch.autograd.grad(loss, (rho, v))
        with torch.no_grad():
            rho -= 0.1 * g_rho
            v -= 0.1 * g_v
    torch.testing.assert_close(out["theta"][-1, 0], (rho * v / v.norm()).detach(), rtol=1e-12, atol=1e-12)


def test_log_clock():
    clock = log_clock(100_000, 50)
    assert clock[0] == 0 and clock[-1] == 100_000 and clock == sorted(set(clock)) and 40 <= len(clock) <= 52
    assert log_clock(1, 10) == [0, 1]
    assert {1, 10, 100, 1000} <= set(log_clock(1500, 5))


@pytest.fixture(scope="module")
def study4():
    """Study 4's task at 3,000 steps on the default data (d = 50), gd and normalized gd."""
    spec = {"name": "exp_linear", "params": {}}
    common = {"problem": spec, "steps": 3000, "seeds": [0, 1, 2, 3], "records": 30}
    return {dyn: implicit_bias_task({**common, "dynamics": dyn, "lr": lr}, device=torch.device("cpu"))
            for dyn, lr in (("gd", 1.0), ("normalized_gd", 1.0), ("weight_norm", 0.1))}


def test_study4_cosine_with_the_max_margin_direction_exceeds_099(study4):
    gd, ngd = study4["gd"], study4["normalized_gd"]
    assert gd["svm_kkt_residual"] < 1e-10 and gd["n_support"] >= 1
    assert gd["cosine_min"] > 0.99  # every seed, plain gradient descent, 3,000 steps
    assert ngd["cosine_min"] > 0.999
    assert study4["weight_norm"]["cosine"] > 0.98
    # the direction keeps improving: cosine at the end beats cosine after 100 steps
    s = gd["series"]
    at100 = s["step"].index(min(s["step"], key=lambda t: abs(t - 100)))
    assert s["cosine"][-1] > s["cosine"][at100]


def test_study4_margin_approaches_the_max_margin_from_below(study4):
    for fig in study4.values():
        # theorem: no unit vector has a larger margin than the max-margin direction
        assert max(fig["series"]["margin_ratio"]) <= 1 + 1e-9
    gd, ngd = study4["gd"], study4["normalized_gd"]
    assert 0.75 < gd["margin_ratio"] < 0.95  # slow: 1/log t
    assert ngd["margin_ratio"] > 0.9 and ngd["margin_ratio"] > gd["margin_ratio"] + 0.05
    # the late margin gap of gd times ln t stays of order one (a 1/log t rate), and shrinks more slowly than 1/t
    assert 0.5 < gd["gap_log_t"] < 3.0


def test_study4_norm_grows_without_bound(study4):
    gd, ngd = study4["gd"], study4["normalized_gd"]
    norms = gd["series"]["norm"]
    assert all(b > a for a, b in zip(norms[5:], norms[6:]))  # increasing
    # plain GD: θ(t) ≈ ŵ ln t, so d‖θ‖/d ln t → ‖ŵ‖ = 1/γ*; normalized GD grows linearly
    assert 0.7 < gd["norm_slope_ratio"] < 1.05
    assert gd["norm_exponent"] < 0.3
    assert 0.9 < ngd["norm_exponent"] < 1.1


def test_implicit_bias_errors(default_data):
    problem, x, y = default_data
    theta0 = problem.init(torch.Generator().manual_seed(0), n=1, dtype=torch.float64)
    with pytest.raises(landscape.LandscapeError, match="unknown dynamics"):
        landscape.implicit_bias(x, y, theta0, dynamics="adam")
    with pytest.raises(landscape.LandscapeError, match="diverged"):
        landscape.implicit_bias(x, y, theta0, dynamics="gd", lr=50.0, steps=200)
    with pytest.raises(landscape.LandscapeError, match="linear classifier"):
        implicit_bias_task({"problem": {"name": "ring", "params": {}}}, device=torch.device("cpu"))
