"""Checkpoints load safely, validate everything, and are written atomically."""

import errno
import os
import pickle

import pytest
import torch

import landscape
from landscape import LandscapeError, load_checkpoint, save_checkpoint


@pytest.fixture
def problem():
    return landscape.make_problem("moons_mlp", width=4, n_train=60, n_test=20)


@pytest.fixture
def saved(tmp_path, problem, gen):
    theta = problem.init(gen)
    traj = {"step": torch.arange(3), "theta": theta.repeat(3, 1), "loss": problem.loss(theta.repeat(3, 1))}
    return save_checkpoint(tmp_path / "a.pt", problem, theta, seed=5, trajectory=traj, meta={"note": "x"}), theta


def test_round_trip(saved, problem):
    path, theta = saved
    ck = load_checkpoint(path)
    assert torch.equal(ck.theta, theta)
    assert ck.problem.spec == problem.spec and ck.seed == 5 and ck.meta == {"note": "x"}
    assert ck.loss == pytest.approx(problem.loss(theta).item())
    assert ck.trajectory["theta"].shape == (3, problem.dim)
    assert ck.versions["torch"] == str(torch.__version__)
    info = landscape.problems.describe_checkpoint(ck)
    assert set(info["losses"]) == {"train", "test"} and info["trajectory_points"] == 3


def test_written_atomically_without_leftovers(saved):
    path, _ = saved
    assert sorted(os.listdir(path.parent)) == ["a.pt"]


def test_full_disk_keeps_the_old_file(saved, problem, monkeypatch):
    path, theta = saved
    before = path.read_bytes()

    def full(*_, **__):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(LandscapeError, match="No space left on device; free some disk space"):
        save_checkpoint(path, problem, theta * 2)
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == ["a.pt"]


def test_truncated(saved, tmp_path):
    path, _ = saved
    bad = tmp_path / "cut.pt"
    bad.write_bytes(path.read_bytes()[:500])
    with pytest.raises(LandscapeError, match="cut.pt: corrupt, truncated"):
        load_checkpoint(bad)


def test_corrupt(tmp_path):
    bad = tmp_path / "noise.pt"
    bad.write_bytes(os.urandom(2000))
    with pytest.raises(LandscapeError, match="noise.pt: corrupt, truncated"):
        load_checkpoint(bad)


def test_missing(tmp_path):
    with pytest.raises(LandscapeError, match="no such file"):
        load_checkpoint(tmp_path / "nothing.pt")


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["torch", "raw"])
def test_pickle_with_code_is_refused_and_never_runs(tmp_path, how):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    if how == "torch":
        torch.save({"theta": Evil(marker)}, bad)
    else:
        bad.write_bytes(pickle.dumps(Evil(marker)))
    with pytest.raises(LandscapeError, match="evil.pt: (refused|corrupt)"):
        load_checkpoint(bad)
    assert not marker.exists()


def test_foreign_file(tmp_path):
    bad = tmp_path / "foreign.pt"
    torch.save([1, 2, 3], bad)
    with pytest.raises(LandscapeError, match="not a landscape checkpoint or state_dict"):
        load_checkpoint(bad)
    torch.save({"format": "landscape", "version": 99}, bad)
    with pytest.raises(LandscapeError, match="newer than this landscape reads"):
        load_checkpoint(bad)


def _record(path):
    return torch.load(path, weights_only=True)


def test_wrong_dimension(saved, tmp_path):
    path, theta = saved
    rec = _record(path)
    rec["theta"] = torch.zeros(theta.numel() + 1)
    torch.save(rec, tmp_path / "wrong.pt")
    with pytest.raises(LandscapeError, match="wrong.pt: theta has D = "):
        load_checkpoint(tmp_path / "wrong.pt")


def test_nan_parameters(saved, tmp_path):
    path, theta = saved
    rec = _record(path)
    rec["theta"][3] = float("nan")
    torch.save(rec, tmp_path / "nan.pt")
    with pytest.raises(LandscapeError, match="nan.pt: 1 parameter.* NaN"):
        load_checkpoint(tmp_path / "nan.pt")


def test_nan_parameters_are_not_written(saved, problem, tmp_path):
    """save_checkpoint wrote a NaN θ that no command could load; it is refused, and nothing is written."""
    _, theta = saved
    bad = theta.clone()
    bad[0] = float("inf")
    with pytest.raises(LandscapeError, match=r"diverged\.pt: 1 parameter\(s\) are NaN or infinite"):
        save_checkpoint(tmp_path / "diverged.pt", problem, bad)
    assert not (tmp_path / "diverged.pt").exists()


