"""``study run NAME --set key=value``: a study with some of its values changed, checked as a file is.

A key names where the value goes: ``grid.AXIS`` (the values of a swept axis: a list, a range
``{start, stop}``, or one value), ``task.KEY`` (a fixed task parameter), ``problem.KEY`` (a
problem parameter; a swept one when ``problem.KEY`` is a grid axis). A bare key is a grid axis
when one has that name, else a task parameter. So a study small enough to try in a minute is
``landscape study run spurious_valleys --set problem.width=[2,8] --set problem.data_seed=[0]
--set steps=500``.
"""

from __future__ import annotations

from collections.abc import Mapping

from .._errors import LandscapeError
from .study import Study, _from_dict


def override_study(study: Study, sets: Mapping[str, object]) -> Study:
    """``study`` with the values of ``sets`` (see the module's docstring) in place of its own.

    Raises
    ------
    LandscapeError
        A key that names no grid axis or task parameter, or values the study's checks refuse.
    """
    if not sets:
        return study
    from .tasks import TASKS

    data = study.to_dict()
    axes = {axis for grid in data["grid"] for axis in grid}
    task_keys = set(TASKS.options(study.task)) - {"problem"}
    for key, value in sets.items():
        section, _, rest = key.partition(".")
        if section == "grid" and rest:
            _set_axis(data, rest, value, axes, key)
        elif key in axes:
            _set_axis(data, key, value, axes, key)
        elif section == "task" and rest:
            data["task"][rest] = value  # an unknown name is refused by the task's check below
        elif section == "problem" and rest:
            data.setdefault("problem", {})[rest] = value
        elif key in task_keys:
            data["task"][key] = value
        else:
            raise LandscapeError(f"--set {key}: study {study.name!r} has no grid axis or task parameter {key!r}; "
                                 f"its axes are {sorted(axes)}, its task takes {sorted(task_keys)}")
    shown = ", ".join(f"{k}={v!r}" for k, v in sets.items())
    return _from_dict(data, f"{study.source} with --set {shown}", study.text)


def _set_axis(data: dict, axis: str, value, axes: set, key: str) -> None:
    if axis not in axes:
        raise LandscapeError(f"--set {key}: the study has no grid axis {axis!r}; its axes are {sorted(axes)}")
    values = value if isinstance(value, (list, dict)) else [value]
    for grid in data["grid"]:
        if axis in grid:
            grid[axis] = values
