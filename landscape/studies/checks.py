"""What each task parameter may be, checked when a study is read, before anything runs.

One name means one thing in every task (``steps``, ``lr``, ``seed``...), with the ranges of the command line's
options, so that a study cannot ask what ``landscape train`` would refuse; a task that declares a new parameter
adds its line to :data:`PARAM_CHECKS` (a test checks that every declared parameter has one).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

from .._errors import LandscapeError
from ..minima.margin import DYNAMICS
from ..minima.optim import OPTIMIZERS
from ..paths.connect import METHODS
from ..symmetries.align import ALIGNERS
from .level_tasks import LEVEL_SCALES, PROTOCOLS

#: Most values a list parameter (``seeds``, ``levels``) may hold; as many seeds as ``landscape train --seeds``.
MAX_LIST = 10_000
#: Counts and steps: the ceiling of the command line's whole-number options.
MAX_COUNT = 10**9


class Kind(NamedTuple):
    """What a parameter may be: a test of a value and its description in words."""

    ok: Callable[[object], bool]
    text: str


def _whole(low: int, high: int) -> Kind:
    return Kind(lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high,
                f"a whole number in [{low:,}, {high:,}]")


def _real(low: float | None = None, *, open_low: bool = False, high: float | None = None,
          open_high: bool = False) -> Kind:
    def ok(v):
        return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and (low is None or v > low or (v == low and not open_low))
                and (high is None or v < high or (v == high and not open_high)))
    bounds = [f"{'>' if open_low else '>='} {low:g}"] if low is not None else []
    bounds += [f"{'<' if open_high else '<='} {high:g}"] if high is not None else []
    return Kind(ok, " ".join(["a finite number", " and ".join(bounds)]).strip())


def _optional(kind: Kind) -> Kind:
    return Kind(lambda v: v is None or kind.ok(v), f"{kind.text}, or left out")


def _list(kind: Kind) -> Kind:
    return Kind(lambda v: isinstance(v, list) and 1 <= len(v) <= MAX_LIST and all(kind.ok(x) for x in v),
                f"a list of 1 to {MAX_LIST:,} values, each {kind.text}")


def _choice(names) -> Kind:
    return Kind(lambda v: isinstance(v, str) and v in names, f"one of {sorted(names)}")


_FLAG = Kind(lambda v: isinstance(v, bool), "true or false")
_TABLE = Kind(lambda v: isinstance(v, dict), "a table of options, e.g. { alpha = 0.5 }")
_SEED = _whole(0, 2**63 - 1)

#: What each task parameter must be, by name: one name means one thing in every task, and the ranges are those
#: of the command line's options (``landscape train``, ``connect``, ``valleys``). Every declared parameter of
#: every task has its line here (tests check it); ``problem`` is checked as a problem (its name and parameters).
PARAM_CHECKS = {
    "seed": _SEED, "seeds": _optional(_list(_SEED)), "pair": _whole(0, 2**62 - 1),
    "optimizer": _choice(OPTIMIZERS), "lr": _real(0, open_low=True), "steps": _whole(1, MAX_COUNT),
    "until_loss": _optional(_real()), "momentum": _real(0, high=1, open_high=True),
    "batch_size": _optional(_whole(1, MAX_COUNT)), "float64": _FLAG,
    "dynamics": _choice(DYNAMICS), "records": _whole(2, 10**6),
    "level": _real(), "protocol": _choice(PROTOCOLS), "train_to": _real(0, open_low=True),
    "level_factor": _real(0, open_low=True), "method": _choice(METHODS), "options": _TABLE,
    "levels": _list(_real(0)), "level_scale": _choice(LEVEL_SCALES), "margin": _optional(_real(0)),
    "attempts": _whole(1, 100), "tol": _optional(_real(0)), "align": _choice(ALIGNERS),
}


def check_task_params(params: dict, *, where: str = "study") -> None:
    """Refuse a task parameter that is not what the task takes, before anything runs.

    Parameters
    ----------
    params : dict
        One task's parameters, defaults filled in (``problem`` is left to the problem's own check).
    where : str
        Names the input in the message (the study file and the task's grid point).

    Raises
    ------
    LandscapeError
        ``"WHERE: steps = 'many' is not a whole number in [1, 1,000,000,000]; fix it in [task] or [grid]"``; and
        path-method ``options`` the method does not take.
    """
    for key, value in params.items():
        kind = PARAM_CHECKS.get(key)
        if kind is not None and not kind.ok(value):
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            fix = "the --set value" if "--set" in where else "it in [task] or [grid]"
            raise LandscapeError(f"{where}: {key} = {shown} is not {kind.text}; fix {fix}")
    if isinstance(params.get("options"), dict) and isinstance(params.get("method"), str):
        METHODS.check_options(params["method"], params["options"], where=f"{where}: options")
