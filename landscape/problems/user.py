"""User problems named like ``package.module:factory`` (as uvicorn names ``module:app``)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from .._errors import LandscapeError
from .module import from_module
from .problem import Problem


def load_user_problem(ref: str, **kwargs) -> Problem:
    """Import ``package.module:factory`` and call ``factory(**kwargs)``.

    The factory returns a :class:`Problem`, or a tuple ``(model, data, loss)`` (optionally
    ``(model, data, loss, test_data)``) turned into one by :func:`landscape.from_module`.
    The current directory is importable, so ``--problem mynet:build`` finds ``./mynet.py``.

    This runs the user's code by the user's explicit request only: a checkpoint naming a
    factory never triggers an import by itself (see :func:`landscape.load_checkpoint`).
    """
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise LandscapeError(f"--problem {ref!r} must look like package.module:factory")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise LandscapeError(f"cannot import {module_name!r} for --problem {ref}: {err}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise LandscapeError(f"{module_name!r} has no callable {attr!r} for --problem {ref}")
    made = factory(**kwargs)
    if isinstance(made, Problem):
        problem = made
    elif isinstance(made, tuple) and len(made) in (3, 4):
        problem = from_module(made[0], made[1], made[2], test_data=made[3] if len(made) == 4 else None)
    else:
        raise LandscapeError(f"{ref} returned {type(made).__name__}; return a Problem or (model, data, loss)")
    if problem.name == "module":  # not rebuildable from the registry: remember the factory instead
        problem.name = "user"
        problem.params = {"factory": ref, **problem.params, **kwargs}
    return problem
