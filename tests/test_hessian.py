"""Batched curvature estimates against exact Hessians."""

import pytest
import torch

import landscape
from landscape.minima.curvature import hessian_trace, hvp, minimum_metrics, top_eigenvalue


def himmelblau_hessian(x, y):
    return torch.tensor([[12 * x * x + 4 * y - 42, 4 * x + 4 * y], [4 * x + 4 * y, 4 * x + 12 * y * y - 26]],
                        dtype=torch.float64)


def test_hvp_equals_the_closed_form_hessian(gen):
    problem = landscape.make_problem("himmelblau")
    points = torch.cat([problem.minima, problem.saddles])
    vectors = torch.randn(points.shape, generator=gen, dtype=torch.float64)
    expected = torch.stack([himmelblau_hessian(*p.tolist()) @ v for p, v in zip(points, vectors)])
    torch.testing.assert_close(hvp(problem, points, vectors), expected)


def test_top_eigenvalue_and_trace_at_himmelblau_minima(gen):
    problem = landscape.make_problem("himmelblau")
    exact = [torch.linalg.eigvalsh(himmelblau_hessian(*p.tolist())) for p in problem.minima]
    lam, vec = top_eigenvalue(problem, problem.minima, iters=500, tol=1e-12, generator=gen)
    torch.testing.assert_close(lam, torch.stack([e[-1] for e in exact]), rtol=1e-8, atol=0)
    assert lam[0].item() == pytest.approx(54 + 800**0.5, rel=1e-10)  # at (3, 2): H = [[74, 20], [20, 34]]
    trace, err = hessian_trace(problem, problem.minima, samples=4000, generator=gen)
    exact_trace = torch.stack([e.sum() for e in exact])
    assert ((trace - exact_trace).abs() < 4 * err + 1e-9).all()
    assert (err < 0.02 * exact_trace).all()


def test_network_curvature_matches_dense_hessian(gen):
    problem = landscape.make_problem("moons_mlp", width=3, depth=1, n_train=60, n_test=10)
    thetas = problem.init(gen, n=3, dtype=torch.float64)
    lam, _ = top_eigenvalue(problem, thetas, iters=2000, tol=1e-13, generator=gen)
    for i, t in enumerate(thetas):
        dense = torch.autograd.functional.hessian(lambda z: problem.loss(z), t)
        eig = torch.linalg.eigvalsh(dense)
        top = eig[eig.abs().argmax()]
        assert lam[i].item() == pytest.approx(top.item(), rel=1e-5)
    metrics = minimum_metrics(problem, thetas[:1], samples=2000, generator=gen)
    dense = torch.autograd.functional.hessian(lambda z: problem.loss(z), thetas[0])
    m = metrics[0]
    assert abs(m["hessian_trace"] - torch.trace(dense).item()) < 4 * m["hessian_trace_stderr"] + 1e-9
    assert m["loss"] == pytest.approx(problem.loss(thetas[0]).item())
