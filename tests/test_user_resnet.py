"""The README's own-architecture example, end to end: a torchvision-style ResNet in a user module, two checkpoints
saved by plain torch code with ``torch.save(model.state_dict())``, then ``connect``, ``align`` and ``render``."""

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import landscape
from landscape_cli.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SIZE = ["--problem", "user_resnet:build", "--width", "3", "-p", "n_train=96"]


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, (result.output, result.stderr)
    return result


@pytest.fixture
def checkpoints(tmp_path, monkeypatch):
    monkeypatch.chdir(EXAMPLES)  # as the README runs it: --problem user_resnet:build from examples/
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import user_resnet

    files = []
    for name, seed in (("a", 0), ("b", 1)):
        model = user_resnet.train(seed, width=3, n_train=96, steps=15)
        assert isinstance(model.stages[1][0].downsample[1], torch.nn.BatchNorm2d)  # the projection skip is there
        torch.save(model.state_dict(), tmp_path / f"{name}.pt")
        files.append(tmp_path / f"{name}.pt")
    return files


def test_a_user_resnet_connects_aligns_and_renders(checkpoints, tmp_path):
    a, b = checkpoints
    problem = landscape.make_problem("user_resnet:build", width=3, n_train=96)
    assert problem.bn == "recompute" and problem.evaluator == "wide"

    report = json.loads(run("connect", a, b, *SIZE, "--method", "linear", "--json", "-o", tmp_path / "p.pt").stdout)
    path, _, _ = landscape.load_path(tmp_path / "p.pt", problem=problem)
    torch.testing.assert_close(path.losses, problem.loss(path.points), rtol=1e-5, atol=1e-6)
    assert report["status"] in ("connected", "not_found") and report["certificate"] == "grid"
    assert (report["status"] == "connected") == (report["max_loss"] <= report["level"])
    assert report["memory"]["k"] >= 1 and report["bn"] == "recompute"

    aligned = tmp_path / "b_aligned.pt"
    moved = json.loads(run("align", a, b, *SIZE, "-o", aligned, "--json").stdout)
    assert {"conv1+stages.0.0.conv2", "stages.1.0.conv2+stages.1.0.downsample.0"} <= set(moved["moved_units"])
    original = landscape.load_checkpoint(b, problem=problem)  # the plain state_dict
    permuted = landscape.load_checkpoint(aligned, problem=problem)
    assert not torch.equal(original.theta, permuted.theta)
    x = problem.data()[0]
    with torch.no_grad():  # the same function: logits of every training image
        torch.testing.assert_close(problem.to_module(permuted.theta)(x), problem.to_module(original.theta)(x),
                                   rtol=1e-5, atol=1e-5)
    assert moved["loss"] == pytest.approx(original.loss, rel=1e-5)

    pytest.importorskip("pyvista")
    import matplotlib.image

    run("render", a, aligned, "--problem", "user_resnet:build", "--width", "3", "-p", "n_train=96", "--grid", "5x5",
        "--size", "160x120", "--no-cache", "-o", tmp_path / "r.png")
    image = matplotlib.image.imread(tmp_path / "r.png")
    assert image.shape[:2] == (120, 160) and image[..., :3].std() > 0.02  # a picture, not a blank frame
