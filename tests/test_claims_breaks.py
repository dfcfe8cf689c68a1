"""Claims checked against closed forms: a level or a count the tool states must hold in float64."""

import pytest
import torch

import landscape
from landscape import find_valleys


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


def test_a_refuted_proof_is_written_to_a_path_file(tmp_path):
    # The dense check passed, the proof then found a point above u inside a segment (a ReLU kink between the
    # grid's points: moons_mlp's straight segment at u between its dense max and its float64 max did this): the
    # proof's bound is inf, and `connect -o` failed with "path info must be JSON values" instead of writing
    # the NOT FOUND path.
    from dataclasses import replace

    from landscape.paths.files import load_path, save_path
    from landscape.paths.linear import linear_path
    from landscape.paths.proof import prove_below

    problem = landscape.make_problem("teacher_student", width=3, input_dim=2, n_train=20, n_test=20)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, problem.dim, generator=g)
    path = linear_path(problem, a, b)
    level = 0.5 * float(path.losses.min())  # below both ends: refuted at once
    proof = prove_below(problem, path.points, level)
    assert proof.status == "refuted" and proof.witness["loss"] > level
    claimed = replace(landscape.certify(problem, path, level, certificate="grid"), info={"proof": proof.summary()})
    assert claimed.status == "not_found"
    save_path(tmp_path / "p.pt", problem, claimed)
    assert proof.summary()["bound"] is None
    again, _, _ = load_path(tmp_path / "p.pt")
    assert again.status == "not_found" and again.max_loss > level
