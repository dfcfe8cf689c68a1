"""The embedded problems. ``PROBLEMS`` maps each name to its factory; keys equal function names."""

from __future__ import annotations

import inspect
import json

from .._errors import LandscapeError
from .._registry import Registry
from .params import check_params
from .problem import Problem
from .analytic import double_well, himmelblau, ring
from .convnets import digits_cnn, digits_resnet
from .networks import deep_linear, digits_mlp, exp_linear, moons_mlp, quadratic_regression, teacher_student
from .transformer import modadd_transformer
from .venturi import venturi_relu
from .user import load_user_problem

PROBLEMS = Registry("problem", (himmelblau, double_well, ring, quadratic_regression, digits_mlp, moons_mlp,
                                teacher_student, deep_linear, venturi_relu, exp_linear, digits_cnn, digits_resnet,
                                modadd_transformer),
                    word="parameter", hint="package.module:factory")

_BUILT: dict[str, Problem] = {}

#: The problem ``landscape`` runs when none is named.
DEFAULT_PROBLEM = "digits_mlp"


def make_problem(name: str, **params) -> Problem:
    """Build a registered problem, or a user one (``name`` of the form ``package.module:factory``).

    Raises
    ------
    LandscapeError
        For an unknown name or parameter, listing the valid ones.
    """
    if ":" in name:
        return load_user_problem(name, **params)
    factory = PROBLEMS.lookup(name)
    params = check_params(name, PROBLEMS.check_options(name, params), params)
    try:
        return factory(**params)
    except (TypeError, ValueError) as err:
        if isinstance(err, LandscapeError):
            raise
        raise LandscapeError(f"bad parameters for problem {name!r}: {err}") from None


def problem_from_spec(spec: dict, *, user: Problem | None = None) -> Problem:
    """Rebuild a problem from its ``spec``.

    A spec naming a user factory is never imported from here: the caller must pass the
    problem the user built (``user``), whose spec must match.
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("params"), dict):
        raise LandscapeError(f"malformed problem spec {spec!r}")
    if spec["name"] in PROBLEMS:
        key = json.dumps(spec, sort_keys=True)
        if key not in _BUILT:  # many checkpoints share a problem: build (and move its data) once
            _BUILT[key] = make_problem(spec["name"], **spec["params"])
        return _BUILT[key]
    if user is not None and user.spec == spec:
        return user
    if user is not None and user.name == spec["name"]:
        saved, given = spec["params"], user.spec["params"]
        differ = {k: (saved.get(k), given.get(k)) for k in sorted(set(saved) | set(given))
                  if saved.get(k) != given.get(k)}
        shown = ", ".join(f"{k}: file {a!r}, given {b!r}" for k, (a, b) in differ.items())
        raise LandscapeError(f"this file was made with other parameters of problem {spec['name']!r} ({shown}); "
                             "pass the file's values with -p key=value")
    if user is not None:
        raise LandscapeError(f"this file holds problem {spec['name']!r}, but --problem built {user.name!r}; "
                             "pass the factory the file was made with")
    if spec["name"] == "user":
        ref = spec["params"].get("factory", "?")
        raise LandscapeError(f"this file was made with the user problem {ref}; pass --problem {ref} to load it")
    raise LandscapeError(f"unknown problem {spec['name']!r} in the file; this version of landscape knows "
                         f"{sorted(PROBLEMS)}")


def describe_problem(name: str) -> dict:
    """Name, summary, parameters with defaults and the first docstring line of a registered problem."""
    factory = PROBLEMS[name]
    params = PROBLEMS.options(name)
    return {"name": name, "doc": inspect.getdoc(factory).splitlines()[0], "params": params}
