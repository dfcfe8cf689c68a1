"""Claims checked against closed forms: a level or a count the tool states must hold in float64."""

import pytest
import torch
from click.testing import CliRunner

import landscape
from landscape import find_valleys
from landscape_cli.cli import main


def test_float32_merge_levels_are_not_below_the_saddles():
    # Himmelblau's passes between its four minima are the three lowest saddles, 13.3119..., 67.7192...,
    # 104.015162917... (closed form, float64). A merge level is a claim: at it, the two valleys are one. In
    # float32 the pass at 104.0151629 rounds to 104.0151596 (half an ulp below): a merge level taken from
    # float32 losses said "1 valley" at a level where there are 2, and `connect` at that very level says
    # NOT FOUND (it decides within rounding in float64).
    problem = landscape.make_problem("himmelblau")
    minima = problem.minima.to(torch.float32)
    _, report = find_valleys(problem, minima, levels="auto", bisect=0,
                             generator=torch.Generator().manual_seed(0))
    saddles = sorted(problem.loss(problem.saddles).tolist())[:3]  # float64
    merges = sorted(m["level"] for m in report["merges"])
    assert merges == pytest.approx(saddles, rel=1e-6)
    assert all(m >= s for m, s in zip(merges, saddles)), (merges, saddles)
    for row in report["levels"]:  # the count at each reported level is at least the true one
        true = 4 - sum(s <= row["level"] for s in saddles)
        assert row["n_valleys"] >= true, (row["level"], row["n_valleys"], true)


@pytest.mark.parametrize("method", ["linear", "string"])
def test_connected_is_not_claimed_just_below_a_smooth_pass(method):
    # The tilted double well's pass is its saddle, of height f(x_s, 0) (closed form, float64): no path between
    # its minima stays below it. The zoom around a smooth peak read it ~2e-8 low (the peak lies between its
    # points), and the straight segment through the saddle was "connected" 1e-9 below the pass.
    problem = landscape.make_problem("double_well")
    (left, right), saddle = problem.minima, problem.saddles[0]
    barrier = float(problem.loss(saddle[None]))
    for level, status in ((barrier * (1 - 1e-9), "not_found"), (barrier * (1 + 1e-9), "connected")):
        path = landscape.connect(problem, left, right, method=method, level=level, certificate="grid")
        assert path.status == status, (level, path.max_loss, barrier)
    straight = landscape.connect(problem, left, right, method="linear", level=2.0)
    assert straight.max_loss == pytest.approx(barrier, abs=1e-12)  # the peak itself, to O(h⁴)


def test_a_refuted_proof_is_written_to_a_path_file_and_described(tmp_path):
    # The dense check passes, the proof then finds a point above u inside a segment (moons_mlp's straight segment
    # at u between its dense max and its float64 max did this; here a grid of one interval, the ends alone): the
    # proof's bound is inf, and `connect -o` failed with "path info must be JSON values", writing nothing; and
    # the file, read back with its witness evaluated again, made `landscape info` raise KeyError 'witness'.
    from landscape.paths.files import load_path, save_path
    from landscape.paths.linear import linear_path

    problem = landscape.make_problem("teacher_student", width=3, input_dim=2, n_train=20, n_test=20)
    a, b = torch.randn(2, problem.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)[:, None]
    level = 5.46  # above both ends (5.4387, 1.3636), below the segment's max (5.4827, float64)
    assert float(problem.loss(a + t * (b - a)).max()) > level > float(problem.loss(torch.stack([a, b])).max())
    path = landscape.certify(problem, linear_path(problem, a, b), level, resolution=1)
    assert path.status == "not_found" and path.certificate == "bound" and path.info["proof"]["status"] == "refuted"
    assert path.info["proof"]["bound"] is None and path.info["proof"]["witness"]["loss"] > level
    save_path(tmp_path / "p.pt", problem, path)
    again, _, _ = load_path(tmp_path / "p.pt")
    assert again.status == "not_found" and again.certificate == "bound" and again.max_loss > level
    shown = CliRunner().invoke(main, ["info", str(tmp_path / "p.pt")])
    assert shown.exit_code == 0 and "found above the level inside a segment" in shown.output, shown.output
