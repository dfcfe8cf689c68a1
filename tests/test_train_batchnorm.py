"""Training networks with BatchNorm: one training-mode pass, minima checked on the problem's own loss, and the
running statistics of the minimum recorded so that bn="frozen" is the trained network."""

import copy

import pytest
import torch

import landscape
from landscape.minima.train import train_checkpoints
from landscape.problems.bn_stats import mode_losses, one_pass, running_statistics, training_loss_and_grad


def small(name="digits_cnn", **kw):
    return landscape.make_problem(name, width=2, n_train=48, **kw)


def torch_module(problem, theta):
    m = copy.deepcopy(problem.module()).double()
    with torch.no_grad():
        for name, value in problem.layout.unflatten(theta).items():
            m.get_parameter(name).copy_(value)
    return m


@pytest.mark.parametrize("name", ["digits_cnn", "digits_resnet"])
def test_one_pass_is_torchs_training_mode_loss_and_gradient(name):
    """Ground truth: torch's own module in training mode (batch statistics), its loss and autograd gradient."""
    problem = small(name, weight_decay=0.01)
    thetas = torch.stack([problem.init(torch.Generator().manual_seed(s), dtype=torch.float64) for s in (0, 1)])
    loss, grad = training_loss_and_grad(problem, thetas)
    x, y = problem.data("train")
    for i in range(2):
        theta = thetas[i].clone().requires_grad_(True)
        m = torch_module(problem, thetas[i]).train()
        params = problem.layout.unflatten(theta)
        out = torch.func.functional_call(m, params, (x.double(),))
        decay = sum(p.pow(2).sum() for n, p in params.items() if n.endswith("weight"))
        value = torch.nn.functional.cross_entropy(out, y) + 0.005 * decay
        (g,) = torch.autograd.grad(value, theta)
        assert float(loss[i]) == pytest.approx(float(value.detach()), rel=1e-12)
        torch.testing.assert_close(grad[i], g, rtol=1e-9, atol=1e-12)
    # the batched call is the loss the training loop reads; minibatches and other splits are the problem's
    fast = one_pass(problem)
    assert fast is not problem and one_pass(landscape.make_problem("moons_mlp", width=3, n_train=20)).name == "moons_mlp"
    torch.testing.assert_close(fast.loss(thetas), loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(fast.loss(thetas, split="test"), problem.loss(thetas, split="test"), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["digits_cnn", "digits_resnet"])
def test_recorded_statistics_make_frozen_the_recomputed_network(name):
    """The statistics are those of the training split at θ: frozen and recomputed losses agree to rounding, the
    training-mode loss differs by the variance's n/(n-1) only (small, not zero)."""
    problem = small(name)
    theta = problem.init(torch.Generator().manual_seed(3), dtype=torch.float64)
    stats = running_statistics(problem, theta)
    layers = problem._bn_layers
    assert sorted(stats) == sorted(f"{n}.{b}" for n in layers for b in ("running_mean", "running_var",
                                                                          "num_batches_tracked"))
    # ground truth of the first layer: the mean and unbiased variance of its input, by hand
    first = layers[0]
    m = torch_module(problem, theta)
    seen = {}
    m.get_submodule(first).register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0]))
    m.eval()(problem.data("train")[0].double())
    x = seen["x"]
    torch.testing.assert_close(stats[f"{first}.running_mean"].double(), x.mean((0, 2, 3)), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(stats[f"{first}.running_var"].double(), x.var((0, 2, 3), unbiased=True),
                               rtol=1e-6, atol=1e-7)
    losses = mode_losses(problem, theta, stats)
    assert losses["frozen"] == pytest.approx(float(problem.loss(theta)), rel=1e-6)  # float32 statistics
    assert losses["recompute"] == pytest.approx(float(problem.loss(theta)), rel=1e-12)
    assert 0 < abs(losses["train_mode"] - losses["recompute"]) < 1e-2 * losses["recompute"]


def test_trained_checkpoints_carry_their_statistics_and_frozen_reproduces_their_loss(tmp_path):
    problem = small()
    rows = train_checkpoints(problem, [0], tmp_path, steps=30, lr=0.01, polish_steps=0, dtype=torch.float64)
    ck = landscape.load_checkpoint(rows[0]["file"])
    assert set(ck.buffers) >= {f"{n}.running_mean" for n in problem._bn_layers}
    assert rows[0]["batchnorm_losses"]["frozen"] == pytest.approx(ck.loss, rel=1e-6)
    frozen = ck.problem  # the statistics were taken into its module on loading
    frozen.bn = "frozen"
    try:
        assert float(frozen.loss(ck.theta.double())) == pytest.approx(ck.loss, rel=1e-6)
        # a default module's statistics (zero mean, unit variance) are another network: its loss is far off
        fresh = small()
        fresh.bn = "frozen"
        assert abs(float(fresh.loss(ck.theta.double())) - ck.loss) > 1e-3
    finally:
        frozen.bn = "recompute"


def test_training_a_batchnorm_net_checks_minima_on_the_problems_own_loss():
    """Polished in training mode, then on the recomputed loss: ``converged`` is the problem's own criterion."""
    problem = small()
    result = landscape.train(problem, [0, 1], lr=0.02, steps=40, dtype=torch.float64, polish_steps=20)
    loss, grad = problem.loss_and_grad(result.thetas.double())
    torch.testing.assert_close(result.losses, loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(result.grad_norms, grad.norm(dim=1), rtol=1e-9, atol=0)
    assert torch.equal(result.converged, landscape.minima.is_stationary(loss, grad.norm(dim=1)))
    # the last record of the trajectory is the minimum, at the problem's own loss
    assert float(result.trajectories[0]["loss"][-1]) == float(loss[0])
