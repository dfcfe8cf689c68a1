"""Batched training: the same as independent optimisers, stops on target, resumes."""

import pytest
import torch

import landscape
from landscape.minima.train import train_checkpoints


def test_batched_adam_equals_torch_adam_per_seed():
    problem = landscape.make_problem("moons_mlp", width=6, n_train=80, n_test=10)
    result = landscape.train(problem, [3, 4], lr=0.01, steps=25, dtype=torch.float64, polish_steps=0)
    for i, seed in enumerate([3, 4]):
        theta = problem.init(torch.Generator().manual_seed(seed), dtype=torch.float64).requires_grad_(True)
        opt = torch.optim.Adam([theta], lr=0.01)
        for _ in range(25):
            opt.zero_grad()
            problem.loss(theta).backward()
            opt.step()
        torch.testing.assert_close(result.thetas[i], theta.detach(), rtol=1e-9, atol=1e-11)


def test_gd_with_momentum_equals_torch_sgd():
    problem = landscape.make_problem("deep_linear", n_train=40)
    result = landscape.train(problem, [0], optimizer="gd", lr=0.05, momentum=0.9, steps=30, dtype=torch.float64,
                             polish_steps=0)
    theta = problem.init(torch.Generator().manual_seed(0), dtype=torch.float64).requires_grad_(True)
    opt = torch.optim.SGD([theta], lr=0.05, momentum=0.9)
    for _ in range(30):
        opt.zero_grad()
        problem.loss(theta).backward()
        opt.step()
    torch.testing.assert_close(result.thetas[0], theta.detach(), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("method", sorted(landscape.OPTIMIZERS))
def test_the_row_optimizer_is_one_torch_optimizer_per_row(method):
    """Rows with their own learning rates, stepping on their own schedules, on a quadratic L = Σ c·x²."""
    from landscape.minima.optim import RowOptimizer

    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    curv = torch.rand(4, 3, generator=g, dtype=torch.float64) + 0.5
    lr = torch.tensor([0.1, 0.02, 0.05, 0.3], dtype=torch.float64)
    schedule = [[0, 1, 2, 3], [1, 3], [0, 1, 2, 3], [2], [0, 3], [0, 1, 2, 3]]  # the rows that step, step by step
    x = x0.clone()
    rows_opt = RowOptimizer(x, lr, method=method, momentum=0.9)
    for rows in schedule:
        rows = torch.tensor(rows)
        rows_opt.step(x, 2 * curv[rows] * x[rows], rows)
    for i in range(4):
        theta = x0[i].clone().requires_grad_(True)
        opt = (torch.optim.Adam([theta], lr=float(lr[i])) if method == "adam"
               else torch.optim.SGD([theta], lr=float(lr[i]), momentum=0.9))
        for rows in schedule:
            if i in rows:
                opt.zero_grad()
                (curv[i] * theta * theta).sum().backward()
                opt.step()
        torch.testing.assert_close(x[i], theta.detach(), rtol=1e-12, atol=1e-14)


def test_a_seed_does_not_depend_on_its_companions():
    problem = landscape.make_problem("quadratic_regression", n_train=100, n_test=10)
    alone = landscape.train(problem, [2], lr=0.02, steps=40, dtype=torch.float64)
    together = landscape.train(problem, [0, 1, 2], lr=0.02, steps=40, dtype=torch.float64)
    torch.testing.assert_close(alone.thetas[0], together.thetas[2], rtol=1e-9, atol=1e-12)


def test_until_loss_stops_each_seed_below_the_level():
    problem = landscape.make_problem("quadratic_regression", n_train=200, n_test=10)
    result = landscape.train(problem, [0, 1, 2], lr=0.02, steps=4000, until_loss=0.05)
    assert result.reached_target.all()
    assert result.polish_steps.sum() == 0  # points on the way to a level, not minima: never polished
    assert (result.losses <= 0.05).all()
    assert (result.losses > 0.04).all()  # it stopped on arrival, it did not overshoot far
    assert len(set(result.steps.tolist())) > 1  # seeds arrive at different times and stop independently
    for traj, steps in zip(result.trajectories, result.steps):
        assert traj["step"][-1] == steps
        assert traj["loss"][-1] <= 0.05
        assert traj["theta"].shape[0] <= 101


def test_trajectory_is_bounded_and_thinned():
    problem = landscape.make_problem("ring")
    result = landscape.train(problem, [0], lr=0.01, steps=1000, record_every=1, max_records=50)
    traj = result.trajectories[0]
    assert 25 <= traj["theta"].shape[0] <= 51
    assert torch.all(traj["step"][1:] > traj["step"][:-1])
    torch.testing.assert_close(problem.loss(traj["theta"].double()), traj["loss"].double(), rtol=1e-5, atol=1e-6)


def test_divergence_is_a_clear_error():
    problem = landscape.make_problem("himmelblau")
    with pytest.raises(landscape.LandscapeError, match="diverged .* lower the learning rate"):
        landscape.train(problem, [0], optimizer="gd", lr=10.0, steps=50)


def test_training_reaches_the_known_minima():
    problem = landscape.make_problem("himmelblau")
    result = landscape.train(problem, range(6), lr=0.05, steps=3000, dtype=torch.float64)
    dist = torch.cdist(result.thetas, problem.minima).min(1).values
    assert dist.max() < 1e-4


def test_checkpoints_resume(tmp_path):
    problem = landscape.make_problem("deep_linear", n_train=30)
    first = train_checkpoints(problem, [0, 1], tmp_path, lr=0.01, steps=20)
    assert [r["status"] for r in first] == ["trained", "trained"]
    stamp = (tmp_path / "deep_linear_w8_s0.pt").stat().st_mtime_ns
    again = train_checkpoints(problem, [0, 1, 2], tmp_path, lr=0.01, steps=20)
    assert [r["status"] for r in again] == ["kept", "kept", "trained"]
    assert (tmp_path / "deep_linear_w8_s0.pt").stat().st_mtime_ns == stamp
    with pytest.raises(landscape.LandscapeError, match="exists from another run"):
        train_checkpoints(problem, [0], tmp_path, lr=0.02, steps=20)


def test_defaults_reach_himmelblaus_four_minima_and_say_so():
    """16 seeds with the defaults (Adam, lr 1e-3, 2000 steps: alone, 6 of 8 seeds stop on a slope) end at
    Himmelblau's four minima, each one stationary by the criterion; without the polish they do not."""
    from landscape.minima.stationary import is_stationary

    problem = landscape.make_problem("himmelblau")
    result = landscape.train(problem, range(16))
    assert result.reached_target is None  # no target was set, so none was reached or missed
    assert result.converged.all() and (result.grad_norms <= 1e-4).all() and (result.losses < 1e-8).all()
    dist = torch.cdist(result.thetas.double(), problem.minima)
    assert dist.min(1).values.max() < 1e-5 and set(dist.argmin(1).tolist()) == {0, 1, 2, 3}
    loss, grad = problem.loss_and_grad(result.thetas)
    assert is_stationary(loss, grad.norm(dim=1)).tolist() == result.converged.tolist()
    raw = landscape.train(problem, range(16), polish_steps=0)
    assert (~raw.converged).sum() >= 8 and raw.losses.max() > 1.0  # what the defaults gave before


@pytest.mark.parametrize("name", ["double_well", "ring", "deep_linear"])
def test_defaults_converge_on_the_other_smooth_problems(name):
    problem = landscape.make_problem(name)
    result = landscape.train(problem, range(4))
    assert result.converged.all()
    tol = 1e-3 * result.losses.abs().clamp_min(0.1)
    assert (result.grad_norms <= tol).all()


def test_polish_is_batched_and_leaves_minima_alone():
    problem = landscape.make_problem("himmelblau")
    start = torch.cat([problem.minima, problem.minima + 0.3])
    out = landscape.polish(problem, start)
    assert out.steps[:4].tolist() == [0, 0, 0, 0] and torch.equal(out.thetas[:4], start[:4])
    assert out.converged.all() and (out.steps[4:] > 0).all()
    assert (out.losses <= out.start_losses).all() and (out.start_grad_norms[4:] > 1).all()
    torch.testing.assert_close(out.thetas[4:], problem.minima, atol=1e-6, rtol=0)


def test_unconverged_seeds_are_reported_not_hidden(tmp_path):
    # cross-entropy on separable moons has no finite minimum: |grad L| / L stays of order one
    problem = landscape.make_problem("moons_mlp", width=8, n_train=60, n_test=10)
    rows = train_checkpoints(problem, [0], tmp_path, lr=0.01, steps=50, polish_steps=20)
    assert rows[0]["converged"] is False and rows[0]["grad_norm"] > 1e-4
    assert rows[0]["reached_target"] is None and rows[0]["polish_steps"] > 0
    ck = landscape.load_checkpoint(rows[0]["file"])
    assert ck.converged is False and ck.grad_norm == pytest.approx(rows[0]["grad_norm"])


def test_progress_bar_ends_full_when_training_stops_early(capsys):
    """With --until-loss the bar's total becomes the steps taken, so it never ends at a fraction (or shows a
    remaining time for steps that will not run)."""
    problem = landscape.make_problem("moons_mlp", width=8, n_train=100, n_test=10)
    result = landscape.train(problem, [0, 1], lr=0.01, steps=5000, until_loss=0.3, progress=True)
    taken = int(max(result.steps))
    assert 0 < taken < 5000 and bool(result.reached_target.all())
    err = capsys.readouterr().err
    assert f"{taken}/{taken}" in err and "until loss <= 0.3" in err and "/5000" not in err.split("\r")[-2]
