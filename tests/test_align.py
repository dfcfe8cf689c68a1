"""Alignment modulo symmetry: permuted (and rescaled) copies come back exactly, barriers vanish.

Ground truths: a trained network and a randomly permuted, rescaled copy are the same function,
so the right alignment is known (the inverse permutation) and the straight path between the
network and its aligned copy has no barrier at all; Freeman & Bruna's (ICLR 2017) 2-3-2 ReLU
example, built by hand; weight matching never increases the distance (the identity is a candidate).
"""

import json

import pytest
import torch
from click.testing import CliRunner

import landscape
from landscape import LandscapeError

from landscape_cli.cli import main

CASES = {
    "digits_mlp": ({"width": 16}, 150),
    "moons_mlp": ({"width": 8, "n_train": 200, "n_test": 50}, 300),
    "teacher_student": ({"width": 5, "n_train": 200, "n_test": 50}, 300),
    "teacher_student_quadratic": ({"width": 5, "n_train": 200, "n_test": 50, "activation": "quadratic"}, 300),
    "deep_linear": ({"n_train": 50}, 300),
}


@pytest.fixture(scope="module")
def trained():
    out = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # these nets are tiny: one thread is fastest, and does not stall on a busy machine
    try:
        for key, (params, steps) in CASES.items():
            problem = landscape.make_problem(key.replace("_quadratic", ""), **params)
            out[key] = problem, landscape.train(problem, seeds=[0, 1], steps=steps, lr=0.02, polish_steps=0).thetas
    finally:
        torch.set_num_threads(threads)
    return out


def barrier(problem, a, b, level=None):
    return landscape.certify(problem, landscape.paths.linear_path(problem, a, b), level)


def outputs(problem, theta):
    with torch.no_grad():
        return problem.to_module(theta)(problem.data("train")[0])


