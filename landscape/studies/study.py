"""A study is data: a TOML file naming the problem, the grid to sweep and the task that measures.

::

    [study]
    name = "implicit_regularization"        # names the store and the report
    task = "implicit_bias"                  # a key of landscape.TASKS
    description = "..."

    [problem]                               # the problem: a registered name and its parameters
    name = "exp_linear"
    dim = 50

    [grid]                                  # swept: the cartesian product of these lists
    dynamics = ["gd", "normalized_gd"]
    problem.data_seed = [0, 1, 2]           # dotted keys sweep problem parameters
    seed = { start = 0, stop = 8 }          # a range (stop excluded, optional step)

    [task]                                  # fixed task parameters
    steps = 100000

    [report]                                # tables and plots (see landscape.studies.report)
    group = ["dynamics"]

``[[grid]]`` (an array of tables) takes the union of several products, for sweeps whose axes
depend on each other (a learning rate per dynamics). Every task receives one dict of parameters:
the ``[task]`` values, one grid point, and ``"problem"`` as a spec ``{"name", "params"}``. Its id
is a hash of the task name and that dict in canonical JSON, so a task keeps its id, and its stored
result, when the study grows.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path as FilePath

from .._errors import LandscapeError
from ..io import read_text
from .limits import MAX_DEPTH, MAX_TASKS, check_size, check_values

_SECTIONS = {"study", "problem", "grid", "task", "report"}

#: Where the built-in studies live: ``data/studies`` of the source tree, installed as the
#: data-only package ``landscape_studies``.
STUDIES_DIR = FilePath(__file__).resolve().parents[1] / "data" / "studies"


@dataclass(frozen=True)
class Task:
    """One point of a study's grid.

    Attributes
    ----------
    id : str
        16 hex digits of SHA-256 over the task name and the canonical JSON of ``params``.
    index : int
        Position in the study's grid order.
    params : dict
        What the task function receives.
    point : dict
        The grid point alone, by dotted axis name (``{"problem.width": 4, "seed": 0}``).
    """

    id: str
    index: int
    params: dict
    point: dict


@dataclass
class Study:
    """A parsed study file. Build it with :func:`load_study`.

    Attributes
    ----------
    name, task, description : str
    problem : dict or None
        Fixed problem: ``{"name": ..., **params}``.
    fixed : dict
        The ``[task]`` table.
    grids : list of dict
        Each maps a dotted axis name to its list of values; the tasks are the union of their products.
    report : dict
        The ``[report]`` table.
    source : str
        The file it came from (or ``"<text>"``).
    text : str
        The TOML text, stored with the results.
    """

    name: str
    task: str
    description: str = ""
    problem: dict | None = None
    fixed: dict = field(default_factory=dict)
    grids: list = field(default_factory=list)
    report: dict = field(default_factory=dict)
    source: str = "<text>"
    text: str = ""

    @property
    def axes(self) -> list[str]:
        """The dotted names of the swept axes, in file order."""
        out = []
        for grid in self.grids:
            out += [axis for axis in grid if axis not in out]
        return out

    def tasks(self) -> list[Task]:
        """Every task of the study, in grid order, duplicates removed."""
        out, ids = [], set()
        for grid in self.grids or [{}]:
            names = list(grid)
            for values in itertools.product(*(grid[n] for n in names)):
                point = dict(zip(names, values))
                params = self._params(point)
                tid = task_id(self.task, params)
                if tid not in ids:
                    ids.add(tid)
                    out.append(Task(tid, len(out), params, point))
        return out

    def to_dict(self) -> dict:
        """The study as plain data, which :func:`load_study` reads back (the store keeps it as JSON)."""
        out = {"study": {"name": self.name, "task": self.task, "description": self.description},
               "task": copy.deepcopy(self.fixed), "grid": copy.deepcopy(self.grids),
               "report": copy.deepcopy(self.report)}
        if self.problem is not None:
            out["problem"] = copy.deepcopy(self.problem)
        return out

    def _params(self, point: dict) -> dict:
        params = copy.deepcopy(self.fixed)
        problem = copy.deepcopy(self.problem) if self.problem is not None else None
        for axis, value in point.items():
            head, _, rest = axis.partition(".")
            if head == "problem":
                if problem is None:
                    problem = {}
                problem[rest] = copy.deepcopy(value)
            else:
                _set(params, axis.split("."), copy.deepcopy(value))
        if problem is not None:
            if "name" not in problem:
                raise LandscapeError(f"study {self.name!r}: the [problem] table needs a name")
            rest = {k: v for k, v in problem.items() if k != "name"}
            params["problem"] = {"name": problem["name"], "params": rest}
        return params


def canonical(value) -> str:
    """Canonical JSON: sorted keys, no spaces, NaN refused."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise LandscapeError(f"study parameters must be JSON values (numbers, strings, lists, tables): {err}") from None


