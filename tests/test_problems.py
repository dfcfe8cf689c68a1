"""Every registered problem against an independent evaluation, and the analytic ground truths."""


import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import landscape
from landscape import LandscapeError, make_problem
from landscape.problems.analytic import AnalyticProblem

from conftest import SMALL

FORMULAS = {  # written out again here, independently of the library
    "himmelblau": lambda x, y, p: (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2,
    "double_well": lambda x, y, p: (x**2 - 1) ** 2 + p["tilt"] * x + p["stiffness"] * y**2,
    "ring": lambda x, y, p: (x**2 + y**2 - p["radius"] ** 2) ** 2 + p["bump"] * y**2,
}


def reference_loss(problem, theta, split="train"):
    """One θ at a time: the formula, or functional_call on the module and torch.nn.functional's loss."""
    if isinstance(problem, AnalyticProblem):
        return FORMULAS[problem.name](theta[0], theta[1], problem.params)
    x, y = problem.data(split)
    x = x.to(theta.dtype) if x.is_floating_point() else x  # token inputs stay integers
    y = y.to(theta.dtype) if y.is_floating_point() else y
    params = problem.layout.unflatten(theta)
    if getattr(problem, "bn", None) == "recompute":  # torch's own: one training-mode pass sets the statistics
        out = recomputed_output(problem, params, x)
    else:
        out = functional_call(problem.module(), params, (x,))
    value = {
        "cross_entropy": lambda: F.cross_entropy(out, y),
        "mse": lambda: F.mse_loss(out, y),
        "l1": lambda: F.l1_loss(out, y),
        "exponential": lambda: torch.exp(-y * out).mean(),
    }[problem.loss_name]()
    decay = sum(v.pow(2).sum() for k, v in params.items() if k.endswith("weight"))
    return value + 0.5 * problem.weight_decay * decay


def recomputed_output(problem, params, x):
    """Reset BatchNorm statistics, one pass over the training split in training mode with cumulative averaging
    (momentum=None), then evaluation mode: what the ``recompute`` policy computes, differentiably in θ."""
    import copy

    from torch import nn

    module = copy.deepcopy(problem.module()).to(x.dtype)
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.reset_running_stats()
            layer.momentum = None
    stats = {}

    def keep(layer, name):
        def hook(_, inputs, __):
            h = inputs[0]
            dims = [0, *range(2, h.dim())]
            stats[name] = (h.mean(dims), h.var(dims, unbiased=True))
        return hook

    bns = {n: m for n, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    handles = [m.register_forward_hook(keep(m, n)) for n, m in bns.items()]
    module.train()
    functional_call(module, params, (problem.data("train")[0].to(x.dtype),))
    for h in handles:
        h.remove()
    module.eval()

    def normalize(name):  # evaluation mode with those statistics, kept differentiable in θ
        def hook(layer, inputs, _):
            h, (mean, var) = inputs[0], stats[name]
            shape = [1, -1] + [1] * (h.dim() - 2)
            z = (h - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + layer.eps)
            return z * params[f"{name}.weight"].reshape(shape) + params[f"{name}.bias"].reshape(shape)
        return hook

    handles = [m.register_forward_hook(normalize(n)) for n, m in bns.items()]
    try:
        return functional_call(module, params, (x,))
    finally:
        for h in handles:
            h.remove()


@pytest.fixture(params=sorted(SMALL))
def problem(request):
    return landscape.make_problem(request.param, **SMALL[request.param])


def test_registry_is_complete():
    expected = {"himmelblau", "double_well", "ring", "quadratic_regression", "digits_mlp", "moons_mlp",
                "teacher_student", "deep_linear", "venturi_relu", "exp_linear", "digits_cnn", "digits_resnet",
                "modadd_transformer"}
    assert set(landscape.PROBLEMS) == expected
    assert all(name == f.__name__ for name, f in landscape.PROBLEMS.items())
    assert all(f.__doc__ for f in landscape.PROBLEMS.values())


@pytest.mark.parametrize("k", [1, 7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_loss_matches_independent_evaluation(problem, k, dtype, gen):
    thetas = problem.init(gen, n=k, dtype=dtype)
    batched = problem.loss(thetas)
    assert batched.shape == (k,) and batched.dtype == dtype
    ref = torch.stack([reference_loss(problem, t) for t in thetas])
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(batched, ref, rtol=tol, atol=tol)


def test_loss_and_grad_match_autograd(problem, gen):
    thetas = problem.init(gen, n=5, dtype=torch.float64)
    loss, grad = problem.loss_and_grad(thetas)
    assert grad.shape == thetas.shape
    for i, t in enumerate(thetas):
        t = t.clone().requires_grad_(True)
        value = reference_loss(problem, t)
        (g,) = torch.autograd.grad(value, t)
        torch.testing.assert_close(loss[i], value.detach(), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(grad[i], g, rtol=1e-8, atol=1e-10)


def test_chunking_does_not_change_values(problem, gen):
    thetas = problem.init(gen, n=9, dtype=torch.float64)
    whole = problem.loss_and_grad(thetas)
    problem.chunk_bytes = {"cpu": 1}  # one point per chunk: the plain loop
    assert problem.chunk_size(problem.n_samples(), torch.device("cpu")) == 1
    looped = problem.loss_and_grad(thetas)
    torch.testing.assert_close(whole[0], looped[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(whole[1], looped[1], rtol=1e-10, atol=1e-12)


def test_spec_round_trips(problem, gen):
    spec = problem.spec
    rebuilt = landscape.problems.problem_from_spec(spec)
    assert rebuilt.spec == spec
    theta = problem.init(gen, n=3)
    torch.testing.assert_close(rebuilt.loss(theta), problem.loss(theta))
    assert landscape.make_problem(spec["name"], **spec["params"]).spec == spec


def test_init_is_reproducible(problem):
    a = problem.init(torch.Generator().manual_seed(7), n=2)
    b = problem.init(torch.Generator().manual_seed(7), n=2)
    c = problem.init(torch.Generator().manual_seed(8), n=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.isfinite(problem.loss(a)).all()


def test_minibatch_is_the_loss_on_the_subset(gen):
    problem = landscape.make_problem("moons_mlp", width=8, n_train=100, n_test=10)
    theta = problem.init(gen, n=3, dtype=torch.float64)
    idx = torch.tensor([3, 14, 15, 92, 65])
    x, y = problem.data("train")
    sub = landscape.from_module(problem.module(), (x[idx], y[idx]), "cross_entropy")
    torch.testing.assert_close(problem.loss(theta, batch=idx), sub.loss(theta))
    per_row = torch.stack([idx, idx.flip(0), idx + 1])
    expected = torch.stack([problem.loss(theta[i], batch=per_row[i]) for i in range(3)])
    torch.testing.assert_close(problem.loss(theta, batch=per_row), expected)


def test_test_split_differs_from_train(gen):
    problem = landscape.make_problem("digits_mlp", width=8)
    theta = problem.init(gen)
    assert problem.n_samples("train") + problem.n_samples("test") == 1797
    assert problem.loss(theta, split="train") != problem.loss(theta, split="test")
    with pytest.raises(landscape.LandscapeError, match="no data split 'val'"):
        problem.loss(theta, split="val")


def test_bad_shapes_are_clear_errors():
    problem = landscape.make_problem("ring")
    with pytest.raises(landscape.LandscapeError, match=r"needs \(K, 2\)"):
        problem.loss(torch.zeros(4, 3))
    with pytest.raises(landscape.LandscapeError, match="unknown problem"):
        landscape.make_problem("nope")
    with pytest.raises(landscape.LandscapeError, match="no parameter"):
        landscape.make_problem("ring", colour=3)


# ------------------------------------------------------------------ analytic ground truths
@pytest.mark.parametrize("name", ["himmelblau", "double_well", "ring"])
def test_critical_points_have_zero_gradient(name):
    problem = landscape.make_problem(name)
    points = torch.cat([problem.minima, problem.saddles])
    _, grad = problem.loss_and_grad(points)
    assert grad.abs().max() < 1e-9


def test_minima_are_minima_and_saddles_are_saddles():
    for name in ["himmelblau", "double_well", "ring"]:
        problem = landscape.make_problem(name)
        for point, index in [(m, 0) for m in problem.minima] + [(s, 1) for s in problem.saddles]:
            hess = torch.autograd.functional.hessian(lambda t: problem.loss(t), point)
            assert int((torch.linalg.eigvalsh(hess) < 0).sum()) == index, (name, point)


def test_double_well_saddle_is_the_cubic_root():
    tilt = 0.3
    problem = landscape.make_problem("double_well", tilt=tilt)
    x = problem.saddles[0, 0].item()
    assert abs(4 * x**3 - 4 * x + tilt) < 1e-12
    assert abs(x) < 0.1  # the middle root, near the origin
    lows = problem.loss(problem.minima)
    assert lows[0] < lows[1]  # the left minimum is the global one


def test_ring_saddle_height_closed_form():
    problem = landscape.make_problem("ring", radius=1.0, bump=0.2)
    heights = problem.loss(problem.saddles)
    torch.testing.assert_close(heights, torch.full((2,), 0.2 - 0.2**2 / 4, dtype=torch.float64))
    assert problem.loss(torch.zeros(2, dtype=torch.float64)) == 1.0  # the hill on the chord


def test_himmelblau_known_values():
    problem = landscape.make_problem("himmelblau")
    assert torch.allclose(problem.minima[0], torch.tensor([3.0, 2.0], dtype=torch.float64))
    assert problem.loss(problem.minima).abs().max() < 1e-20
    # the published saddle points (six digits, as tabulated e.g. on Wikipedia's "Himmelblau's function")
    published = torch.tensor([[0.086677, 2.884254], [-3.073026, -0.081353], [3.385154, 0.073852],
                              [-0.127961, -1.953715]], dtype=torch.float64)
    torch.testing.assert_close(problem.saddles, published, atol=1e-6, rtol=0)
    heights = sorted(problem.loss(problem.saddles).tolist())
    np.testing.assert_allclose(heights, [13.311926, 67.719150, 104.015163, 178.337239], rtol=1e-7)


def test_venturi_constructions_have_the_predicted_losses():
    sampled = landscape.make_problem("venturi_relu", n_train=40000)
    exact = landscape.make_problem("venturi_relu", population=True)
    made = exact.constructions()
    alpha, beta = exact.params["alpha"], exact.params["beta"]
    # the exact population loss: β²/4 at the spurious minimum (a critical point), α²/4 at the point that
    # drops the α term instead (not a critical point: its gradient is far from zero)
    loss, grad = exact.loss_and_grad(torch.stack([made["spurious"], made["drop_alpha"]]).double())
    assert loss.tolist() == pytest.approx([beta**2 / 4, alpha**2 / 4], rel=1e-12)
    assert grad[0].norm() < 1e-12 and grad[1].norm() > 1.0
    # the samples agree with it (sampling error ~2%)
    assert sampled.loss(made["spurious"]).item() == pytest.approx(beta**2 / 4, rel=0.05)
    assert sampled.loss(made["drop_alpha"]).item() == pytest.approx(alpha**2 / 4, rel=0.05)


def test_venturi_population_loss_is_the_expectation_of_the_sampled_one():
    exact = landscape.make_problem("venturi_relu", population=True)
    sampled = landscape.make_problem("venturi_relu", n_train=200000, n_test=10)
    thetas = exact.init(torch.Generator().manual_seed(3), n=6).double()
    assert exact.loss(thetas).tolist() == pytest.approx(sampled.loss(thetas).tolist(), rel=0.03)
    # its gradient (the arc-cosine kernel differentiated in closed form) matches central differences
    loss, grad = exact.loss_and_grad(thetas)
    step = 1e-6 * torch.randn(thetas.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    fd = (exact.loss(thetas + step) - exact.loss(thetas - step)) / 2
    assert fd.tolist() == pytest.approx((grad * step).sum(1).tolist(), rel=1e-6, abs=1e-14)


def test_generic_module_path_matches_loop(gen):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(1, 3, 3)
            self.norm = torch.nn.LayerNorm(3 * 6)
            self.head = torch.nn.Linear(18, 2)

        def forward(self, x):
            h = torch.tanh(self.conv(x.unsqueeze(1))).flatten(1)
            return self.head(self.norm(h))

    x = torch.randn(30, 8, generator=gen)
    y = (x.sum(1) > 0).long()
    problem = landscape.from_module(Net(), (x, y), "cross_entropy")
    assert problem.evaluator == "vmap"
    thetas = problem.init(gen, n=6, dtype=torch.float64)
    ref = torch.stack([F.cross_entropy(functional_call(problem.module(), problem.layout.unflatten(t),
                                                       (x.double(),)), y) for t in thetas])
    torch.testing.assert_close(problem.loss(thetas), ref)


def test_plain_sequential_uses_the_batched_path():
    problem = landscape.make_problem("digits_mlp", width=8)
    assert problem.evaluator == "bmm"


def test_user_problem_factory(tmp_path, monkeypatch):
    (tmp_path / "myproblem.py").write_text(
        "import torch\n"
        "def build(width=3):\n"
        "    x = torch.linspace(-1, 1, 20)[:, None]\n"
        "    model = torch.nn.Sequential(torch.nn.Linear(1, width), torch.nn.Tanh(), torch.nn.Linear(width, 1))\n"
        "    return model, (x, x ** 2), 'mse'\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    problem = landscape.make_problem("myproblem:build", width=4)
    assert problem.spec == {"name": "user", "params": {"factory": "myproblem:build", "class": "Sequential",
                                                        "width": 4}}
    assert problem.dim == 4 + 4 + 4 + 1
    with pytest.raises(landscape.LandscapeError, match="must look like"):
        landscape.make_problem("myproblem:")
    with pytest.raises(landscape.LandscapeError, match="has no callable"):
        landscape.make_problem("myproblem:nothing")


@pytest.mark.parametrize("params, says", [
    ({"depth": 1e30}, "depth=1e+30: must lie in [0, 256]"),
    ({"width": 2.5}, "width=2.5: must be a whole number"),
    ({"width": True}, "must be a whole number"),
    ({"width": float("nan")}, "must be a whole number"),
    ({"activation": 3}, "must be a word"),
    ({"test_fraction": 2.0}, "test_fraction=2.0: must lie in [0.01, 0.99]"),
    ({"weight_decay": float("inf")}, "must be a finite number"),
    ({"width": 60000}, "needs about 860 GiB"),
])
def test_problem_parameters_are_checked_before_building(params, says, monkeypatch):
    import landscape.problems.params as checks

    monkeypatch.setattr(checks, "available_memory", lambda: 64 << 30)
    with pytest.raises(LandscapeError) as err:
        make_problem("digits_mlp", **params)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_problem_parameters_coerced_to_their_defaults_types():
    problem = make_problem("moons_mlp", width=3.0, noise=0, n_train=20, n_test=10)
    assert problem.spec["params"]["width"] == 3 and isinstance(problem.spec["params"]["width"], int)
    assert isinstance(problem.spec["params"]["noise"], float)
    assert problem.dim == 2 * 3 + 3 + 3 * 3 + 3 + 3 * 2 + 2  # the coerced width built the network


def test_memory_estimate_refuses_what_cannot_fit(monkeypatch):
    import landscape.problems.params as checks

    monkeypatch.setattr(checks, "available_memory", lambda: 1 << 20)  # 1 MiB
    with pytest.raises(LandscapeError, match="needs about .* available: use smaller values"):
        make_problem("digits_mlp")
    monkeypatch.setattr(checks, "available_memory", lambda: None)  # unknown: nothing refused
    assert make_problem("moons_mlp", n_train=20, n_test=10).dim > 0


@pytest.mark.parametrize("k", [1, 5])
def test_hand_written_gradient_equals_autograd_row_and_feature_major(k, monkeypatch):
    """The hand-written loss, gradient and plane of an MLP (feature-major, written-out backward pass) are those of
    autograd through the batched forward, row-major (NARROW = 0) and feature-major, to float rounding."""
    import sys

    mlp_module = sys.modules["landscape.problems.mlp"]
    problem = make_problem("quadratic_regression", n_train=300, n_test=10)
    thetas = problem.init(torch.Generator().manual_seed(1), n=k).double()
    origin, dirs = thetas[0], torch.randn(2, problem.dim, generator=torch.Generator().manual_seed(2)).double()
    coords = torch.rand(7, 2, generator=torch.Generator().manual_seed(3)).double()
    assert problem._by_hand
    hand = problem.loss_and_grad(thetas), problem.loss_on_plane(origin, dirs, coords)
    monkeypatch.setattr(problem, "_by_hand", False)  # autograd through mlp_forward, feature-major (narrow)
    for narrow in (16, 0):  # then every layer row-major
        monkeypatch.setattr(mlp_module, "NARROW", narrow)
        auto = problem.loss_and_grad(thetas), problem.loss_on_plane(origin, dirs, coords)
        torch.testing.assert_close(hand[0][0], auto[0][0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(hand[0][1], auto[0][1], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(hand[1], auto[1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hand[1], problem.loss(origin + coords @ dirs), rtol=1e-12, atol=1e-12)


HAND_LOSSES = {"cross_entropy": lambda out, y: F.cross_entropy(out, y), "mse": F.mse_loss, "l1": F.l1_loss,
               "exponential": lambda out, y: torch.exp(-y * out).mean()}


@pytest.mark.parametrize("loss", sorted(HAND_LOSSES))
@pytest.mark.parametrize("acts", [("relu",), ("sigmoid",), ("tanh",), ("quadratic",), (), ("relu", "tanh"),
                                  ("quadratic", "sigmoid")])
@pytest.mark.parametrize("bias", [True, False])
def test_hand_written_gradient_against_torch_per_point(loss, acts, bias):
    """Every activation, loss and bias choice of the hand-written MLP gradient against torch.nn.functional and
    autograd on the module, one point at a time (float64): full batch, a shared minibatch, one minibatch per point,
    weight decay; and the plane against the points' losses. Layers with two activations check that one kept for
    the backward pass is not overwritten in place."""
    from torch import nn

    from landscape.problems.mlp import Square

    classes = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "quadratic": Square}
    gen = torch.Generator().manual_seed(0)
    sizes = [3, 5, 4, 3 if loss == "cross_entropy" else (1 if loss == "exponential" else 2)]
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(sizes) - 2:
            layers += [classes[name]() for name in acts]
    model = nn.Sequential(*layers)
    x = torch.randn(40, 3, generator=gen)
    y = {"cross_entropy": torch.randint(0, 3, (40,), generator=gen), "exponential": torch.randn(40, 1, generator=gen).sign(),
         }.get(loss, torch.randn(40, sizes[-1], generator=gen))
    problem = landscape.from_module(model, (x, y), loss, weight_decay=0.03)
    assert problem._by_hand
    thetas = 0.7 * problem.init(gen, n=4).double()
    xd, yd = x.double(), (y.double() if y.is_floating_point() else y)

    def reference(theta, rows):
        t = theta.detach().requires_grad_(True)
        params = problem.layout.unflatten(t)
        out = functional_call(model, params, (xd[rows],))
        value = HAND_LOSSES[loss](out.double(), yd[rows]) + 0.015 * sum(v.pow(2).sum() for n, v in params.items()
                                                                          if n.endswith("weight"))
        (g,) = torch.autograd.grad(value, t)
        return value.detach(), g

    every, shared, per_point = torch.arange(40), torch.randperm(40, generator=gen)[:17], \
        torch.stack([torch.randperm(40, generator=gen)[:11] for _ in range(4)])
    for batch, rows in ((None, [every] * 4), (shared, [shared] * 4), (per_point, list(per_point))):
        value, grad = problem.loss_and_grad(thetas, batch=batch)
        for i, theta in enumerate(thetas):
            ref_value, ref_grad = reference(theta, rows[i])
            torch.testing.assert_close(value[i], ref_value, rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(grad[i], ref_grad, rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(problem.loss(thetas, batch=batch), value, rtol=1e-12, atol=1e-14)
    dirs = torch.randn(2, problem.dim, generator=gen).double()
    coords = torch.rand(5, 2, generator=gen).double()
    torch.testing.assert_close(problem.loss_on_plane(thetas[0], dirs, coords), problem.loss(thetas[0] + coords @ dirs),
                               rtol=1e-12, atol=1e-14)


def test_keep_freed_memory_leaves_results_unchanged():
    """glibc's malloc told to keep freed blocks (what the landscape command does at start): a yes/no answer, and
    the same losses after it."""
    problem = make_problem("moons_mlp", n_train=50, n_test=10)
    thetas = problem.init(torch.Generator().manual_seed(0), n=3)
    before = problem.loss_and_grad(thetas)
    assert isinstance(landscape.keep_freed_memory(), bool)
    after = problem.loss_and_grad(thetas)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])


@pytest.mark.parametrize("classes", [2, 10, 15, 16, 40])
def test_batched_cross_entropy_is_torchs(classes):
    """The batched cross-entropy (classes along the rows below 16 on a CPU) is torch's, value and gradient, float64."""
    from landscape.problems.losses import SHORT_ROWS, cross_entropy

    g = torch.Generator().manual_seed(classes)
    out = torch.randn(3, 50, classes, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, classes, (3, 50), generator=g)
    loss = cross_entropy(out, y)
    ref = torch.stack([F.cross_entropy(o, t) for o, t in zip(out, y)])
    assert (classes < SHORT_ROWS) == (classes <= 15) and torch.allclose(loss, ref, rtol=1e-14, atol=0)
    w = torch.randn(3, generator=g, dtype=torch.float64)
    grad, ref_grad = (torch.autograd.grad((v * w).sum(), out)[0] for v in (loss, ref))
    assert ref_grad.abs().max() > 1e-3 and torch.allclose(grad, ref_grad, rtol=1e-12, atol=1e-15)
