"""How big a study may be: how deeply its file nests, and how many tasks its grid makes.

Both are checked on the parsed file, before its grid is expanded: a range is measured, not built, and the grid's
size is the product of its axes' lengths.
"""

from __future__ import annotations

import math

from .._errors import LandscapeError

#: Most levels of tables and lists a study nests (its own format needs 4: ``[grid]``, a dotted axis, a range).
MAX_DEPTH = 32
#: Most tasks one study may hold: its grid is expanded, checked and stored (one SQLite row a task) before
#: anything runs. About 1 s to read and check at this size (2 shared cores); more is several studies.
MAX_TASKS = 10_000


def check_values(data, where: str) -> None:
    """Refuse a study whose values nest deeper than :data:`MAX_DEPTH` levels or hold a number that is not finite
    (walked without recursion: a file nested 5,000 deep is one line, not a ``RecursionError``).

    Raises
    ------
    LandscapeError
        ``"s.toml: grid is nested more than 32 levels deep; flatten it"``, ``"s.toml: task.lr = nan is not a finite
        number; give a finite one"``.
    """
    stack = [(data, "", 0)]
    while stack:
        value, name, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise LandscapeError(f"{where}: {name.split('.')[0].split('[')[0] or 'a value'} is nested more than "
                                 f"{MAX_DEPTH} levels deep; flatten it")
        if isinstance(value, float) and not math.isfinite(value):
            raise LandscapeError(f"{where}: {name} = {value!r} is not a finite number; give a finite one")
        if isinstance(value, dict):
            stack += [(v, f"{name}.{k}" if name else str(k), depth + 1) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(v, f"{name}[{i}]", depth + 1) for i, v in enumerate(value)]


def check_size(study, where: str) -> None:
    """Refuse a grid of more than :data:`MAX_TASKS` tasks, from the lengths of its axes (nothing is expanded).

    Raises
    ------
    LandscapeError
        ``"s.toml: the grid makes 1,000,000,000 tasks (seed 1,000 x lr 1,000 x steps 1,000); a study runs at most
        10,000: sweep fewer values or split it into several studies"``.
    """
    sizes = [math.prod(len(v) for v in grid.values()) for grid in study.grids]
    total = sum(sizes)
    if total > MAX_TASKS:
        biggest = study.grids[sizes.index(max(sizes))]
        shape = " x ".join(f"{axis} {len(values):,}" for axis, values in biggest.items())
        raise LandscapeError(f"{where}: the grid makes {total:,} tasks ({shape}); a study runs at most "
                             f"{MAX_TASKS:,}: sweep fewer values or split it into several studies")
