"""Shortening a path below a level: never longer, never above the level, never below the closed-form geodesic."""

import math

import pytest
import torch

import landscape


def ring_geodesic(level: float) -> float:
    """A lower bound on the normalized length of any path from (−1, 0) to (1, 0) inside the ring's {f ≤ u}: that set
    lies outside the disc r² < 1 − √u, and the shortest way round a disc of radius ρ between points at distance 1
    from its centre is 2√(1 − ρ²) + ρ(π − 2 arccos ρ)."""
    rho = math.sqrt(1 - math.sqrt(level))
    return (2 * math.sqrt(1 - rho * rho) + rho * (math.pi - 2 * math.acos(rho))) / 2


@pytest.mark.parametrize("method", ["neb", "string", "polychain"])
def test_shortened_paths_are_certified_shorter_and_above_the_geodesic(method):
    ring = landscape.make_problem("ring")
    found = landscape.connect(ring, ring.minima[0], ring.minima[1], level=0.3, method=method)
    short = landscape.connect(ring, ring.minima[0], ring.minima[1], level=0.3, method=method, shorten=True)
    figures = short.info["shorten"]
    assert short.status == "connected" and figures["kept"]
    assert figures["length_before"] == pytest.approx(found.length)
    assert short.length == pytest.approx(figures["length_after"]) and short.length <= found.length + 1e-12
    assert short.normalized_length >= ring_geodesic(0.3)
    assert torch.equal(short.points[0], found.points[0]) and torch.equal(short.points[-1], found.points[-1])
    if method == "neb":  # the band relaxes to the minimum-energy path, not the shortest: room to shorten
        assert short.normalized_length < found.normalized_length - 0.1


def test_shortening_never_turns_a_missing_path_into_a_claim():
    ring = landscape.make_problem("ring")  # saddles at 0.19: nothing connects at 0.15
    for method in ("neb", "string"):
        path = landscape.connect(ring, ring.minima[0], ring.minima[1], level=0.15, method=method, shorten=True)
        assert path.status == "not_found" and path.max_loss > 0.15 and not path.info["shorten"]["kept"]