def test_unknown_problem_in_file(saved, tmp_path):
    path, _ = saved
    rec = _record(path)
    rec["problem"] = {"name": "mystery", "params": {}}
    torch.save(rec, tmp_path / "mystery.pt")
    with pytest.raises(LandscapeError, match="unknown problem 'mystery'"):
        load_checkpoint(tmp_path / "mystery.pt")


def test_mismatched_requested_problem(saved):
    path, _ = saved
    other = landscape.make_problem("moons_mlp", width=5, n_train=60, n_test=20)
    with pytest.raises(LandscapeError, match="made for"):
        load_checkpoint(path, problem=other)


def test_plain_state_dict_needs_its_problem(tmp_path, problem, gen):
    theta = problem.init(gen)
    model = problem.to_module(theta)
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(LandscapeError, match="name the problem"):
        load_checkpoint(tmp_path / "sd.pt")
    ck = load_checkpoint(tmp_path / "sd.pt", problem=problem)
    torch.testing.assert_close(ck.theta, theta)
    torch.save({"epoch": 3, "model_state_dict": model.state_dict()}, tmp_path / "nested.pt")
    torch.testing.assert_close(load_checkpoint(tmp_path / "nested.pt", problem=problem).theta, theta)
    wrong = landscape.make_problem("moons_mlp", width=4, depth=3, n_train=60, n_test=20)
    with pytest.raises(LandscapeError, match="lacks"):
        load_checkpoint(tmp_path / "sd.pt", problem=wrong)


