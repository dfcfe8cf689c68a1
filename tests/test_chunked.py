"""Data larger than one batch: the loss evaluated in chunks of samples is the full-batch loss, gradients too;
a search on a fixed random subset is certified on all the data."""

import json

import pytest
import torch
from click.testing import CliRunner

import landscape
from landscape_cli.cli import main

CASES = {"digits_mlp": {"width": 8, "weight_decay": 0.01}, "digits_cnn": {"width": 2, "n_train": 100},
         "digits_resnet": {"width": 2, "n_train": 90}}


@pytest.mark.parametrize("chunk", [23, 40])
@pytest.mark.parametrize("name", sorted(CASES))
def test_chunked_loss_and_gradient_equal_the_full_batch(name, chunk):
    problem = landscape.make_problem(name, **CASES[name])
    thetas = problem.init(torch.Generator().manual_seed(0), n=3, dtype=torch.float64)
    loss, grad = problem.loss_and_grad(thetas)
    full = problem.loss(thetas, split="test")
    problem.sample_chunk = chunk if name != "digits_mlp" else chunk * 10
    chunked_loss, chunked_grad = problem.loss_and_grad(thetas)
    assert len(problem._sample_slices("train", None)) > 1  # the data really were cut
    torch.testing.assert_close(chunked_loss, loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chunked_grad, grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(problem.loss(thetas), loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(problem.loss(thetas, split="test"), full, rtol=1e-12, atol=1e-12)


def test_a_bad_chunk_is_refused():
    problem = landscape.make_problem("digits_mlp", width=4)
    problem.sample_chunk = 0
    with pytest.raises(landscape.LandscapeError, match="sample_chunk must be a positive integer"):
        problem.loss(problem.init(n=1))


def test_a_subset_is_fixed_and_the_certificate_uses_all_the_data(tmp_path):
    problem = landscape.make_problem("digits_mlp", width=8)
    sub = problem.subset(200)
    assert sub.n_samples() == 200 and problem.n_samples() == 1438 and sub.spec == problem.spec
    assert torch.equal(sub.data()[0], problem.subset(200).data()[0])  # the same samples every time
    result = landscape.train(problem, seeds=[0, 1], steps=300, lr=0.01, polish_steps=0)
    a, b = result.thetas
    files = [landscape.save_checkpoint(tmp_path / f"m{i}.pt", problem, t) for i, t in enumerate((a, b))]
    out = CliRunner().invoke(main, ["connect", *map(str, files), "--search-samples", "200", "--sample-chunk", "500",
                                    "--json", "-o", str(tmp_path / "p.pt")], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["search_samples"] == 200
    path, _, _ = landscape.load_path(tmp_path / "p.pt")
    torch.testing.assert_close(path.losses, problem.loss(path.points), rtol=1e-5, atol=1e-7)  # all 1,438 samples
    if report["status"] == "connected":
        assert report["max_loss"] <= report["level"]


def test_a_dataset_is_read_into_tensors():
    x, y = torch.randn(30, 3, dtype=torch.float64), torch.randn(30, 1, dtype=torch.float64)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    from_tensors = landscape.from_module(model, (x, y), "mse")
    from_dataset = landscape.from_module(model, torch.utils.data.TensorDataset(x, y), "mse")
    theta = from_tensors.init(torch.Generator().manual_seed(0), n=2, dtype=torch.float64)
    torch.testing.assert_close(from_dataset.loss(theta), from_tensors.loss(theta), rtol=0, atol=0)
    with pytest.raises(landscape.LandscapeError, match="must be"):
        landscape.from_module(model, [x], "mse")


@pytest.mark.parametrize("name", ["digits_cnn", "digits_resnet"])
def test_batchnorm_statistics_in_chunks_equal_one_pass_over_all_the_data(name, monkeypatch):
    """Recomputed BatchNorm with chunks: statistics summed chunk by chunk (one pass per layer), the loss, its
    gradient through the statistics (adjoint passes) and the stored running statistics equal the full pass."""
    import landscape.problems.module as module

    problem = landscape.make_problem(name, **CASES[name], weight_decay=0.01)
    thetas = problem.init(torch.Generator().manual_seed(1), n=2, dtype=torch.float64)
    loss, grad = problem.loss_and_grad(thetas)
    stats = problem.batchnorm_statistics(thetas[1])
    calls, original = [], module.chunked_loss
    monkeypatch.setattr(module, "chunked_loss", lambda *args: calls.append(1) or original(*args))
    problem.sample_chunk = 17
    chunked_loss, chunked_grad = problem.loss_and_grad(thetas)
    plain = problem.loss(thetas)
    assert len(calls) >= 2  # the statistics were taken in chunks, not over the whole split
    torch.testing.assert_close(chunked_loss, loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(plain, loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chunked_grad, grad, rtol=1e-10, atol=1e-12)
    chunked_stats = problem.batchnorm_statistics(thetas[1])
    assert chunked_stats.keys() == stats.keys() and len(stats) >= 2
    for layer, (mean, var) in stats.items():
        torch.testing.assert_close(chunked_stats[layer][0], mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(chunked_stats[layer][1], var, rtol=1e-12, atol=1e-12)
