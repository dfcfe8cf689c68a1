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


def test_hvp_through_a_conv_net_is_torchs_own():
    """The wide evaluator writes its gradient out: a Hessian-vector product through it raised (digits_cnn's average
    pooling) — ``landscape valleys --metrics`` crashed on conv nets. hvp sets it aside for the generic evaluator,
    and its functions refuse a second derivative rather than give one (digits_resnet's had happened to be right;
    torch's once_differentiable would have made them constants, 67% off, silently)."""
    import copy

    import torch.nn.functional as F

    problem = landscape.make_problem("digits_cnn", n_train=64)
    problem.bn = "frozen"
    assert problem.evaluator == "wide"
    thetas = problem.init(torch.Generator().manual_seed(0), n=2, dtype=torch.float64)
    vectors = torch.randn(thetas.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = hvp(problem, thetas, vectors)
    model = copy.deepcopy(problem.module()).double().eval()
    x, y = problem.data("train")
    names, shapes = zip(*[(n, p.shape) for n, p in model.named_parameters()])

    def loss(t):
        params = dict(zip(names, (q.view(s) for q, s in zip(torch.split(t, [s.numel() for s in shapes]), shapes))))
        return F.cross_entropy(torch.func.functional_call(model, params, (x.double(),)), y)

    for t, v, h in zip(thetas, vectors, got):
        torch.testing.assert_close(h, torch.autograd.functional.hvp(loss, t, v)[1], rtol=1e-10, atol=1e-12)
    assert problem.evaluator == "wide"  # set back
    with torch.enable_grad():  # a gradient to differentiate, through the wide evaluator itself: refused
        t = thetas.clone().requires_grad_(True)
        with pytest.raises(RuntimeError, match="no second derivative"):
            torch.autograd.grad(problem.loss(t).sum(), t, create_graph=True)
        torch.autograd.grad(problem.loss(t).sum(), t)  # a first derivative is what it is for


def test_hvp_of_venturis_population_loss_keeps_the_arc_cosines_second_derivative():
    """The arc-cosine kernel's written-out derivative π − φ held φ as a constant: its Hessian-vector products were
    19% off, silently (and NaN where a unit meets itself once it was not). Central differences converge to it."""
    problem = landscape.make_problem("venturi_relu", population=True)
    thetas = problem.init(torch.Generator().manual_seed(0), n=2, dtype=torch.float64)
    v = torch.randn(thetas.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = hvp(problem, thetas, v)
    gaps = []
    for eps in (1e-3, 1e-4):
        fd = (problem.loss_and_grad(thetas + eps * v)[1] - problem.loss_and_grad(thetas - eps * v)[1]) / (2 * eps)
        gaps.append(float(((got - fd).norm(dim=1) / fd.norm(dim=1)).max()))
    assert gaps[1] < 1e-6 and gaps[1] < gaps[0] / 50  # O(eps²): the same function's second derivative


def test_saddles_and_maxima_are_not_minima():
    """Stationary points of Himmelblau's function and the double well: the four saddles and the local maximum pass
    the gradient criterion; Lanczos's lowest Ritz value finds their negative curvature (closed form) and the
    valley count refuses them, while the minima pass."""
    from landscape.minima.curvature import extreme_eigenvalues
    from landscape.minima.stationary import require_minima

    problem = landscape.make_problem("himmelblau")
    points = torch.cat([problem.minima, problem.saddles])
    exact = torch.stack([torch.linalg.eigvalsh(himmelblau_hessian(*p.tolist())) for p in points])
    lowest, highest = extreme_eigenvalues(problem, points)
    torch.testing.assert_close(lowest, exact[:, 0]) and torch.testing.assert_close(highest, exact[:, -1])
    names = [f"p{i}" for i in range(len(points))]
    assert torch.equal(require_minima(problem, problem.minima, names[:4])[0], problem.minima)
    with pytest.raises(landscape.LandscapeError, match=r"^p4, p5, p6 and 1 more are not minima: saddles or maxima, "
                                                       r"stationary with negative curvature") as err:
        require_minima(problem, points, names)
    assert "\n" not in str(err.value)
    peak = torch.tensor([[-0.270845, -0.923039]], dtype=torch.float64)  # Himmelblau's local maximum
    with pytest.raises(landscape.LandscapeError, match="p9 is not a minimum: a saddle or a maximum"):
        require_minima(problem, torch.cat([problem.minima[:1], peak]), ["p8", "p9"])


def test_lanczos_rows_that_break_down_keep_their_ritz_values():
    """Hessians with few distinct eigenvalues span their Krylov spaces in a few steps: here 3 where θ₀ > 0
    (−3, 1, 2 in D = 40) and 5 where θ₀ < 0 (−1, 0.5, 1, 4, 7). A row whose run breaks down while the others go
    on must not gain Ritz values from the noise of its finished run: the extremes stay the spectra's."""
    from landscape.problems.layout import Layout
    from landscape.problems.problem import Problem
    from landscape.minima.curvature import extreme_eigenvalues

    three = torch.tensor([-3.0] + [1.0] * 20 + [2.0] * 19, dtype=torch.float64)
    five = torch.tensor([-1.0] * 8 + [0.5] * 8 + [1.0] * 8 + [4.0] * 8 + [7.0] * 8, dtype=torch.float64)

    class Quadratics(Problem):  # ½ θᵀ diag(a) θ, a chosen by the sign of θ₀ (constant near each point)
        def _evaluate(self, thetas, data):
            a = torch.where(thetas[:, :1] > 0, three.to(thetas), five.to(thetas))
            return 0.5 * (thetas.pow(2) * a).sum(1)

    problem = Quadratics("quadratics40", {}, Layout(("theta",), ((40,),)))
    points = torch.randn(6, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    points[:, 0] = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    lowest, highest = extreme_eigenvalues(problem, points, steps=20)
    positive = points[:, 0] > 0
    torch.testing.assert_close(lowest, torch.where(positive, -3.0, -1.0).double(), rtol=0, atol=1e-9)
    torch.testing.assert_close(highest, torch.where(positive, 2.0, 7.0).double(), rtol=0, atol=1e-9)
