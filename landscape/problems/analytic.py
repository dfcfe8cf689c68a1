"""Two-dimensional landscapes whose minima, saddles and valleys are known in closed form.

They are the ground truths of the test suite: every path method, valley count and merge
level is checked against them.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .layout import Layout
from .problem import Problem


class AnalyticProblem(Problem):
    """A loss ``f(x, y)`` on R², parameters named ``xy``.

    Attributes
    ----------
    minima : Tensor, shape (m, 2)
        The local minima, global ones first.
    saddles : Tensor, shape (s, 2)
        The index-1 saddle points.
    box : ((float, float), (float, float))
        The region where ``init`` draws points and renders look.
    """

    def __init__(self, name, params, fn: Callable, *, minima, saddles, box, summary=""):
        super().__init__(name, params, Layout(("xy",), ((2,),)))
        self._fn = fn
        self.minima = torch.as_tensor(np.asarray(minima, dtype=float)).reshape(-1, 2)
        self.saddles = torch.as_tensor(np.asarray(saddles, dtype=float)).reshape(-1, 2)
        self.box = box
        self.summary = summary

    def _evaluate(self, thetas, data):
        return self._fn(thetas[:, 0], thetas[:, 1])

    def _init_one(self, generator):
        (x0, x1), (y0, y1) = self.box
        u = torch.rand(2, generator=generator, dtype=torch.float64)
        return torch.stack([x0 + (x1 - x0) * u[0], y0 + (y1 - y0) * u[1]]).float()


def himmelblau() -> AnalyticProblem:
    """Himmelblau's function, f(x, y) = (x² + y − 11)² + (x + y² − 7)².

    Four global minima (f = 0), one local maximum and four saddles (Himmelblau, *Applied
    Nonlinear Programming*, 1972). The minima and saddles below are the roots of ∇f = 0,
    polished by Newton's method to machine precision.
    """

    def f(x, y):
        return (x * x + y - 11) ** 2 + (x + y * y - 7) ** 2

    def grad(p):
        x, y = p
        a, b = x * x + y - 11, x + y * y - 7
        return np.array([4 * x * a + 2 * b, 2 * a + 4 * y * b])

    def hess(p):
        x, y = p
        return np.array([[12 * x * x + 4 * y - 42, 4 * x + 4 * y], [4 * x + 4 * y, 4 * x + 12 * y * y - 26]])

    minima = [_newton(grad, hess, p) for p in [(3, 2), (-2.805, 3.131), (-3.779, -3.283), (3.584, -1.848)]]
    saddles = [_newton(grad, hess, p) for p in [(0.087, 2.884), (-3.073, -0.081), (3.385, 0.074), (-0.128, -1.954)]]
    return AnalyticProblem(
        "himmelblau", {}, f, minima=minima, saddles=saddles, box=((-5.0, 5.0), (-5.0, 5.0)),
        summary="Himmelblau's function: four global minima, four saddles",
    )


def double_well(tilt: float = 0.3, stiffness: float = 1.0) -> AnalyticProblem:
    """Tilted double well, f(x, y) = (x² − 1)² + tilt·x + stiffness·y².

    The critical points lie on y = 0 at the real roots of 4x³ − 4x + tilt = 0: for
    0 < tilt < 8/(3√3) a global minimum near x = −1, a shallower (spurious) minimum near
    x = +1 and the saddle between them near x = 0. Its height is the exact barrier.
    """
    if not 0 <= tilt < 8 / (3 * math.sqrt(3)):
        raise ValueError(f"double_well needs 0 <= tilt < {8 / (3 * math.sqrt(3)):.4f} to keep two minima")

    def f(x, y):
        return (x * x - 1) ** 2 + tilt * x + stiffness * y * y

    roots = np.sort(np.roots([4.0, 0.0, -4.0, tilt]).real)
    left, middle, right = roots
    return AnalyticProblem(
        "double_well", {"tilt": tilt, "stiffness": stiffness}, f,
        minima=[(left, 0.0), (right, 0.0)], saddles=[(middle, 0.0)], box=((-2.0, 2.0), (-1.5, 1.5)),
        summary="tilted double well: a global and a spurious minimum, one saddle",
    )


def ring(radius: float = 1.0, bump: float = 0.2) -> AnalyticProblem:
    """Annular valley, f(x, y) = (x² + y² − R²)² + bump·y².

    Two global minima at (±R, 0) with f = 0. The straight segment between them crosses the
    hill at the origin (f = R⁴), while the valley bends around it over two saddles at
    (0, ±√(R² − bump/2)) of height bump·R² − bump²/4. Below the hill and above the saddles
    the two minima are connected only around the ring: the shortest path approaches the
    half circle, whose length over the chord is π/2.
    """
    if not 0 < bump < 2 * radius**2:
        raise ValueError("ring needs 0 < bump < 2 R²")
    r2 = radius * radius

    def f(x, y):
        return (x * x + y * y - r2) ** 2 + bump * y * y

    s = math.sqrt(r2 - bump / 2)
    return AnalyticProblem(
        "ring", {"radius": radius, "bump": bump}, f,
        minima=[(-radius, 0.0), (radius, 0.0)], saddles=[(0.0, s), (0.0, -s)],
        box=((-1.6 * radius, 1.6 * radius), (-1.6 * radius, 1.6 * radius)),
        summary="annular valley: the straight path crosses a hill, the ring goes round it",
    )


def _newton(grad, hess, p, steps: int = 50):
    p = np.asarray(p, dtype=float)
    for _ in range(steps):
        p = p - np.linalg.solve(hess(p), grad(p))
    return p
