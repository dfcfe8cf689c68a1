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