def task_id(task: str, params: dict) -> str:
    """16 hex digits of SHA-256 over ``task`` and the canonical JSON of ``params``."""
    return hashlib.sha256(canonical({"task": task, "params": params}).encode()).hexdigest()[:16]


def builtin_studies() -> dict[str, FilePath]:
    """The studies shipped in ``data/studies``, by name."""
    folder = STUDIES_DIR
    if not folder.is_dir():  # an installed wheel: the TOML files are package data
        import importlib.util

        spec = importlib.util.find_spec("landscape_studies")
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        folder = FilePath(locations[0]) if locations else folder
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def load_study(source) -> Study:
    """Read a study from a TOML file, a built-in study's name, or a dict (the parsed TOML).

    Raises
    ------
    LandscapeError
        A missing file, a TOML syntax error, an unknown section, task or problem, a grid axis that
        is not a list or a range, or task parameters the task does not take.
    """
    if isinstance(source, dict):
        return _from_dict(source, "<dict>", "")
    path = FilePath(source)
    if not path.is_file():
        builtin = builtin_studies()
        if str(source) in builtin:
            path = builtin[str(source)]
        else:
            names = ", ".join(builtin) or "none installed"
            raise LandscapeError(f"{source}: no such study file; give a TOML file or a built-in study ({names})")
    text = read_text(path, "study file")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise LandscapeError(f"{path}: not valid TOML ({err}); fix the file") from None
    except RecursionError:
        raise LandscapeError(f"{path}: values nested too deeply to read; a study nests at most {MAX_DEPTH} "
                             "levels") from None
    return _from_dict(data, str(path), text)


