"""Proofs that two minima lie in different valleys of Ω_u: what turns a valley count into an exact one.

A certified path proves that its two ends share a valley at every level from its max loss up. Nothing a
path search does proves the converse: a pair that no method joined at u may still be joined by a path
not found, so a count of the components joined by certified paths is an *upper bound* on the number of
valleys those minima lie in. It is exact only where every two of its valleys are proven separate by an
argument about the problem itself. ``SEPARATIONS`` maps a problem's name to the function that knows
such an argument; a problem without one gets no separation, and its counts are said to be upper bounds
wherever they exceed one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._errors import LandscapeError
from .._registry import Registry
from ..problems.problem import Problem


@dataclass(frozen=True)
class Separation:
    """Minima ``i`` and ``j`` (i < j) lie in different valleys of Ω_u at every level u < ``below``.

    ``how`` says what proves it, in words, for the reports.
    """

    i: int
    j: int
    below: float
    how: str


def venturi_relu(problem: Problem, thetas: torch.Tensor) -> list[Separation]:
    """Venturi, Bandeira & Bruna's argument on the exact population loss of :func:`landscape.problems.venturi_relu`.

    Along any path from a point whose output weights are all > 0 to one with some output weight ≤ 0,
    the first point where the smallest output weight reaches 0 has loss ≥ u* = β²/4 + G*_{p−1}
    (:class:`landscape.problems.venturi.VenturiProblem`, whose docstring has the derivation). So below u*
    a minimum with every u_j > 0 and one with some u_j ≤ 0 lie in different valleys. G*_{p−1} is the
    least loss of p − 1 units on the Gaussian half of the data, found by multi-start float64 descent
    (:meth:`~landscape.problems.venturi.VenturiProblem.merge`): u* is as exact as that minimum.

    Only on ``population=True`` (the argument is about the expectation, not a sample mean); evaluated only
    when two minima of the two kinds are given (the fit costs a few seconds).

    Returns
    -------
    list of Separation
        One per such pair, ``below`` = u*.
    """
    from ..problems.venturi import VenturiProblem

    if not isinstance(problem, VenturiProblem) or not problem.params.get("population"):
        return []
    u = problem.layout.unflatten(thetas.detach().double().cpu())["2.weight"].flatten(1)  # [N, p] output weights
    inside = (u > 0).all(1).tolist()
    pairs = [(i, j) for i in range(len(inside)) for j in range(i + 1, len(inside)) if inside[i] != inside[j]]
    if not pairs:
        return []
    try:
        level = problem.merge(knots=2)["level"]  # the level only: the path's continuation is not needed
    except LandscapeError:  # outside the construction (width > input_dim - 1): no argument
        return []
    how = "derived: u* = β²/4 + G*, Venturi et al.'s argument (G* by multi-start float64 descent)"
    return [Separation(i, j, float(level), how) for i, j in pairs]


#: The separation proofs, by problem name: ``SEPARATIONS[name](problem, thetas) -> list[Separation]``.
SEPARATIONS = Registry("separation proof", (venturi_relu,), shared=("problem", "thetas"))


def proven_separations(problem: Problem, thetas: torch.Tensor) -> list[Separation]:
    """The separations of the minima ``thetas`` that the problem's own argument proves (none for most problems).

    Parameters
    ----------
    problem : Problem
    thetas : Tensor, shape (N, D)

    Returns
    -------
    list of Separation
    """
    rule = SEPARATIONS.get(problem.name)
    return [] if rule is None else rule(problem, thetas)
