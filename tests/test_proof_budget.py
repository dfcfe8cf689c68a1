"""A proof's time budget and its progress: a proof that cannot settle stops, says why and what it cost, within
the budget; the progress callback gets the round, the pieces settled and open, and the worst open bound.

Time is a fake clock here (one second a reading), so what is tested never depends on the machine's speed.
"""

import torch

import landscape
from landscape.paths.proof import MIN_PROOF_SECONDS, _hopeless, prove_below, time_budget
from test_proof import bump_problem


class Ticks:
    """A clock that advances one second each time it is read."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 1.0
        return self.now


def test_a_proof_at_the_exact_peak_stops_undecided_within_its_time_budget_and_says_why():
    problem, points, peak = bump_problem()  # its maximum is exactly the level: no bound can settle the middle
    clock = Ticks()
    proof = prove_below(problem, points, peak, seconds=5.0, clock=clock)
    assert proof.status == "undecided" and proof.open > 0
    assert proof.reason.startswith("bounds not converging: worst bound ")
    assert "x u after" in proof.reason and "(the search took 5 s)" in proof.reason
    assert proof.seconds <= 2 * 5.0 + 2  # a round's readings past twice the budget at most
    assert proof.pieces < 2000  # far below the pieces budget it would otherwise have run to
    unlimited = prove_below(problem, points, peak, budget=2000)  # without a time budget: pieces alone stop it
    assert unlimited.status in ("undecided", "refuted") and unlimited.pieces > proof.pieces


def test_a_proof_stops_at_its_budget_only_when_its_worst_bound_does_not_close_on_the_level_in_time():
    assert not _hopeless([(1.0, 5.0, 10)], 1.0, 2.0)  # still within the budget
    assert _hopeless([(1.0, 5.0, 10), (2.0, 5.0, 20)], 1.0, 2.0)  # the worst bound does not move
    assert not _hopeless([(1.0, 1.2, 10), (2.0, 1.1, 10)], 1.0, 2.0)  # one more round of 1 s closes it
    assert _hopeless([(1.0, 1.2, 10), (2.0, 1.19, 10)], 1.0, 2.0)  # 19 more rounds: too slow
    assert _hopeless([(3.0, 1.2, 10), (4.0, 1.1, 10)], 1.0, 2.0)  # past twice the budget: always
    assert time_budget(None) is None and time_budget(0.1) == MIN_PROOF_SECONDS and time_budget(30.0) == 30.0


def test_the_progress_callback_gets_rounds_settled_and_open_pieces_that_add_up():
    problem = landscape.make_problem("digits_mlp", width=16, depth=1)
    minima = landscape.train(problem, [0, 1], steps=600, lr=0.01)
    path = landscape.connect(problem, minima.thetas[0], minima.thetas[1])
    seen = []
    proof = prove_below(problem, path.points, path.level, seconds=time_budget(0.0),
                        on_round=lambda *figures: seen.append(figures))
    assert proof.status == "proven" and path.info["proof"]["status"] == "proven"
    assert [s[0] for s in seen] == list(range(1, proof.rounds + 1))
    assert seen[-1][1] == proof.settled and seen[-1][2] == 0
    first = (path.n_points - 1) * 2  # DEFAULT_START pieces a segment
    assert seen[0][1] + seen[0][2] == first
    for (_, s0, o0, w0), (_, s1, o1, _) in zip(seen, seen[1:]):
        assert s1 - s0 + o1 == 2 * o0 and w0 > path.level  # each open piece is halved; open means above u
    assert proof.pieces == first + 2 * sum(s[2] for s in seen[:-1])


def test_the_cli_names_the_reason_and_the_option_for_more():
    from apps._common import certificate_text

    r = {"certificate": "grid", "status": "connected", "spacing": 0.01, "level": 1.0,
         "info": {"proof": {"status": "undecided", "pieces": 540, "seconds": 12.0,
                            "reason": "bounds not converging: worst bound 3.1x u after 540 pieces, 12 s"}}}
    text = certificate_text(r)
    assert "bounds not converging: worst bound 3.1x u" in text and "--proof-seconds" in text
