"""The conv problems end to end: digits_cnn and digits_resnet through every command, at tiny widths.

Ground truths: a permuted (and, where the symmetry allows, rescaled) copy of a residual net is the same
function and weight or activation matching recovers it exactly; BatchNorm statistics recomputed at the
aligned point are the original ones permuted with their channels; every path method returns its
endpoints and a certified status with the ``recompute`` BatchNorm policy.
"""

import json

import pytest
import torch
from click.testing import CliRunner

import landscape
from landscape_cli.cli import main

#: Tiny instances that train to minima (|grad L| <= 1e-4 at cross-entropy below 1e-4) in seconds.
TINY = {"digits_cnn": {"width": 4, "n_train": 64}, "digits_resnet": {"width": 4, "n_train": 64}}


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def params(name):
    return [x for k, v in TINY[name].items() if k != "width" for x in ("-p", f"{k}={v}")]


@pytest.fixture(scope="module", params=sorted(TINY))
def minima(request, tmp_path_factory):
    """Two seeds of each problem, trained as one batch by ``landscape train``."""
    name = request.param
    out = tmp_path_factory.mktemp(name)
    result = run("train", name, "-w", TINY[name]["width"], *params(name), "--seeds", "0,1", "--steps", 400,
                 "--lr", 0.03, "-o", out, "--json")
    rows = json.loads(result.stdout)
    return name, [r["file"] for r in rows], rows


def test_train_batched_over_seeds_reaches_minima(minima):
    name, files, rows = minima
    assert [r["seed"] for r in rows] == [0, 1] and all(r["converged"] for r in rows)
    for f, r in zip(files, rows):
        ck = landscape.load_checkpoint(f)
        assert ck.problem.name == name and ck.problem.bn == "recompute"
        loss, grad = ck.problem.loss_and_grad(ck.theta)
        assert float(loss) == pytest.approx(r["loss"], rel=1e-4) and float(grad.norm()) <= 1e-4


FAST = {"linear": [], "string": [], "bezier": ["-O", "steps=200"], "polychain": ["-O", "steps=200"],
        "neb": ["-O", "cycles=2", "-O", "steps=30"]}


@pytest.mark.parametrize("method", sorted(FAST))
def test_connect_every_method_with_recomputed_batchnorm(minima, method, tmp_path):
    name, (a, b), _ = minima
    out = tmp_path / "p.pt"
    report = json.loads(run("connect", a, b, "--method", method, *FAST[method], "--level", 0.05, "-o", out,
                            "--json").stdout)
    assert report["bn"] == "recompute" and report["certificate"] == "grid"
    path, problem, _ = landscape.load_path(out)
    ends = [landscape.load_checkpoint(f).theta for f in (a, b)]
    assert torch.equal(path.points[0], ends[0]) and torch.equal(path.points[-1], ends[1])
    torch.testing.assert_close(path.losses, problem.loss(path.points), rtol=1e-4, atol=1e-7)
    assert report["max_loss"] >= max(report["endpoint_losses"]) - 1e-7
    if method == "linear":
        assert report["status"] == "not_found"  # two independent minima: a barrier on the straight line
    if method == "string":
        assert report["status"] == "connected" and report["max_loss"] <= report["level"]


def test_align(minima, tmp_path):
    name, (a, b), _ = minima
    aligned = tmp_path / "b_aligned.pt"
    report = json.loads(run("align", a, b, "-o", aligned, "--json").stdout)
    before, after = landscape.load_checkpoint(b), landscape.load_checkpoint(aligned)
    assert after.loss == pytest.approx(before.loss, rel=1e-3)  # the same function
    assert report["distance_after"] < report["distance_before"]


def test_valleys(minima):
    name, (a, b), _ = minima
    valleys = json.loads(run("valleys", a, b, "--level", 0.05, "--json").stdout)
    losses = [landscape.load_checkpoint(f).loss for f in (a, b)]
    assert valleys["global_loss"] == pytest.approx(min(losses), rel=1e-4)
    assert len(valleys["levels"][-1]["valleys"]) == 1  # one valley at a level above the barrier string crosses


