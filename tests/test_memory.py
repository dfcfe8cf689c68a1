"""A memory budget sets K, the points evaluated at once: respected, reported, and the answer does not change."""

import json

import pytest
import torch
from click.testing import CliRunner

import landscape
from landscape.problems.memory import ACTIVATION_COPIES, PARAM_COPIES, plan_memory, point_bytes
from landscape_cli.cli import main


def widest_call(problem):
    """Record the most points any one ``_evaluate`` call of ``problem`` receives."""
    seen = [0]
    evaluate = problem._evaluate

    def spy(thetas, data):
        seen[0] = max(seen[0], thetas.shape[0])
        return evaluate(thetas, data)

    problem._evaluate = spy
    return seen


@pytest.mark.parametrize("text, size", [("2GiB", 2 << 30), ("512 MiB", 512 << 20), ("1.5GB", 1_500_000_000),
                                        ("4096", 4096), ("3k", 3072), (1e6, 10**6)])
def test_sizes_are_read(text, size):
    assert landscape.problems.parse_memory(text) == size


@pytest.mark.parametrize("text", ["2XB", "GiB", "-1GiB", "0", "nan"])
def test_a_bad_size_names_the_option(text):
    with pytest.raises(landscape.LandscapeError, match="--memory"):
        landscape.problems.parse_memory(text)


def test_a_point_counts_parameters_and_activations_that_scale_with_the_chunk():
    problem = landscape.make_problem("digits_mlp", width=8)
    full, n = point_bytes(problem)
    assert n == problem.n_samples() == 1438
    a = problem.activations_per_sample()
    assert a >= 64 + 8 + 10  # input, hidden and output values of one sample, at least
    assert full == 4 * (PARAM_COPIES * problem.dim + ACTIVATION_COPIES * a * n)
    problem.sample_chunk = 100
    chunked, n = point_bytes(problem)
    assert n == 100 and chunked == 4 * (PARAM_COPIES * problem.dim + ACTIVATION_COPIES * a * 100)
    assert point_bytes(problem, torch.float64)[0] == 2 * chunked
    bn = landscape.make_problem("digits_cnn", width=2, n_train=50)  # recomputed BatchNorm: a statistics pass too
    assert point_bytes(bn)[0] == 4 * (PARAM_COPIES * bn.dim + 2 * ACTIVATION_COPIES * bn.activations_per_sample() * 50)


def test_a_small_budget_chooses_a_smaller_k_and_finds_the_same_path():
    problem = landscape.make_problem("digits_mlp", width=4).subset(200)
    a, b = problem.init(torch.Generator().manual_seed(0), n=2, dtype=torch.float64)
    seen = widest_call(problem)
    free = landscape.connect(problem, a, b, generator=torch.Generator().manual_seed(1))
    default_k = seen[0]
    assert default_k > 3  # the unbudgeted run evaluates more than 3 points at once
    need = point_bytes(problem, torch.float64)[0]
    seen[0] = 0
    tight = landscape.connect(problem, a, b, generator=torch.Generator().manual_seed(1), memory=3 * need + need // 2)
    assert tight.info["memory"] == {"budget": 3 * need + need // 2, "source": "--memory", "point_bytes": need, "k": 3,
                                    "samples": 200}
    assert 1 <= seen[0] <= 3  # respected by every call: beads, the straight segment, the certificate
    assert problem.max_points is None  # restored after the call
    assert (tight.status, tight.n_points, tight.evaluations) == (free.status, free.n_points, free.evaluations)
    torch.testing.assert_close(tight.points, free.points, rtol=1e-9, atol=1e-10)
    assert tight.max_loss == pytest.approx(free.max_loss, rel=1e-10)


def test_valleys_under_a_small_budget_count_the_same():
    problem = landscape.make_problem("double_well")
    minima = problem.minima.to(torch.float64)
    _, free = landscape.find_valleys(problem, minima)
    seen = widest_call(problem)
    need = point_bytes(problem, torch.float64)[0]
    _, tight = landscape.find_valleys(problem, minima, memory=5 * need)
    assert tight["memory"]["k"] == 5 and 1 <= seen[0] <= 5
    assert [(r["level"], r["n_valleys"]) for r in tight["levels"]] == [(r["level"], r["n_valleys"])
                                                                       for r in free["levels"]]


def test_connect_says_what_it_chose_and_refuses_a_budget_below_one_point(tmp_path):
    problem = landscape.make_problem("digits_mlp", width=4)
    files = [str(landscape.save_checkpoint(tmp_path / f"m{i}.pt", problem, t, seed=i))
             for i, t in enumerate(problem.init(torch.Generator().manual_seed(0), n=2))]
    need = point_bytes(problem)[0]
    out = CliRunner().invoke(main, ["connect", *files, "--method", "linear", "--memory", str(2 * need), "--json"],
                             catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["memory"] == {"budget": 2 * need, "source": "--memory", "point_bytes": need,
                                                "k": 2, "samples": 1438}
    text = CliRunner().invoke(main, ["connect", *files, "--method", "linear", "--sample-chunk", "50"])
    assert text.exit_code == 0 and "(half of the free memory)" in text.output and "50 samples a call" in text.output
    bad = CliRunner().invoke(main, ["connect", *files, "--memory", "1KiB"])
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "--memory 1 KiB is less than one point needs" in bad.stderr and "--sample-chunk" in bad.stderr
    typo = CliRunner().invoke(main, ["connect", *files, "--memory", "2XB"])
    assert typo.exit_code == 2 and "--memory 2XB: not a memory size" in typo.stderr


def test_plan_without_a_budget_is_half_the_free_memory():
    problem = landscape.make_problem("ring")
    plan = plan_memory(problem)
    if plan.budget is not None:  # unknown free memory: no cap, said so
        assert plan.source == "half of the free memory" and plan.k == plan.budget // plan.point_bytes
