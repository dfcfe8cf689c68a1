"""The built-in transformer on modular addition: its data, its batched evaluation against the module, its checks.

Ground truths: the p² pairs and their sums mod p; the module's own forward and autograd in float64 (the batched
evaluator computes the same loss and gradient to rounding, K points at once, with and without LayerNorm, one or two
blocks, ReLU or GELU); torch.func's vmap of grad gives the same gradients.
"""

import pytest
import torch
from torch.func import functional_call, grad, vmap

import landscape
from landscape import LandscapeError
from landscape.problems.capture import reference

SMALL = {"p": 7, "d_model": 8, "heads": 2, "d_mlp": 16}
VARIANTS = [{}, {"layer_norm": True, "layers": 2, "activation": "gelu"}, {"weight_decay": 1e-3, "heads": 4}]


def test_the_data_are_every_pair_once_with_its_sum():
    problem = landscape.make_problem("modadd_transformer", **SMALL, train_fraction=0.3)
    (xa, ya), (xb, yb) = problem.data("train"), problem.data("test")
    x, y = torch.cat([xa, xb]), torch.cat([ya, yb])
    assert len(xa) == round(0.3 * 49) and len(x) == 49
    assert {(int(a), int(b)) for a, b, _ in x} == {(a, b) for a in range(7) for b in range(7)}
    assert bool((x[:, 2] == 7).all()) and torch.equal(y, (x[:, 0] + x[:, 1]) % 7)


@pytest.mark.parametrize("params", VARIANTS, ids=["default", "layernorm-gelu-2", "decay-4-heads"])
def test_batched_loss_and_gradient_equal_the_module_in_float64(params):
    problem = landscape.make_problem("modadd_transformer", **{**SMALL, **params})
    assert problem.evaluator == "attention" and problem.capture["notes"] == []
    assert problem.capture["loss"] <= 1 and problem.capture["grad"] <= 1  # the differential check at construction
    thetas = problem.init(torch.Generator().manual_seed(4), n=5, dtype=torch.float64)
    loss, g = problem.loss_and_grad(thetas)
    ref, ref_grad, _ = reference(problem, thetas)  # a deep copy of the module, θ copied in, autograd
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g, ref_grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(problem.loss(thetas, split="test"), reference(problem, thetas, split="test",
                                                                             grad=False)[0], rtol=1e-12, atol=1e-12)


def test_torch_func_computes_the_same_gradients():
    problem = landscape.make_problem("modadd_transformer", **SMALL)
    thetas = problem.init(torch.Generator().manual_seed(2), n=3, dtype=torch.float64)
    x, y = problem.data("train")
    module = problem.module().double()
    mask = problem._decay

    def one(theta):
        out = functional_call(module, problem.layout.unflatten(theta), (x,))
        return torch.nn.functional.cross_entropy(out, y) + 0.5 * problem.weight_decay * theta[mask].pow(2).sum()

    torch.testing.assert_close(problem.loss_and_grad(thetas)[1], vmap(grad(one))(thetas), rtol=1e-10, atol=1e-12)


def test_accuracy_counts_the_right_answers():
    problem = landscape.make_problem("modadd_transformer", **SMALL)
    theta = problem.init(torch.Generator().manual_seed(0), dtype=torch.float64)
    x, y = problem.data("test")
    with torch.no_grad():
        right = (problem.to_module(theta).double()(x).argmax(1) == y).double().mean()
    assert float(problem.accuracy(theta, "test")) == pytest.approx(float(right), abs=0)


def test_a_short_training_fits_the_training_pairs():
    problem = landscape.make_problem("modadd_transformer", **SMALL, train_fraction=0.6)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny net: one thread is fastest, and does not stall on a busy machine
    try:
        result = landscape.train(problem, seeds=[0], steps=300, lr=0.01, polish_steps=0)
    finally:
        torch.set_num_threads(threads)
    assert float(problem.accuracy(result.thetas[0])) == 1.0  # 29 pairs memorized
    assert float(result.losses[0]) < 0.5 * float(problem.loss(problem.init(torch.Generator().manual_seed(0))))


@pytest.mark.parametrize("params, fix", [({"d_model": 10, "heads": 4}, "multiple of heads"),
                                         ({"p": 1}, "must lie in"), ({"train_fraction": 1.5}, "must lie in"),
                                         ({"activation": "tanh"}, "transformer activation"),
                                         ({"layer_norm": 1}, "true or false")])
def test_bad_parameters_are_one_line_errors(params, fix):
    with pytest.raises(LandscapeError, match=fix):
        landscape.make_problem("modadd_transformer", **params)


def test_two_transformers_connect_through_the_whole_pipeline():
    """connect plans its memory from the module's saved values (token inputs stay integers) and certifies densely."""
    problem = landscape.make_problem("modadd_transformer", **SMALL)
    a, b = problem.init(torch.Generator().manual_seed(0), n=2)
    level = 1.05 * float(problem.loss(torch.stack([a, b])).max()) + 1.0
    path = landscape.connect(problem, a, b, method="linear", level=level, certificate="grid")
    assert path.status == "connected" and path.max_loss <= level
    assert path.info["memory"]["point_bytes"] > 0