def test_render(minima, tmp_path):
    import numpy as np
    from PIL import Image

    name, (a, b), _ = minima
    path = tmp_path / "p.pt"
    run("connect", a, b, "--method", "linear", "-o", path)
    png = tmp_path / "v.png"
    run("render", a, b, "--path", path, "--grid", "9x7", "--no-cache", "--size", "160x120", "-o", png)
    with Image.open(png) as im:
        pixels = np.asarray(im.convert("L"))
    assert pixels.shape == (120, 160) and len(np.unique(pixels)) > 2


def test_a_study_of_conv_widths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cnn.toml").write_text("""
[study]
name = "cnn"
task = "train_minima"

[problem]
name = "digits_cnn"
n_train = 32

[grid]
problem.width = [2, 3]
seed = { start = 0, stop = 1 }

[task]
steps = 20
lr = 0.01
until_loss = 0.01
""")
    out = json.loads(run("study", "run", "cnn.toml", "--workers", 0, "--quiet", "--no-report", "--json").stdout)
    assert (out["tasks"], out["done"], out["failed"]) == (2, 2, 0)


# ------------------------------------------------------------------ residual alignment, exactly
@pytest.fixture(scope="module")
def resnet():
    problem = landscape.make_problem("digits_resnet", width=3, depth=2, n_train=48)
    theta = landscape.train(problem, seeds=[0], steps=60, lr=0.02, polish_steps=0).thetas[0].double()
    return problem, theta


def test_the_residual_permutation_spec_is_derived(resnet):
    problem, _ = resnet
    sym = landscape.symmetry(problem)
    names = [g.name for g in sym.groups]
    # the stream at 8x8 is written by the stem and both blocks' second convs; at 4x4 by the projection and convs
    assert names[0] == "stem+blocks.0.conv2+blocks.1.conv2"
    assert "blocks.2.shortcut+blocks.2.conv2+blocks.3.conv2" in names
    stream = sym.groups[0]
    moved = {(a.name, a.axis) for a in stream.axes}
    assert {("blocks.0.bn1.weight", 0), ("blocks.1.bn1.bias", 0), ("blocks.2.shortcut.weight", 1),
            ("blocks.2.conv1.weight", 1)} <= moved
    assert stream.degree is None and all(g.degree == 1 for g in sym.groups if "+" not in g.name)
    covered = {a.name for g in sym.groups for a in g.axes}
    assert covered == set(problem.layout.names) - {"fc.bias"}  # every tensor but the output's bias moves


@pytest.mark.parametrize("method", ["weight", "activation"])
def test_a_permuted_rescaled_resnet_comes_back_exactly(resnet, method):
    problem, a = resnet
    sym = landscape.symmetry(problem)
    perms, scales = sym.random(generator=torch.Generator().manual_seed(3), rescale=True)
    assert scales and set(scales) < set(perms)  # only the untied inner layers rescale
    b = sym.transform(a, perms, scales)
    x = problem.data("train")[0].double()
    with torch.no_grad():
        fa, fb = problem.to_module(a).double()(x), problem.to_module(b).double()(x)
    torch.testing.assert_close(fb, fa, rtol=1e-5, atol=1e-5)  # the same function
    result = landscape.align(problem, a, b, method=method, rescale=True, generator=torch.Generator().manual_seed(0))
    inverse = sym.inverse(perms)[0]
    for g in sym.groups:
        assert torch.equal(result.permutations[g.name], inverse[g.name]), g.name
    torch.testing.assert_close(result.theta, a, rtol=1e-9, atol=1e-10)
    straight = landscape.certify(problem, landscape.paths.linear_path(problem, a, result.theta))
    assert straight.barrier < 1e-9


def test_batchnorm_statistics_follow_their_channels(resnet):
    problem, a = resnet
    sym = landscape.symmetry(problem)
    perms, _ = sym.random(generator=torch.Generator().manual_seed(5))
    b = sym.permute(a, perms)
    stats_a, stats_b = problem.batchnorm_statistics(a), problem.batchnorm_statistics(b)
    stream = sym.groups[0]
    p = perms[stream.name]
    for layer in ("blocks.0.bn1", "blocks.1.bn1"):  # BatchNorms reading the first stream
        for i in range(2):
            torch.testing.assert_close(stats_b[layer][i], stats_a[layer][i][p], rtol=1e-9, atol=1e-12)