def test_user_problem_file_needs_the_factory(tmp_path, monkeypatch, gen):
    (tmp_path / "userprob.py").write_text(
        "import torch\n"
        "def build():\n"
        "    x = torch.linspace(-1, 1, 10)[:, None]\n"
        "    return torch.nn.Sequential(torch.nn.Linear(1, 2), torch.nn.Tanh(), torch.nn.Linear(2, 1)), (x, x), 'mse'\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    problem = landscape.make_problem("userprob:build")
    path = save_checkpoint(tmp_path / "u.pt", problem, problem.init(gen))
    with pytest.raises(LandscapeError, match="pass --problem userprob:build"):
        load_checkpoint(path)
    assert load_checkpoint(path, problem=problem).problem is problem


def test_written_files_get_the_usual_permissions(saved):
    path, _ = saved
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_user_problem_with_other_parameters_is_named_as_such(tmp_path, monkeypatch, gen):
    (tmp_path / "wallprob.py").write_text(
        "import torch, landscape\n"
        "def build(n=10):\n"
        "    x = torch.linspace(-1, 1, n)[:, None]\n"
        "    p = landscape.from_module(torch.nn.Linear(1, 1), (x, x), 'mse', name='wall', params={'n': n})\n"
        "    return p\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = save_checkpoint(tmp_path / "w.pt", landscape.make_problem("wallprob:build", n=10),
                           torch.zeros(2))
    with pytest.raises(LandscapeError, match=r"other parameters of problem 'wall' \(n: file 10, given 20\)"):
        load_checkpoint(path, problem=landscape.make_problem("wallprob:build", n=20))
    assert load_checkpoint(path, problem=landscape.make_problem("wallprob:build", n=10)).theta.tolist() == [0, 0]


@pytest.mark.parametrize("field, value, message", [
    ("theta", lambda t: t["theta"].clone().fill_(float("nan")), "NaN or infinite"),
    ("loss", lambda t: torch.full_like(t["loss"], float("inf")), "NaN or infinite"),
    ("loss", lambda t: t["loss"][:-1], "malformed trajectory"),
    ("loss", lambda t: "0.5", "malformed trajectory"),
    ("step", lambda t: t["step"].flip(0), "steps do not increase"),
])
def test_trajectories_are_checked_as_theta_is(tmp_path, field, value, message):
    problem = landscape.make_problem("ring")
    result = landscape.train(problem, [0], steps=30, record_every=5)
    path = save_checkpoint(tmp_path / "t.pt", problem, result.thetas[0], trajectory=result.trajectories[0])
    obj = torch.load(path, weights_only=True)
    obj["trajectory"][field] = value(obj["trajectory"])
    torch.save(obj, path)
    with pytest.raises(LandscapeError, match=message):
        load_checkpoint(path)


def test_gradient_norm_and_convergence_are_recorded_and_checked(saved, problem, tmp_path):
    path, theta = saved
    ck = load_checkpoint(path)
    loss, grad = problem.loss_and_grad(theta[None])
    assert ck.grad_norm == pytest.approx(grad.norm().item(), rel=1e-5)
    assert ck.converged is False  # a random initial point is not a minimum
    info = landscape.problems.describe_checkpoint(ck)
    assert info["recorded_grad_norm"] == ck.grad_norm and info["recorded_converged"] is False
    assert info["grad_norm"] == pytest.approx(ck.grad_norm, rel=1e-5) and info["converged"] is False
    rec = _record(path)
    for key, value, message in [("grad_norm", float("nan"), "grad_norm nan is not a finite number"),
                                ("grad_norm", -1.0, "grad_norm -1.0 is not a finite number >= 0"),
                                ("converged", "yes", "converged 'yes' is not true or false")]:
        torch.save({**rec, key: value}, tmp_path / "bad.pt")
        with pytest.raises(LandscapeError, match=f"bad.pt: recorded {message}"):
            load_checkpoint(tmp_path / "bad.pt")
    old = {k: v for k, v in rec.items() if k not in ("grad_norm", "converged")}  # a file from before
    torch.save(old, tmp_path / "old.pt")
    ck_old = load_checkpoint(tmp_path / "old.pt")
    assert ck_old.grad_norm is None and ck_old.converged is None
    from click.testing import CliRunner

    from landscape_cli.cli import main

    shown = CliRunner().invoke(main, ["info", str(path), str(tmp_path / "old.pt")])
    assert shown.exit_code == 0, shown.output
    assert f"|grad L| {ck.grad_norm:.3g} (re-evaluated)  converged NO: not a minimum" in shown.output
    assert "the file records no convergence" in shown.output


def test_a_long_trajectory_is_stored_subsampled_within_its_budget(tmp_path, problem, gen):
    """Evenly spaced records, the first and the last (the minimum) kept, as many as the byte budget holds; the file
    says how many were recorded and kept. A trajectory within the budget is stored whole."""
    theta = problem.init(gen)
    t = 41
    traj = {"step": torch.arange(t) * 10, "theta": theta + torch.arange(t, dtype=theta.dtype)[:, None],
            "loss": torch.arange(t, dtype=torch.float32)}
    budget = 7 * problem.dim * 4  # room for 7 points
    path = save_checkpoint(tmp_path / "thin.pt", problem, theta, trajectory=traj, trajectory_bytes=budget)
    ck = load_checkpoint(path)
    kept = ck.trajectory
    assert kept["step"].tolist() == [0, 70, 130, 200, 270, 330, 400]
    torch.testing.assert_close(kept["theta"], traj["theta"][kept["step"] // 10], rtol=0, atol=0)
    assert kept["loss"].tolist() == (kept["step"] // 10).float().tolist()
    assert ck.meta["trajectory_thinned"] == {"recorded": 41, "kept": 7, "bytes": budget}
    from click.testing import CliRunner
    from landscape_cli.cli import main

    shown = CliRunner().invoke(main, ["info", str(path)])
    assert "trajectory: 7 points over 400 steps (evenly spaced, 41 recorded)" in shown.output, shown.output
    whole = load_checkpoint(save_checkpoint(tmp_path / "whole.pt", problem, theta, trajectory=traj))
    assert torch.equal(whole.trajectory["theta"], traj["theta"]) and "trajectory_thinned" not in whole.meta
    # a budget below three points still keeps three: what a PCA plane of the trajectory needs
    three = load_checkpoint(save_checkpoint(tmp_path / "three.pt", problem, theta, trajectory=traj, trajectory_bytes=1))
    assert three.trajectory["step"].tolist() == [0, 200, 400]


def test_buffers_are_stored_checked_and_taken_into_the_module(tmp_path):
    """A file's BatchNorm statistics become the module's (frozen evaluates them); malformed ones are refused."""
    problem = landscape.make_problem("digits_cnn", width=2, n_train=40, data_seed=7)
    theta = problem.init(torch.Generator().manual_seed(0))
    stats = {"1.running_mean": torch.full((2,), 0.5), "1.running_var": torch.full((2,), 2.0)}
    path = save_checkpoint(tmp_path / "bn.pt", problem, theta, buffers=stats)
    ck = load_checkpoint(path)
    assert torch.equal(ck.buffers["1.running_var"], stats["1.running_var"])
    assert torch.equal(dict(ck.problem.module().named_buffers())["1.running_mean"], stats["1.running_mean"])
    record = torch.load(path, weights_only=True)
    record["buffers"]["1.running_var"] = torch.tensor([float("nan"), 1.0])
    torch.save(record, tmp_path / "nan.pt")
    with pytest.raises(LandscapeError, match="malformed buffers"):
        load_checkpoint(tmp_path / "nan.pt")