@pytest.mark.parametrize("method", ["weight", "activation"])
@pytest.mark.parametrize("key", list(CASES))
def test_a_permuted_and_rescaled_copy_comes_back_exactly(trained, key, method):
    problem, thetas = trained[key]
    a = thetas[0]
    sym = landscape.symmetry(problem)
    rescale = problem.weight_decay == 0  # weight decay makes rescaling change the loss
    perms, scales = sym.random(generator=torch.Generator().manual_seed(3), rescale=rescale)
    b = sym.transform(a, perms, scales)
    result = landscape.align(problem, a, b, method=method, generator=torch.Generator().manual_seed(0))
    assert result.rescaled == rescale
    inverse = sym.inverse(perms)[0]
    for g in sym.groups:  # the permutation found is exactly the one that undoes the shuffle
        assert torch.equal(result.permutations[g.name], inverse[g.name])
    # the aligned b is b's function (and a's) ...
    torch.testing.assert_close(outputs(problem, result.theta), outputs(problem, b), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(result.theta, a, rtol=1e-5, atol=1e-6)
    assert float(problem.loss(result.theta)) == pytest.approx(float(problem.loss(b)), rel=1e-4, abs=1e-7)
    # ... and the straight path to it is flat, while the one to the shuffled copy is not
    before, after = barrier(problem, a, b), barrier(problem, a, result.theta)
    assert before.barrier > 0.1 and after.barrier < 1e-5
    assert result.distance_after < 1e-5 * result.distance_before


def test_aligning_many_points_at_once_equals_one_at_a_time(trained):
    problem, thetas = trained["moons_mlp"]
    sym = landscape.symmetry(problem)
    copies = [sym.transform(thetas[1], *sym.random(generator=torch.Generator().manual_seed(s), rescale=True))
              for s in range(3)]
    together = landscape.align(problem, thetas[0], torch.stack(copies), generator=torch.Generator().manual_seed(0))
    assert together.theta.shape == (3, problem.dim) and len(together.distance_after) == 3
    for i, b in enumerate(copies):
        alone = landscape.align(problem, thetas[0], b, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(together.theta[i], alone.theta, rtol=1e-5, atol=1e-6)
        # three copies of the same network land on the same point
        torch.testing.assert_close(together.theta[i], together.theta[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["weight", "activation"])
def test_independent_minima_come_closer(trained, method):
    problem, thetas = trained["moons_mlp"]
    a, b = thetas
    plain = landscape.align(problem, a, b, method=method, rescale=False, generator=torch.Generator().manual_seed(4))
    # the identity is a candidate of weight matching, so it never moves b away from a
    assert plain.distance_after <= plain.distance_before + 1e-6
    if method == "weight":
        objective = plain.info["method"]["objective"]
        assert objective["after"][0] >= objective["before"][0]
        again = landscape.align(problem, a, b, method=method, rescale=False, generator=torch.Generator().manual_seed(4))
        assert torch.equal(again.theta, plain.theta)  # deterministic for a fixed generator
    for result in (plain, landscape.align(problem, a, b, method=method)):
        torch.testing.assert_close(outputs(problem, result.theta), outputs(problem, b), rtol=1e-4, atol=1e-5)
        trajectory = torch.stack([a, b, (a + b) / 2])
        moved = result.apply(trajectory)  # any point of b's network moves the same way
        torch.testing.assert_close(problem.loss(moved), problem.loss(trajectory), rtol=1e-5, atol=1e-6)
    assert barrier(problem, a, plain.theta).barrier < barrier(problem, a, b).barrier


def freeman_bruna():
    """A 2-3-2 ReLU network fitting its own outputs exactly: two global minima, θ and θ with units 0, 1 swapped."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 2, generator=g, dtype=torch.float64)
    w1 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    b1 = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    w2 = torch.tensor([[1.0, -1.0, 0.5], [0.5, 1.0, -1.0]], dtype=torch.float64)
    b2 = torch.tensor([0.0, 0.2], dtype=torch.float64)
    y = torch.relu(x @ w1.T + b1) @ w2.T + b2
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)).double()
    problem = landscape.from_module(model, (x, y), "mse")
    theta = problem.layout.flatten({"0.weight": w1, "0.bias": b1, "2.weight": w2, "2.bias": b2})
    swap = [1, 0, 2]  # by hand: rows of the first layer, columns of the second
    swapped = problem.layout.flatten({"0.weight": w1[swap], "0.bias": b1[swap], "2.weight": w2[:, swap], "2.bias": b2})
    mid = ((w1 + w1[swap]) / 2, (b1 + b1[swap]) / 2, (w2 + w2[:, swap]) / 2)
    mid_loss = float((torch.relu(x @ mid[0].T + mid[1]) @ mid[2].T + b2 - y).pow(2).mean())
    return problem, theta, swapped, mid_loss


@pytest.mark.parametrize("method", ["weight", "activation"])
def test_freeman_bruna_swapped_units(method):
    problem, theta, swapped, mid_loss = freeman_bruna()
    assert float(problem.loss(theta)) < 1e-28 and float(problem.loss(swapped)) < 1e-28  # zero up to rounding
    level = 1e-3
    straight = barrier(problem, theta, swapped, level)
    assert straight.status == "not_found" and mid_loss > 0.1
    assert straight.max_loss >= mid_loss  # the midpoint is on the dense grid: the hill is at least this high
    for rescale in (False, True):
        result = landscape.align(problem, theta, swapped, method=method, rescale=rescale)
        assert result.permutations["0"].tolist() == [1, 0, 2]
        if rescale:
            torch.testing.assert_close(result.theta, theta, rtol=1e-12, atol=1e-12)
        else:
            assert torch.equal(result.theta, theta)  # identical
        aligned = barrier(problem, theta, result.theta, level)
        assert aligned.status == "connected" and aligned.barrier < 1e-12


def test_none_changes_nothing_unless_asked_to_rescale(trained):
    problem, thetas = trained["teacher_student"]
    a, b = thetas
    result = landscape.align(problem, a, b, method="none")
    assert torch.equal(result.theta, b) and not result.rescaled and result.moved_units == {"0": 0}
    gauge = landscape.align(problem, a, b, method="none", rescale=True)  # b in a's gauge, units unmoved
    assert gauge.rescaled and gauge.moved_units == {"0": 0} and not torch.equal(gauge.theta, b)
    torch.testing.assert_close(outputs(problem, gauge.theta), outputs(problem, b), rtol=1e-5, atol=1e-5)


def test_bad_requests_are_one_line_errors(trained):
    problem, thetas = trained["deep_linear"]
    a, b = thetas
    with pytest.raises(LandscapeError, match="unknown alignment method 'greedy'"):
        landscape.align(problem, a, b, method="greedy")
    with pytest.raises(LandscapeError, match="weight decay"):
        landscape.align(problem, a, b, rescale=True)
    with pytest.raises(LandscapeError, match="theta_b has shape"):
        landscape.align(problem, a, b[:-1])
    with pytest.raises(LandscapeError, match="no rescaling symmetry"):
        sigmoid = landscape.make_problem("quadratic_regression", n_train=20, n_test=5)
        theta = sigmoid.init(torch.Generator().manual_seed(0))
        landscape.align(sigmoid, theta, theta, rescale=True)
    with pytest.raises(LandscapeError, match="not a network"):
        ring = landscape.make_problem("ring")
        landscape.align(ring, ring.minima[0], ring.minima[1])


def test_align_command_writes_the_same_function(trained, tmp_path):
    problem, thetas = trained["moons_mlp"]
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    trajectory = {"step": torch.tensor([0, 1]), "theta": torch.stack([thetas[0], thetas[1]]),
                  "loss": problem.loss(torch.stack([thetas[0], thetas[1]]))}
    landscape.save_checkpoint(a, problem, thetas[0], seed=0)
    landscape.save_checkpoint(b, problem, thetas[1], seed=1, trajectory=trajectory, meta={"note": "kept"})
    out = tmp_path / "b_aligned.pt"
    result = CliRunner().invoke(main, ["align", str(a), str(b), "-o", str(out), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    ck = landscape.load_checkpoint(out)
    assert ck.seed == 1 and ck.meta["note"] == "kept" and ck.meta["alignment"]["method"] == "weight"
    assert ck.meta["alignment"]["reference"] == str(a)
    torch.testing.assert_close(outputs(problem, ck.theta), outputs(problem, thetas[1]), rtol=1e-4, atol=1e-5)
    assert report["loss"] == pytest.approx(float(problem.loss(thetas[1])), rel=1e-5)
    barriers = report["linear_barrier"]
    assert barriers["before"] == pytest.approx(barrier(problem, thetas[0], thetas[1]).barrier, rel=1e-6)
    assert barriers["after"] == pytest.approx(barrier(problem, thetas[0], ck.theta).barrier, rel=1e-5, abs=1e-7)
    torch.testing.assert_close(problem.loss(ck.trajectory["theta"]), trajectory["loss"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ck.trajectory["theta"][1], ck.theta)
    human = CliRunner().invoke(main, ["align", str(a), str(b), "-o", str(out), "--method", "activation"])
    assert human.exit_code == 0 and "linear barrier:" in human.output and "activation matching" in human.output


def test_align_command_refuses_minima_of_different_problems(trained, tmp_path):
    p1, t1 = trained["moons_mlp"]
    p2, t2 = trained["teacher_student"]
    landscape.save_checkpoint(tmp_path / "a.pt", p1, t1[0])
    landscape.save_checkpoint(tmp_path / "b.pt", p2, t2[0])
    result = CliRunner().invoke(main, ["align", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "-o",
                                       str(tmp_path / "c.pt")])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "b.pt: made for" in result.stderr and not (tmp_path / "c.pt").exists()


def test_barrier_vs_width_script(tmp_path):
    from landscape_cli.barrier_vs_width import VARIANTS, main as script

    out = tmp_path / "bw"
    threads = torch.get_num_threads()
    args = ["--problem", "moons_mlp", "-p", "n_train=100", "-p", "n_test=50", "--widths", "4,6", "--seeds", "0..2",
            "--steps", 60, "--lr", 0.05, "--until-loss", 0.5, "--resolution", 16, "--threads", 1, "-o", out, "--json"]
    result = CliRunner().invoke(script, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert torch.get_num_threads() == threads  # the script gives the thread count back
    summary = json.loads(result.stdout)
    assert [r["width"] for r in summary] == [4, 6] and all(r["pairs"] == 3 for r in summary)
    rows = json.loads((out / "barriers.json").read_text())
    assert len(rows) == 2 * 3 * len(VARIANTS)
    problem = landscape.make_problem("moons_mlp", width=6, n_train=100, n_test=50)
    a, b = (landscape.load_checkpoint(out / "w6" / f"moons_mlp_w6_s{s}.pt").theta for s in (0, 2))
    straight = landscape.certify(problem, landscape.paths.linear_path(problem, a, b), resolution=16)
    row = next(r for r in rows if r["width"] == 6 and r["seeds"] == [0, 2] and r["method"] == "none")
    assert row["barrier"] == pytest.approx(straight.barrier, rel=1e-6, abs=1e-9)


def test_connect_with_alignment_reports_the_barrier_before_and_after(trained, tmp_path):
    problem, thetas = trained["moons_mlp"]
    a = thetas[0]
    sym = landscape.symmetry(problem)
    perms, scales = sym.random(generator=torch.Generator().manual_seed(5), rescale=True)
    b = sym.transform(a, perms, scales)  # the same function as a, far from it in parameter space
    plain = landscape.connect(problem, a, b, method="linear")
    path = landscape.connect(problem, a, b, method="linear", align="weight")
    assert plain.status == "not_found" and plain.barrier > 0.1
    info = path.info["alignment"]
    assert info["linear_barrier_before"] == pytest.approx(plain.barrier, rel=1e-6)
    assert path.status == "connected" and path.barrier < 1e-5  # a and the aligned b coincide
    torch.testing.assert_close(path.points[-1], a, rtol=1e-5, atol=1e-6)
    landscape.save_checkpoint(tmp_path / "a.pt", problem, a)
    landscape.save_checkpoint(tmp_path / "b.pt", problem, b)
    result = CliRunner().invoke(main, ["connect", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--align",
                                       "weight", "--method", "linear", "--json"], catch_exceptions=False)
    report = json.loads(result.stdout)
    assert report["status"] == "connected"
    assert report["alignment"]["linear_barrier_before"] == pytest.approx(plain.barrier, rel=1e-5)
    with pytest.raises(LandscapeError, match="unknown alignment"):
        landscape.connect(problem, a, b, align="sideways")


def test_connect_with_alignment_repeats_by_default_and_leaves_the_global_generator_alone(trained):
    problem, thetas = trained["digits_mlp"]  # two hidden layers: weight matching draws their order
    a, b = thetas[0], thetas[1]

    def run(global_seed, **kw):
        torch.manual_seed(global_seed)
        state = torch.get_rng_state()
        path = landscape.connect(problem, a, b, method="string", align="weight", steps=20, max_beads=4, **kw)
        assert torch.equal(torch.get_rng_state(), state)  # the library never draws from the global generator
        return path

    first, second = run(1), run(2)
    assert torch.equal(first.points, second.points) and torch.equal(first.losses, second.losses)
    assert first.info["alignment"] == {**second.info["alignment"], "seconds": first.info["alignment"]["seconds"]}
    # the default is the documented rule: one generator seeded 0, shared by the alignment and the method
    seeded = run(3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(first.points, seeded.points)
    other = run(1, generator=torch.Generator().manual_seed(1))
    assert other.points.shape != first.points.shape or not torch.equal(other.points, first.points)


def test_every_draw_without_a_generator_repeats_and_spares_the_global_generator(trained):
    problem, thetas = trained["digits_mlp"]
    sym = landscape.symmetry(problem)
    ring = landscape.make_problem("ring")

    def element():
        perms, scales = sym.random(rescale=True)
        return torch.cat([*(p.double() for p in perms.values()), *scales.values()])

    draws = {
        "align": lambda: landscape.align(problem, thetas[0], thetas[1]).theta,
        "symmetry.random": element,
        "init": lambda: problem.init(n=2),
        "sample_sublevel_set": lambda: landscape.sample_sublevel_set(ring, ring.minima, 0.3, n_samples=5).points,
        "plane": lambda: landscape.make_plane("random", problem, thetas[:1]).directions,
        "top_eigenvalue": lambda: landscape.minima.top_eigenvalue(problem, thetas, iters=3)[1],
        "hessian_trace": lambda: landscape.minima.hessian_trace(problem, thetas, samples=3)[0],
    }
    for name, draw in draws.items():
        torch.manual_seed(1)
        state = torch.get_rng_state()
        once = draw()
        assert torch.equal(torch.get_rng_state(), state), name
        torch.manual_seed(2)
        assert torch.equal(draw(), once), name


@pytest.mark.parametrize("layer_norm", [False, True])
def test_align_says_which_group_each_transformer_layer_was_matched_over(tmp_path, layer_norm):
    """Without LayerNorm every read and write of the residual stream is linear (any orthogonal map keeps the
    function); with it only a permutation does. The table names the group of each layer."""
    problem = landscape.make_problem("modadd_transformer", p=5, d_model=8, heads=2, d_mlp=8, layer_norm=layer_norm)
    g = torch.Generator().manual_seed(0)
    a, b = (landscape.save_checkpoint(tmp_path / f"{n}.pt", problem, theta, seed=i)
            for i, (n, theta) in enumerate(zip("ab", problem.init(g, n=2))))
    result = CliRunner().invoke(main, ["align", str(a), str(b), "-o", str(tmp_path / "c.pt")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines() if line.startswith(("resid", "blocks"))}
    assert "group" in result.output.splitlines()[1]
    assert ("permutation S(8)" if layer_norm else "orthogonal O(8)") in rows["resid"]
    assert "2 heads permuted, orthogonal O(4) inside each" in rows["blocks.0.attn.qk"]


def test_barrier_vs_width_scales_named_parameters_and_trains_to_minima(tmp_path):
    """``--scale d_model=1 --scale d_mlp=2`` makes a width-W transformer of d_model W and d_mlp 2W; ``--to-minima``
    trains checked minima (the polish runs) instead of stopping at a loss; a malformed scale is one line."""
    from landscape_cli.barrier_vs_width import main as script

    out = tmp_path / "tw"
    args = ["--problem", "modadd_transformer", "-p", "p=5", "-p", "heads=2", "--widths", "4", "--scale", "d_model=1",
            "--scale", "d_mlp=2", "--seeds", "0,1", "--steps", 200, "--lr", 0.01, "--to-minima", "--resolution", 8,
            "--threads", 1, "-o", out, "--json"]
    result = CliRunner().invoke(script, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    ckpt = landscape.load_checkpoint(out / "w4" / "modadd_transformer_s0.pt")
    assert ckpt.problem.params["d_model"] == 4 and ckpt.problem.params["d_mlp"] == 8
    assert row["dim"] == ckpt.problem.dim and row["pairs"] == 1
    assert ckpt.meta["train"]["until_loss"] is None  # trained to a minimum, not to a loss
    for bad in ("d_mlp", "d_mlp=x", "d_mlp=-1", "=2"):
        wrong = CliRunner().invoke(script, ["--problem", "modadd_transformer", "--scale", bad, "-o", str(out)])
        assert wrong.exit_code == 2 and "--scale" in wrong.output and "Traceback" not in wrong.output


def test_activation_matching_refuses_too_few_values_to_correlate():
    """With one sample an MLP unit has one value: every correlation was 0 and the units matched by the tie-break
    alone; a transformer's residual stream fitted by O(32) from fewer than 32 values matched "perfectly" (mean
    correlation 0.99 after, from 0.11) whatever the two networks. Both are one-line errors now; a conv net's one
    sample still has its positions to correlate."""
    mlp = landscape.make_problem("digits_mlp", width=8)
    a, b = mlp.init(torch.Generator().manual_seed(0), n=2)
    with pytest.raises(landscape.LandscapeError, match=r"needs 2 values .* \(samples=1\)") as err:
        landscape.align(mlp, a, b, method="activation", samples=1)
    assert "\n" not in str(err.value)
    assert landscape.align(mlp, a, b, method="activation", samples=3).info["method"]["samples"] == 3
    gpt = landscape.make_problem("modadd_transformer")
    a, b = gpt.init(torch.Generator().manual_seed(0), n=2)
    with pytest.raises(landscape.LandscapeError, match=r"over O\(32\) needs at least 32 values"):
        landscape.align(gpt, a, b, method="activation", samples=2)
    cnn = landscape.make_problem("digits_cnn")
    a, b = cnn.init(torch.Generator().manual_seed(0), n=2)
    assert landscape.align(cnn, a, b, method="activation", samples=1).info["method"]["samples"] == 1
