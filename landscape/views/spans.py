"""Round numbers for the axes of a view: a plane's default span, and tick values that read at a glance.

A view's axes are labelled at evenly spaced ticks from one end of the box to the other. Ticks at
arbitrary values (``-4.72, 5.51, 15.7``) are long to read and crowd each other; so the default span of
a plane and the height range of a box are widened to the nearest multiples of a round step
(:data:`ROUND_STEPS` × 10^k), and the ticks are those multiples (``-10, 0, 10, 20, 30, 40``).
"""

from __future__ import annotations

import math

import torch

#: Mantissas of the round steps of a default span (× 10^k): the steps VTK's own ticks take, so that its
#: cube axes place a label on every multiple.
ROUND_STEPS = (1.0, 2.0, 2.5, 5.0)
#: Mantissas a given span's ticks may step by (a span of 3.2 reads -1.6, -0.8, 0, 0.8, 1.6).
TICK_STEPS = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)


def _clean(v: float) -> float:
    """``v`` without the binary noise of a product (0.30000000000000004 -> 0.3); -0.0 -> 0.0."""
    return float(f"{v:.12g}") + 0.0


def nice_span(lo: float, hi: float, *, least: int = 3, most: int = 6) -> tuple[float, float, float]:
    """The narrowest range [lo', hi'] ⊇ [lo, hi] whose ends are multiples of a round step s with
    ``least`` to ``most`` ticks (ends included) from lo' to hi'.

    Returns
    -------
    (lo', hi', s) : (float, float, float)
        ``(lo, hi, hi - lo)`` unchanged when ``hi <= lo`` or either is not finite.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return lo, hi, hi - lo
    best = None
    e0 = math.floor(math.log10((hi - lo) / max(most - 1, 1)))
    for e in (e0 - 1, e0, e0 + 1, e0 + 2):
        for m in ROUND_STEPS:
            s = m * 10.0**e
            a, b = math.floor(lo / s + 1e-9), math.ceil(hi / s - 1e-9)
            if least - 1 <= b - a <= most - 1 and (best is None or (b - a) * s < best[1] - best[0] - 1e-12 * s):
                best = (_clean(a * s), _clean(b * s), _clean(s))
    return best if best is not None else (lo, hi, hi - lo)


def nice_ticks(lo: float, hi: float, *, least: int = 3, most: int = 6) -> list[float] | None:
    """Evenly spaced round values from ``lo`` to ``hi``, ends included: ``least`` to ``most`` of them, the
    most that a round step (:data:`TICK_STEPS` × 10^k) allows; None when no round step divides the range."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return None
    for n in range(most, least - 1, -1):
        s = (hi - lo) / (n - 1)
        e = math.floor(math.log10(s))
        mantissa = s / 10.0**e
        if not any(abs(mantissa - m) <= 1e-9 * m for m in TICK_STEPS + (10.0,)):
            continue
        if abs(lo / s - round(lo / s)) <= 1e-6:
            return [_clean(lo + k * s) for k in range(n)]
    return None


def tick_text(value: float, step: float) -> str:
    """A tick value with the decimals its step needs (0.25: two), trailing zeros dropped."""
    decimals = next((d for d in range(10) if abs(step * 10**d - round(step * 10**d)) <= 1e-6 * abs(step) * 10**d),
                    None) if step and math.isfinite(step) else None
    text = f"{value:.3g}" if decimals is None or abs(value) >= 1e7 else f"{value:.{decimals}f}"
    if "." in text and "e" not in text:
        text = text.rstrip("0").rstrip(".")
    if float(text) == 0:
        text = "0"
    return text


def default_span(problem, plane, coords: torch.Tensor, margin: float):
    """Plane coordinates a view covers by default: the problem's box for the identity plane of an analytic
    problem; else the bounding box of ``coords`` (what is drawn), each side at least half the other, widened
    by ``margin`` on each side (and at least [−1, 1]² for a random plane, the range of Li et al.), then
    widened to round ends (:func:`nice_span`)."""
    if plane.kind == "identity" and hasattr(problem, "box"):
        (x0, x1), (y0, y1) = problem.box
        lo = torch.minimum(coords.min(0).values, torch.tensor([x0, y0], dtype=torch.float64))
        hi = torch.maximum(coords.max(0).values, torch.tensor([x1, y1], dtype=torch.float64))
        return ((float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1])))
    lo, hi = coords.min(0).values, coords.max(0).values
    if plane.kind == "random":
        lo, hi = torch.minimum(lo, -torch.ones(2, dtype=lo.dtype)), torch.maximum(hi, torch.ones(2, dtype=hi.dtype))
    extent = hi - lo
    big = float(extent.max())
    if big == 0:
        big = 1.0
    extent = torch.clamp(extent, min=0.5 * big)  # never a sliver: each side at least half the other
    center = (lo + hi) / 2
    half = extent * (0.5 + margin)
    return tuple(nice_span(float(center[i] - half[i]), float(center[i] + half[i]), most=7)[:2] for i in (0, 1))
