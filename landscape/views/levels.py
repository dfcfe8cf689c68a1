"""`Levels`: what a view shows at a level u, from the merge tree, without drawing.

At level u the valleys of {L ≤ u} seen by a set of minima are the components of the valley graph
(:meth:`landscape.ValleyGraph.valleys`, the code ``landscape valleys`` reports with); a valley is
spurious by :meth:`~landscape.ValleyGraph.is_spurious`. A level slider maps a position to u on a
linear or a log scale over a range that covers the minima, the merges and the drawn surface.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .._errors import LandscapeError
from ..valleys.graph import ValleyGraph, spurious_tolerance

#: Positions of a level slider: 0 is the low end of its range, ``STEPS`` the high end.
STEPS = 1000


@dataclass
class LevelState:
    """The valleys at one level u.

    Attributes
    ----------
    level : float
    valleys : list of list of int
        Minima (indices into the graph) of each valley, valleys sorted by best loss.
    spurious : list of bool
        Whether each valley holds no global minimum (no path joined it to one).
    valley_of : list of int or None
        For each minimum, the index of its valley, or None when its loss is above u.
    known : dict
        What backs the count (:meth:`landscape.ValleyGraph.known`): whether it is an upper bound (pairs of
        valleys no path joined, not proven apart), the lower bound, the certificates of the joins.
    spurious_proven : list of bool
        Whether each valley is proven spurious: apart from every valley holding a global minimum
        (:meth:`landscape.ValleyGraph.spurious_known`); the others of ``spurious`` are spurious only if apart.
    """

    level: float
    valleys: list
    spurious: list
    valley_of: list
    known: dict = field(default_factory=dict)
    spurious_proven: list = field(default_factory=list)

    @property
    def n_valleys(self) -> int:
        return len(self.valleys)

    @property
    def n_spurious(self) -> int:
        return sum(self.spurious)

    def text(self) -> str:
        """``"valleys: 3, spurious: 0 at u = 40.52"``, and when the count is an upper bound
        ``" (3 at most: 2 pairs not joined, no path found, separation not proven)"``."""
        maybe = " at most" if sum(self.spurious_proven) < self.n_spurious else ""
        text = f"valleys: {self.n_valleys}, spurious: {self.n_spurious}{maybe} at u = {self.level:.6g}"
        if self.known.get("count_is_upper_bound"):
            pairs = self.known["pairs_not_joined"]
            text += (f" ({self.n_valleys} at most: {pairs} pair{'s' * (pairs != 1)} not joined, no path found, "
                     "separation not proven)")
        return text


@dataclass
class Levels:
    """Valley counts over u for one valley graph, and the slider's range.

    Attributes
    ----------
    graph : ValleyGraph
    tol : float
        The spurious tolerance (:func:`landscape.valleys.spurious_tolerance`).
    low, high : float
        The slider's range on a linear scale.
    log_low : float
        The low end on a log scale (> 0).
    """

    graph: ValleyGraph
    tol: float
    low: float
    high: float
    log_low: float

    @classmethod
    def of(cls, graph: ValleyGraph, *, tol: float | None = None, losses=()) -> "Levels":
        """The levels of a graph, the slider range covering its minima, its merges and ``losses``.

        Parameters
        ----------
        graph : ValleyGraph
        tol : float, optional
            Spurious tolerance (the valley reports' rule when None).
        losses : iterable of float
            Other losses the range should reach (the drawn surface, the paths); non-finite ones are
            ignored.
        """
        tol = spurious_tolerance(graph.global_loss, tol)
        values = [float(v) for v in graph.losses.tolist()] + [m.level for m in graph.merges()]
        values += [float(v) for v in losses if math.isfinite(float(v))]
        low, high = min(values), max(values)
        top = max([m.level for m in graph.merges()] + [float(graph.losses.max())])
        high = max(high, top + 0.05 * (top - low))
        if high <= low:
            high = low + max(1.0, abs(low))
        positive = [v for v in values if v > 0]
        log_low = max(min(positive), 1e-6 * high) if positive and high > 0 else 1e-12
        if high <= 0:
            raise LandscapeError("every loss is <= 0: a log-scale level slider needs positive losses")
        return cls(graph, tol, low, high, log_low)

    @property
    def names(self) -> list:
        return list(self.graph.names)

    def at(self, level: float) -> LevelState:
        """The valleys at ``level``: :meth:`ValleyGraph.valleys` and :meth:`~ValleyGraph.is_spurious`."""
        level = float(level)
        valleys = self.graph.valleys(level)
        sk = self.graph.spurious_known(level, valleys, self.tol)
        spurious = [k in sk["spurious"] for k in range(len(valleys))]
        valley_of: list = [None] * self.graph.n
        for k, v in enumerate(valleys):
            for i in v:
                valley_of[i] = k
        return LevelState(level, valleys, spurious, valley_of, self.graph.known(level, valleys),
                          [k in sk["spurious_proven"] for k in range(len(valleys))])

    def merges(self) -> list[dict]:
        """The merges that change the valley count, in increasing level.

        Returns
        -------
        list of dict
            ``level``, ``pair`` (two names), ``before`` and ``after`` (valley counts just below and at
            the level), ``certificate`` (``"bound"`` or ``"grid"`` when known).
        """
        out = []
        for m in self.graph.merges():
            if m.level <= max(self.graph.losses[m.i].item(), self.graph.losses[m.j].item()) + self.tol:
                continue  # copies of one minimum: no barrier between them
            before = self.at(math.nextafter(m.level, -math.inf)).n_valleys
            after = self.at(m.level).n_valleys
            data = self.graph.graph.edges[m.i, m.j]
            out.append({"level": m.level, "pair": [self.graph.names[m.i], self.graph.names[m.j]],
                        "before": before, "after": after, "certificate": data.get("certificate")})
        return out

    def level(self, position: float, *, log: bool = False) -> float:
        """The level at a slider position in [0, ``STEPS``]."""
        f = min(max(float(position) / STEPS, 0.0), 1.0)
        if log:
            a, b = math.log10(self.log_low), math.log10(self.high)
            return 10 ** (a + f * (b - a))
        return self.low + f * (self.high - self.low)

    def position(self, level: float, *, log: bool = False) -> int:
        """The slider position nearest to ``level`` (clipped to the range)."""
        if log:
            a, b = math.log10(self.log_low), math.log10(self.high)
            f = (math.log10(max(float(level), self.log_low)) - a) / (b - a)
        else:
            f = (float(level) - self.low) / (self.high - self.low)
        return round(min(max(f, 0.0), 1.0) * STEPS)

    def range(self, *, log: bool = False) -> tuple[float, float]:
        return (self.log_low if log else self.low), self.high