def study_from_json(text: str, source: str) -> Study:
    """Rebuild a study from the JSON of :meth:`Study.to_dict` (as kept in a results store)."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError, RecursionError):
        raise LandscapeError(f"{source}: the study kept in the store is unreadable; run the study file again "
                             "with --store to refresh it") from None
    if not isinstance(data, dict):
        raise LandscapeError(f"{source}: the study kept in the store is unreadable")
    return _from_dict(data, source, "")


def _from_dict(data: dict, source: str, text: str) -> Study:
    where = source
    check_values(data, where)
    unknown = sorted(set(data) - _SECTIONS)
    if unknown:
        raise LandscapeError(f"{where}: unknown section(s) {unknown}; a study has {sorted(_SECTIONS)}")
    head = data.get("study")
    if not isinstance(head, dict) or not isinstance(head.get("name"), str) or not isinstance(head.get("task"), str):
        raise LandscapeError(f"{where}: needs a [study] table with name = \"...\" and task = \"...\"")
    extra = sorted(set(head) - {"name", "task", "description"})
    if extra:
        raise LandscapeError(f"{where}: [study] has unknown key(s) {extra}; it takes name, task, description")
    name, task = head["name"], head["task"]
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise LandscapeError(f"{where}: study name {name!r} must be a plain file-name-like word")
    problem = data.get("problem")
    if problem is not None and (not isinstance(problem, dict)):
        raise LandscapeError(f"{where}: [problem] must be a table")
    fixed = data.get("task", {})
    if not isinstance(fixed, dict):
        raise LandscapeError(f"{where}: [task] must be a table")
    raw = data.get("grid", {})
    raw = raw if isinstance(raw, list) else [raw]
    grids = []
    for i, g in enumerate(raw):
        if not isinstance(g, dict):
            raise LandscapeError(f"{where}: [grid] must be a table or an array of tables")
        grids.append(_axes(g, f"{where}: grid" + (f"[{i}]" if len(raw) > 1 else "")))
    report = data.get("report", {})
    if not isinstance(report, dict):
        raise LandscapeError(f"{where}: [report] must be a table")
    study = Study(name, task, str(head.get("description", "")), problem, fixed, grids, report, source, text)
    check_size(study, where)
    _validate(study, where)
    return study


def _axes(grid: dict, where: str, prefix: str = "") -> dict:
    """Flatten nested tables to dotted axis names; every leaf must be a non-empty list or a range."""
    out = {}
    for key, value in grid.items():
        axis = f"{prefix}{key}"
        if isinstance(value, dict) and {"start", "stop"} <= set(value) and set(value) <= {"start", "stop", "step"}:
            try:
                values = range(value["start"], value["stop"], value.get("step", 1))
            except (TypeError, ValueError) as err:
                raise LandscapeError(f"{where}.{axis}: a range needs integers start, stop[, step] ({err})") from None
            try:
                size = len(values)
            except OverflowError:  # more values than an index can count
                size = math.inf
            if size > MAX_TASKS:  # refused before it is built
                held = f"{size:,}" if size != math.inf else "more than 2**63"
                raise LandscapeError(f"{where}.{axis}: the range holds {held} values; a study runs at most "
                                     f"{MAX_TASKS:,} tasks: sweep fewer values")
            value = list(values)
        elif isinstance(value, dict):
            out.update(_axes(value, where, f"{axis}."))
            continue
        if not isinstance(value, list) or not value:
            raise LandscapeError(f"{where}.{axis} must be a non-empty list of values or {{ start = a, stop = b }}; "
                                 "put fixed values in [task] or [problem]")
        canonical(value)
        out[axis] = value
    return out


def _set(target: dict, keys: list[str], value) -> None:
    for k in keys[:-1]:
        target = target.setdefault(k, {})
    target[keys[-1]] = value


def _validate(study: Study, where: str) -> None:
    """Check the task name, the task parameters, the problem names and the report before anything runs."""
    from ..problems.embedded import PROBLEMS
    from ..problems.params import check_params
    from .checks import check_task_params
    from .tasks import TASKS, task_options

    TASKS.lookup(study.task, where=where)
    tasks = study.tasks()
    if not tasks:
        raise LandscapeError(f"{where}: the grid is empty")
    checked = set()
    for t in tasks:
        at = f"{where}: task {', '.join(f'{k}={v!r}' for k, v in t.point.items())}" if t.point else where
        check_task_params(task_options(study.task, t.params, where=where), where=at)
        spec = t.params.get("problem")
        if spec is None:
            continue
        key = canonical(spec)
        if key in checked:
            continue
        checked.add(key)
        pname = spec["name"]
        if not isinstance(pname, str):
            raise LandscapeError(f"{where}: problem name must be a string, got {pname!r}")
        if ":" in pname:
            continue  # a user factory: checked where it is imported, on the worker
        try:  # types, ranges and the memory a problem needs: refused before any task runs
            check_params(pname, PROBLEMS.check_options(pname, spec["params"], where=where), spec["params"])
        except LandscapeError as err:
            raise LandscapeError(f"{where}: {err}") from None
    check_report(study)


_REPORT_KEYS = {"group", "figures", "series", "plot"}


def report_spec(study: Study) -> dict:
    """The ``[report]`` table of a study, its keys checked."""
    spec = study.report or {}
    unknown = sorted(set(spec) - _REPORT_KEYS)
    if unknown:
        raise LandscapeError(f"{study.source}: [report] has unknown key(s) {unknown}; it takes {sorted(_REPORT_KEYS)}")
    for key in ("series", "plot"):
        if not isinstance(spec.get(key, []), list):
            raise LandscapeError(f"{study.source}: report.{key} must be an array of tables ([[report.{key}]])")
    return spec


def check_report(study: Study) -> None:
    """Check the ``[report]`` table of a study: known keys, axes that exist, series and plots that name y."""
    spec = report_spec(study)
    group = spec.get("group", [])
    if not isinstance(group, list):
        raise LandscapeError(f"{study.source}: report.group must be a list of axes")
    check_axes(study, group, "report.group")
    for kind in ("series", "plot"):
        for item in spec.get(kind, []):
            if not isinstance(item, dict) or not item.get("y"):
                raise LandscapeError(f"{study.source}: each [[report.{kind}]] needs y = ...")
            axes = [item["by"]] if item.get("by") else []
            if kind == "plot":
                if not item.get("x"):
                    raise LandscapeError(f"{study.source}: each [[report.plot]] needs x = an axis of the grid")
                axes.append(item["x"])
            check_axes(study, axes, f"report.{kind}")


def check_axes(study, names, where) -> None:
    """Refuse names that are not axes of the study's grid."""
    bad = [n for n in names if n not in study.axes]
    if bad:
        raise LandscapeError(f"{study.source}: {where} names {bad}, not axes of the grid {study.axes}")
