"""Decoupled weight decay (AdamW): the optimiser's own decay, the loss unchanged; recorded in the checkpoints."""

import pytest
import torch
from click.testing import CliRunner

import landscape
from landscape.minima.optim import RowOptimizer
from landscape.minima.train import train_checkpoints
from landscape.problems.checkpoint import load_checkpoint
from landscape_cli.cli import main


@pytest.mark.parametrize("decay", [0.0, 0.7])
def test_rows_with_decay_are_torch_adamw_per_row(decay):
    """On a quadratic L = Σ c·x², rows with their own learning rates and schedules: AdamW's iterates in float64
    (decay 0: Adam's)."""
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(3, 4, generator=g, dtype=torch.float64)
    curv = torch.rand(3, 4, generator=g, dtype=torch.float64) + 0.5
    lr = torch.tensor([0.1, 0.03, 0.2], dtype=torch.float64)
    schedule = [[0, 1, 2], [1], [0, 2], [0, 1, 2], [2], [0, 1, 2]] * 3
    x = x0.clone()
    rows_opt = RowOptimizer(x, lr, decay=decay)
    for rows in schedule:
        rows = torch.tensor(rows)
        rows_opt.step(x, 2 * curv[rows] * x[rows], rows)
    for i in range(3):
        theta = x0[i].clone().requires_grad_(True)
        opt = torch.optim.AdamW([theta], lr=float(lr[i]), weight_decay=decay)
        for rows in schedule:
            if i in rows:
                opt.zero_grad()
                (curv[i] * theta * theta).sum().backward()
                opt.step()
        torch.testing.assert_close(x[i], theta.detach(), rtol=1e-12, atol=1e-14)
    if decay:  # the decay moved the points: without it they end elsewhere
        plain = x0.clone()
        adam = RowOptimizer(plain, lr)
        for rows in schedule:
            rows = torch.tensor(rows)
            adam.step(plain, 2 * curv[rows] * plain[rows], rows)
        assert (plain - x).abs().max() > 1e-3


def test_decay_with_gradient_descent_is_the_closed_form():
    """gd: m ← μ·m + g, θ ← θ − lr·(m + w·θ), the decay outside the momentum (SGDW)."""
    x0 = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    x, lr, mu, w = x0.clone(), 0.1, 0.5, 0.3
    opt = RowOptimizer(x, lr, method="gd", momentum=mu, decay=w)
    want, m = x0.clone(), torch.zeros_like(x0)
    for _ in range(5):
        opt.step(x, 2 * x)
        m = mu * m + 2 * want
        want = want - lr * (m + w * want)
    torch.testing.assert_close(x, want, rtol=0, atol=1e-15)


def test_train_with_decoupled_decay_is_adamw_and_polishes_on_the_loss():
    problem = landscape.make_problem("moons_mlp", width=6, n_train=80, n_test=10)
    result = landscape.train(problem, [2, 5], lr=0.01, steps=30, dtype=torch.float64, polish_steps=0,
                             decoupled_decay=0.5)
    for i, seed in enumerate([2, 5]):
        theta = problem.init(torch.Generator().manual_seed(seed), dtype=torch.float64).requires_grad_(True)
        opt = torch.optim.AdamW([theta], lr=0.01, weight_decay=0.5)
        for _ in range(30):
            opt.zero_grad()
            problem.loss(theta).backward()
            opt.step()
        torch.testing.assert_close(result.thetas[i], theta.detach(), rtol=1e-9, atol=1e-11)
    assert result.options["decoupled_decay"] == 0.5
    # with the polish: a minimum of the problem's loss (no decay term), re-evaluated here
    polished = landscape.train(problem, [2], lr=0.01, steps=300, dtype=torch.float64, decoupled_decay=0.5)
    loss, grad = problem.loss_and_grad(polished.thetas.double())
    torch.testing.assert_close(polished.losses.double(), loss, rtol=1e-12, atol=0)
    assert bool(polished.converged[0]) and float(grad.norm()) <= 1e-3 * max(float(loss[0]), 0.1)


def test_bad_decay_is_refused():
    x = torch.zeros(2, 3)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(landscape.LandscapeError, match="decoupled weight decay"):
            RowOptimizer(x, 0.1, decay=bad)
    for bad in ("-1", "nan", "inf", "1e9", "abc"):
        result = CliRunner().invoke(main, ["train", "ring", "--decoupled-decay", bad])
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and "--decoupled-decay" in lines[0], result.output


def test_the_decay_is_recorded_and_a_run_with_another_is_not_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["train", "ring", "--seeds", "0", "--steps", "50", "--lr", "0.05", "-q", "-o", "m"]
    assert CliRunner().invoke(main, [*args, "--decoupled-decay", "0.25"]).exit_code == 0
    ck = load_checkpoint(tmp_path / "m" / "ring_s0.pt")
    assert ck.meta["train"]["decoupled_decay"] == 0.25
    again = CliRunner().invoke(main, [*args, "--decoupled-decay", "0.25"])
    assert again.exit_code == 0 and "kept" in again.output
    other = CliRunner().invoke(main, args)
    assert other.exit_code != 0 and "exists from another run" in other.stderr


def test_a_checkpoint_from_before_the_option_is_kept_without_decay(tmp_path):
    """Files written before the option existed record no decay: they trained without one."""
    problem = landscape.make_problem("ring")
    train_checkpoints(problem, [0], tmp_path, lr=0.05, steps=20)
    path = tmp_path / "ring_s0.pt"
    ck = load_checkpoint(path)
    del ck.meta["train"]["decoupled_decay"]
    landscape.save_checkpoint(path, problem, ck.theta, loss=ck.loss, seed=0, trajectory=ck.trajectory,
                              meta=ck.meta, grad_norm=ck.grad_norm, converged=ck.converged)
    rows = train_checkpoints(problem, [0], tmp_path, lr=0.05, steps=20)
    assert rows[0]["status"] == "kept"
    with pytest.raises(landscape.LandscapeError, match="exists from another run"):
        train_checkpoints(problem, [0], tmp_path, lr=0.05, steps=20, decoupled_decay=0.1)
