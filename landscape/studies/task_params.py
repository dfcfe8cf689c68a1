"""What every study task shares: its declared parameters and the problem its spec names."""

from __future__ import annotations

from .._errors import LandscapeError

#: Marks a task parameter without a default.
REQUIRED = object()


def declares(**defaults):
    """Attach the parameters a task takes (and their defaults) to it."""

    def wrap(fn):
        fn.defaults = defaults
        return fn

    return wrap


def declared(task) -> dict:
    """The parameters ``task`` declares, with their defaults (:data:`REQUIRED` when it has none)."""
    return task.defaults


def task_problem(spec):
    """The problem a task's ``problem`` parameter names: a spec ``{"name", "params"}``."""
    from ..problems.embedded import make_problem

    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise LandscapeError(f"task parameter 'problem' must be a problem spec {{name, params}}, got {spec!r}")
    return make_problem(spec["name"], **spec.get("params", {}))

