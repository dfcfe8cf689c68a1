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
